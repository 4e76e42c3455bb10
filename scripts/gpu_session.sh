#!/usr/bin/env bash
# The prepared GPU check of issue #14, in two halves: `prepare` here (CPU, once), `device` on a lent GPU machine.
#
#   bash scripts/gpu_session.sh prepare DATA_DIR
#       Fills .gpu/ (git-ignored, about 30 MiB, and 10 MiB per kept RQ-VAE file), all that the device machine lacks:
#       * wheels of the packages its image does not hold (vector-quantize-pytorch and its own needs);
#       * Beauty's P5 files (DATA_DIR/amazon2014-p5/beauty), as .gpu/data/amazon2014-p5/beauty;
#       * a cache with Beauty's MiniLM item vectors (the device machine has no MiniLM; the `auto` encoder reads
#         cached vectors without the model), made by a throw-away tiger run here (no recommender training, an
#         RQ-VAE of one step that is not kept, 10 test users).
#       RQ-VAE files that an earlier device session sent back (rqvae-*.pt: a checkpoint of the paper's
#       20,000-epoch fit; <key>.pt: the finished fit) go into .gpu/cache/checkpoints/ and .gpu/cache/rqvae/,
#       and are kept by a later prepare.
#
#   bash scripts/gpu_session.sh device [SECONDS] [STEPS]      (through the device tool: carry [".gpu"])
#       Within SECONDS (default 540) of wall time, the comma-separated STEPS in their order (default
#       bench-compile,rqvae,tiger):
#       bench          scripts/bench_training.py on CUDA with the paper's backbone and batch (t5-tiger, batch 256) as
#                      the real shape, and the heaviest GPU kernels there (--top-ops 8): bench-training-gpu.md;
#       bench-compile  the same benchmark with the training loss compiled (--compile, run.compile: true; dynamo
#                      and inductor, one graph per loss and shape, recorded as CUDA graphs), appended to it, of
#                      the schemes in GPU_SESSION_COMPILED (default tiger; about 4 minutes each, compilations);
#       rqvae          the RQ-VAE of TIGER's paper profile on Beauty (20,000 epochs), fitted compiled (run.compile:
#                      true: one graph per batch size, recorded as CUDA graphs) by a run that trains no T5
#                      (train.epochs 0, 10 test users; its record is thrown away): it keeps a checkpoint every
#                      30 s and the finished fit in the cache, under the key of a compiled fit;
#       tiger          TIGER's full paper profile on Beauty under run.compile: true (`run --identifiers tiger
#                      --datasets beauty --profile paper`): the cached RQ-VAE, or its fit, then the T5 (an epoch
#                      checkpoint), stopped with SIGTERM before the deadline.
#       A benchmark runs once; the RQ-VAE and TIGER steps end at the deadline and resume. Everything it writes,
#       and its state, is under .gpu-state/ (git-ignored, left in place between calls while the machine stays
#       warm): a step already done is skipped, so calling it again at once goes on where it stopped. Each call
#       copies to $OUT a log, the benchmark report, TIGER's record (once it has finished) and the RQ-VAE's
#       checkpoints and finished fits (about 9 MiB each; the T5's epoch checkpoint holds t5-tiger's 4.8 million
#       weights four times, model, AdamW's two moments and the best epoch's weights, about 74 MiB, over the
#       16 MiB a returned file may have, so a cold machine restarts the T5 but not the RQ-VAE).
#       Put the reports and records under docs/reference/gpu/ and say there on what they ran.
#       A dry run on a CPU: GPU_SESSION_DEVICE=cpu GPU_SESSION_THREADS=1 OUT=/tmp/out bash scripts/gpu_session.sh
#       device 120 rqvae
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    local data_dir=${1:?usage: gpu_session.sh prepare DATA_DIR}
    local beauty="$data_dir/amazon2014-p5/beauty"
    [[ -f "$beauty/user_sequence.txt" ]] || { echo "gpu_session.sh: no $beauty/user_sequence.txt" >&2; exit 2; }
    mkdir -p .gpu/data/amazon2014-p5 .gpu/whl .gpu/cache/checkpoints .gpu/cache/rqvae
    rm -rf .gpu/data/amazon2014-p5/beauty && cp -r "$beauty" .gpu/data/amazon2014-p5/beauty
    rm -f .gpu/whl/*.whl
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/whl vector-quantize-pytorch==1.32.0 einx==0.4.3 loguru==0.7.3 torch-einops-utils==0.2.0 frozendict
    local scratch
    scratch=$(mktemp -d)
    printf 'run: {max_eval_users: 10, max_fit_steps: 1}\ntrain: {epochs: 0}\n' >"$scratch/prepare.yaml"
    python -m benchmark run --identifiers tiger --datasets beauty --data-dir .gpu/data --profile paper \
        --config "$scratch/prepare.yaml" --cache-dir "$scratch/cache" --results-dir "$scratch/results" --no-progress
    rm -rf .gpu/cache/embeddings && cp -r "$scratch/cache/embeddings" .gpu/cache/
    rm -rf "$scratch"
    du -sh .gpu
}

device() {
    local budget=${1:-540} steps=${2:-bench-compile,rqvae,tiger}
    local deadline=$((SECONDS + budget))
    local state=.gpu-state device=${GPU_SESSION_DEVICE:-cuda} threads=${GPU_SESSION_THREADS:-8}
    local compiled=${GPU_SESSION_COMPILED:-tiger}
    [[ -d .gpu/whl && -d .gpu/cache ]] || { echo "gpu_session.sh: no .gpu/ (run prepare here, carry .gpu)" >&2; exit 2; }
    local step
    for step in ${steps//,/ }; do
        case $step in
            bench | bench-compile | rqvae | tiger) ;;
            *) echo "gpu_session.sh: unknown step '$step'; choose from bench, bench-compile, rqvae, tiger" >&2; exit 2 ;;
        esac
    done
    mkdir -p "$state/cache" "$OUT"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    cp -rn .gpu/cache/. "$state/cache/"
    printf 'run: {compile: true, max_eval_users: 10}\ntrain: {epochs: 0}\n' >"$state/rqvae.yaml"
    printf 'run: {compile: true}\n' >"$state/tiger.yaml"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$state/log.txt"
    fi
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
        | tee -a "$state/log.txt"
    local code=0 codes=""
    for step in ${steps//,/ }; do
        [[ -f "$state/$step.done" ]] && continue
        local left=$((deadline - SECONDS - 20))
        ((left > 60)) || break
        echo "gpu_session.sh: step $step, $left s left" | tee -a "$state/log.txt"
        code=0
        case $step in
            bench)
                timeout --signal=TERM --kill-after=30 "$left" python3 scripts/bench_training.py --device "$device" \
                    --threads "$threads" --real-backbone t5-tiger --real-batch 256 --top-ops 8 \
                    --title "H200, t5-tiger at batch 256" --output "$state/bench-training-gpu.md" --append ;;
            bench-compile)
                timeout --signal=TERM --kill-after=30 "$left" python3 scripts/bench_training.py --device "$device" \
                    --threads "$threads" --schemes "$compiled" --compile --rounds 1 --real-backbone t5-tiger \
                    --real-batch 256 --title "H200, $compiled at t5-tiger and batch 256, training loss compiled" \
                    --output "$state/bench-training-gpu.md" --append ;;
            rqvae | tiger)
                timeout --signal=TERM --kill-after=30 "$left" python3 -m benchmark run --identifiers tiger \
                    --datasets beauty --data-dir .gpu/data --profile paper --config "$state/$step.yaml" \
                    --cache-dir "$state/cache" --results-dir "$state/results-$step" --device "$device" \
                    --threads "$threads" --no-progress ;;
        esac 2>&1 | tee -a "$state/log.txt" || code=$?
        codes="$codes $step=$code"
        # a benchmark is not tried again; a fit or run stopped at the deadline resumes in the next call
        [[ $code == 0 || $step == bench* ]] && touch "$state/$step.done"
    done
    cp "$state/log.txt" "$OUT/"
    [[ -f "$state/bench-training-gpu.md" ]] && cp "$state/bench-training-gpu.md" "$OUT/"
    find "$state/results-tiger" -name '*.json' -exec cp {} "$OUT/" \; 2>/dev/null || true
    find "$state/cache/checkpoints" -name 'rqvae-*.pt' -exec cp {} "$OUT/" \; 2>/dev/null || true
    find "$state/cache/rqvae" -name '*.pt' -exec cp {} "$OUT/" \; 2>/dev/null || true
    echo "gpu_session.sh: exit codes:${codes:- none} (0 = finished; 124 or 143 = stopped at the deadline: call again)"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    device) shift; device "$@" ;;
    *) echo "usage: gpu_session.sh prepare DATA_DIR | device [SECONDS]" >&2; exit 2 ;;
esac
