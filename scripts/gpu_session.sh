#!/usr/bin/env bash
# The prepared GPU check of issue #14, in two halves: `prepare` here (CPU, once), `device` on a lent GPU machine.
#
#   bash scripts/gpu_session.sh prepare DATA_DIR
#       Fills .gpu/ (git-ignored, about 30 MiB), all that the device machine lacks:
#       * wheels of the packages its image does not hold (vector-quantize-pytorch and its own needs);
#       * Beauty's P5 files (DATA_DIR/amazon2014-p5/beauty), as .gpu/data/amazon2014-p5/beauty;
#       * a cache with Beauty's MiniLM item vectors (the device machine has no MiniLM; the `auto` encoder reads
#         cached vectors without the model), made by a throw-away tiger run here (no recommender training, an
#         RQ-VAE of one step that is not kept, 10 test users).
#       RQ-VAE files that an earlier device session sent back (rqvae-*.pt: a checkpoint of the paper's
#       20,000-epoch fit; <key>.pt: the finished fit) go into .gpu/cache/checkpoints/ and .gpu/cache/rqvae/,
#       and are kept by a later prepare.
#
#   bash scripts/gpu_session.sh device [SECONDS]      (through the device tool: carry [".gpu"])
#       Within SECONDS (default 540) of wall time:
#       1. scripts/bench_training.py on CUDA with the paper's backbone and batch (t5-tiger, batch 256) as the
#          real shape, and the heaviest GPU kernels there (--top-ops 8): bench-training-gpu.md;
#       2. the same benchmark of TIGER alone with its training loss compiled (--compile, run.compile: true;
#          dynamo and inductor, one graph per loss, recorded as CUDA graphs), appended to bench-training-gpu.md,
#          once, when 240 s are left;
#       3. TIGER's full paper profile on Beauty (`run --identifiers tiger --datasets beauty --profile paper`):
#          its RQ-VAE (20,000 epochs; it keeps a checkpoint every 30 s) and then the T5 (an epoch checkpoint),
#          stopped with SIGTERM before the deadline.
#       Everything it writes, and its state, is under .gpu-state/ (git-ignored, left in place between calls
#       while the machine stays warm): a step already done is skipped, so calling it again at once resumes
#       TIGER where it stopped. Each call copies to $OUT a log, the benchmark report, the record (once TIGER
#       has finished) and the RQ-VAE's checkpoint or finished fit (about 9 MiB; the T5's epoch checkpoint holds
#       t5-tiger's 4.8 million weights four times, model, AdamW's two moments and the best epoch's weights, about
#       74 MiB, over the 16 MiB a returned file may have, so a cold machine restarts the T5 but not the RQ-VAE).
#       Put the reports and records under docs/reference/gpu/ and say there on what they ran.
#       A dry run on a CPU: GPU_SESSION_DEVICE=cpu GPU_SESSION_THREADS=1 OUT=/tmp/out (touch .gpu-state/bench.done
#       first to skip the benchmark).
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
    local budget=${1:-540}
    local deadline=$((SECONDS + budget))
    local state=.gpu-state device=${GPU_SESSION_DEVICE:-cuda} threads=${GPU_SESSION_THREADS:-8}
    [[ -d .gpu/whl && -d .gpu/cache ]] || { echo "gpu_session.sh: no .gpu/ (run prepare here, carry .gpu)" >&2; exit 2; }
    mkdir -p "$state/cache" "$OUT"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    cp -rn .gpu/cache/. "$state/cache/"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$state/log.txt"
    fi
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
        | tee -a "$state/log.txt"
    if [[ ! -f "$state/bench.done" ]]; then
        python3 scripts/bench_training.py --device "$device" --threads "$threads" --real-backbone t5-tiger --real-batch 256 \
            --top-ops 8 --title "H200, t5-tiger at batch 256" --output "$state/bench-training-gpu.md" 2>&1 \
            | tee -a "$state/log.txt"
        touch "$state/bench.done"
    fi
    if [[ ! -f "$state/bench-compile.done" ]] && ((deadline - SECONDS > 240)); then
        timeout --signal=TERM --kill-after=30 $((deadline - SECONDS - 60)) python3 scripts/bench_training.py \
            --device "$device" --threads "$threads" --schemes tiger --compile --rounds 1 --real-backbone t5-tiger \
            --real-batch 256 --title "H200, TIGER at t5-tiger and batch 256, training loss compiled" \
            --output "$state/bench-training-gpu.md" --append 2>&1 | tee -a "$state/log.txt" \
            || echo "gpu_session.sh: the compiled benchmark did not finish (it is not tried again)" | tee -a "$state/log.txt"
        touch "$state/bench-compile.done"
    fi
    local left=$((deadline - SECONDS - 20))
    local code=0
    if ((left > 60)); then
        timeout --signal=TERM --kill-after=30 "$left" python3 -m benchmark run --identifiers tiger --datasets beauty \
            --data-dir .gpu/data --profile paper --cache-dir "$state/cache" --results-dir "$state/results" \
            --device "$device" --threads "$threads" --no-progress 2>&1 | tee -a "$state/log.txt" || code=$?
    fi
    cp "$state/log.txt" "$OUT/"
    [[ -f "$state/bench-training-gpu.md" ]] && cp "$state/bench-training-gpu.md" "$OUT/"
    find "$state/results" -name '*.json' -exec cp {} "$OUT/" \; 2>/dev/null || true
    find "$state/cache/checkpoints" -name 'rqvae-*.pt' -exec cp {} "$OUT/" \; 2>/dev/null || true
    find "$state/cache/rqvae" -name '*.pt' -exec cp {} "$OUT/" \; 2>/dev/null || true
    echo "gpu_session.sh: TIGER exit code $code (0 = finished; 124 or 143 = stopped at the deadline: call again)"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    device) shift; device "$@" ;;
    *) echo "usage: gpu_session.sh prepare DATA_DIR | device [SECONDS]" >&2; exit 2 ;;
esac
