"""Benchmark of one training step: the suite's training loop (the harness) against a bare PyTorch loop.

For TIGER (sequence paradigm), E4SRec (embedding), SETRec (set) and SASRec, on the ``synthetic`` dataset
(leave-one-out, ``--history`` items) with random identifiers (TIGER-style codes of ``--levels`` levels of
``--codebook`` tokens plus a de-duplication level; random CF and semantic vectors; one semantic token for
SETRec), it measures per optimiser step:

* **harness**: :func:`recommenders.trainer.fit` ended after ``--warmup`` + 2 x ``--steps`` batches (in one epoch
  where it has that many: ``train.max_batches``; SASRec's epoch at batch 256, 5 batches of windows, takes several,
  so its steps include epoch ends): what a step of a real run costs (batch building from NumPy, the step, loss
  bookkeeping, clipping), timed from the end of one optimiser step to the end of the next (a global optimiser
  step hook), so the one-off costs of a call (model set-up, the final validation, the best-weights copy) stay out;
* **bare**: the same model on the harness's batches (its first epoch's, again if it has fewer) already on the
  device, ``zero_grad, loss, backward, step`` with the harness's AdamW (:func:`recommenders.trainer.adamw`: fused
  on CUDA, ``foreach`` elsewhere; the harness's rate and no weight decay), the loss under the harness's autocast
  (``train.amp``: bf16 on CUDA, none on a CPU), and nothing else (no clipping, no loss read back): the floor, timed
  the same way.

The time of a step is the median over the timed steps, and of ``--rounds`` such measurements (alternating harness
and bare) the fastest: robust to other processes on a shared machine. On CUDA the hook synchronises before
reading the clock, so the host's work for a step never overlaps the device's work for the one before. The
**pipelined** time is that of as many further steps, the device synchronised only before the first and after the
last (their total over their number): the host queues a step while the device runs the one before, as in a run,
so on a GPU host work that the device's own time covers drops out (on a CPU, where nothing runs asynchronously,
the two differ only by the steps they time).

At two shapes: **proxy**, the launch-bound shape (t5-tiger's layers and heads, 4+4 layers of 6 heads, with
d_model 12, d_kv 2, FF 48, batch 4; SASRec: hidden 12, 2 blocks), where arithmetic is near zero and the time is
host work (what bounds a GPU step), and **real**, the quick profile's backbone and batch (t5-tiny, batch 256;
SASRec: its quick parameters, batch 256).

Operator calls and host-device syncs per step are counted at the proxy shape with a ``TorchDispatchMode``
(harness: a call of ``--warmup`` + 3 batches minus one of ``--warmup`` batches, over 3; so the loss read of
every 50th step is not in it). On CUDA, syncs are the warnings of
``torch.cuda.set_sync_debug_mode("warn")``. On CPU, where nothing synchronises, the counted operators are those
that make the host wait for the device on a GPU: ``aten::_local_scalar_dense`` (``.item()``, ``float()``,
``int()``, ``bool()`` of a tensor, ``if tensor:``), ``nonzero``, ``masked_select``, indexing or ``index_put`` with
a boolean mask, ``repeat_interleave`` with tensor repeats, ``unique``, outside ``optimizer.step`` (AdamW keeps
its step counts on the host, so their ``.item()`` does not synchronise on a GPU either); copies from the device to
the host and blocking copies from pageable host memory are not visible on CPU (``.numpy()`` is no operator) and
are not counted.
With ``--top-ops N`` it also profiles the harness at the real shape (``torch.profiler``, one more harness call
of as many steps as the timing) and lists each scheme's N operators of most self time with their share of the
profiled total: where a step's time goes once the harness is at the floor (on CPU, the arithmetic and dropout's
random numbers).
With ``--compile`` both loops run the training loss under ``torch.compile`` as ``run.compile: true`` does
(:func:`recommenders.trainer.compiled_loss`: one graph, the host-side sizes computed outside it; on CUDA
recorded as CUDA graphs where the model's step shapes take few values); each fresh model compiles again in its
warm-up steps (a minute or more per shape on a CPU), and operators and syncs are not counted (the compiled graph's
kernels are not dispatcher calls). With CUDA graphs, a step of a batch shape not seen before records a graph
first: at the proxy shape (batch 4) TIGER's input width changes from batch to batch, so its timed steps include
recordings; at batch 256 nearly every batch has the widest history.
With ``--dropout P`` every measured model trains at dropout rate P (the backbones' ``run.backbone_dropout``, SASRec's
``dropout``; SETRec's semantic encoder and E4SRec's adapter have none by default): ``--dropout 0`` times the step
without dropout's random numbers, its arithmetic alone, against a run without the option right before it.
The last line prints harness / bare per scheme. Example (CPU, a few minutes):

    python scripts/bench_training.py --output docs/reference/bench-training-cpu.md --title after
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _options  # noqa: E402
from bench_decoding import random_codes  # noqa: E402

from benchmark.batches import HistoryBatch, iterate  # noqa: E402
from benchmark.config import MAX_HISTORY, TrainConfig  # noqa: E402
from benchmark.data.registry import load_dataset  # noqa: E402
from benchmark.records import code_version, cpu_model  # noqa: E402
from benchmark.splits import Split, make_split  # noqa: E402
from recommenders import trainer  # noqa: E402
from recommenders.backbones import PRESETS, BackbonePreset, BackboneSpec  # noqa: E402
from recommenders.base import Recommender  # noqa: E402
from recommenders.contracts import ItemTokenSets, ItemVectors  # noqa: E402
from recommenders.embedding import EmbeddingRecommender  # noqa: E402
from recommenders.sasrec import SASRec, SASRecParams  # noqa: E402
from recommenders.sequence import GenerativeRecommender, SequenceOptions  # noqa: E402
from recommenders.set import SetOptions, SetRecommender  # noqa: E402

SCHEMES = ("tiger", "e4srec", "setrec", "sasrec")
PROXY = "bench-proxy"
PRESETS[PROXY] = BackbonePreset(PROXY, "t5", "t5-tiger's layers and heads at d_model 12 (launch-bound proxy)",
                                {**PRESETS["t5-tiger"].config, "d_model": 12, "d_kv": 2, "d_ff": 48})


@dataclass(frozen=True)
class Shape:
    """One measured shape: the backbone, SASRec's width and the batch size."""

    name: str
    backbone: BackboneSpec
    sasrec_hidden: int
    batch: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    count = _options.at_least(1)
    parser.add_argument("--schemes", type=_options.comma_list(_options.choice(SCHEMES)), default=",".join(SCHEMES),
                        help=f"comma-separated subset of {', '.join(SCHEMES)}")
    parser.add_argument("--real-backbone", type=_options.backbone, default="t5-tiny",
                        help="backbone of the real shape (quick: t5-tiny)")
    parser.add_argument("--real-batch", type=count, default=256, help="batch of the real shape (quick: 256)")
    parser.add_argument("--proxy-batch", type=count, default=4, help="batch of the launch-bound proxy shape")
    parser.add_argument("--history", type=_options.at_least(1, MAX_HISTORY), default=20,
                        help="most history items (run.max_history)")
    parser.add_argument("--levels", type=count, default=3, help="TIGER code levels before de-duplication")
    parser.add_argument("--codebook", type=count, default=256, help="tokens per TIGER code level")
    parser.add_argument("--dim", type=count, default=64, help="width of the random CF and semantic vectors")
    parser.add_argument("--steps", type=count, default=30,
                        help="timed steps at the proxy shape (and as many again, pipelined)")
    parser.add_argument("--real-steps", type=count, default=6,
                        help="timed steps at the real shape (and as many again, pipelined)")
    parser.add_argument("--warmup", type=count, default=3, help="untimed steps before the timed ones")
    parser.add_argument("--rounds", type=count, default=2, help="measurements of each time, alternating harness and "
                        "bare; the fastest counts")
    parser.add_argument("--device", type=_options.device, default="cpu",
                        help="auto, cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=count, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--top-ops", type=_options.at_least(0), default=0, help="also list each scheme's N operators "
                        "of most self time at the real shape (torch.profiler; 0 = off)")
    parser.add_argument("--compile", action="store_true", help="run the training loss under torch.compile in both "
                        "loops (run.compile: true); operators and syncs are then not counted")
    parser.add_argument("--dropout", type=_options.fraction, default=None, help="dropout rate of every measured "
                        "model (the backbones' run.backbone_dropout, SASRec's dropout; default: their own)")
    parser.add_argument("--seed", type=_options.seed, default=0)
    parser.add_argument("--title", default="", help="heading of this measurement in the Markdown output")
    parser.add_argument("--output", type=_options.output_file, default=None,
                        help="also write the Markdown report to this file (its folder is made when missing)")
    parser.add_argument("--append", action="store_true", help="append to --output instead of replacing it")
    args = parser.parse_args(argv)
    if args.append and args.output is None:
        parser.error("--append: only with --output (the file to append to)")
    return args


def build(scheme: str, shape: Shape, n_items: int, args: argparse.Namespace) -> Recommender:
    """A randomly initialised model of ``scheme`` at ``shape`` over random identifiers (same seed every call)."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if scheme == "sasrec":
        dropout = {} if args.dropout is None else {"dropout": args.dropout}
        return SASRec(n_items, args.history, SASRecParams(hidden=shape.sasrec_hidden, **dropout))
    if scheme == "tiger":
        codes = random_codes(n_items, args.levels, args.codebook, "level", rng)
        return GenerativeRecommender(codes, shape.backbone, args.history, SequenceOptions(user_tokens=2000))
    vectors = torch.as_tensor(rng.standard_normal((n_items, args.dim)), dtype=torch.float32)
    if scheme == "e4srec":
        return EmbeddingRecommender(ItemVectors(vectors), shape.backbone, args.history)
    semantic = torch.as_tensor(rng.standard_normal((n_items, args.dim)), dtype=torch.float32)
    return SetRecommender(ItemTokenSets(cf=vectors, semantic=semantic, n_semantic=1), shape.backbone, args.history,
                          SetOptions(semantic_layers=(64,)))


SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_dim",
            "unique_consecutive"}


class Counter(TorchDispatchMode):
    """Counts every operator call and the calls that synchronise on a GPU (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.syncs = 0
        self.in_optimizer = False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.ops += 1
        # AdamW's step counts live on the host, also on a GPU: their scalar reads in optimizer.step do not sync
        self.syncs += not self.in_optimizer and synchronises(func.overloadpacket.__name__, args, kwargs or {})
        return func(*args, **(kwargs or {}))


def synchronises(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether the operator ``name`` called on ``args`` makes the host wait for a GPU (see the module docstring)."""
    if name in SYNC_OPS:
        return True
    if name == "repeat_interleave":
        return isinstance(args[0], torch.Tensor) and args[0].dim() > 0 and kwargs.get("output_size") is None
    if name in ("index", "index_put", "index_put_", "_index_put_impl_") and len(args) > 1:
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ())
    return False


@contextlib.contextmanager
def counting(device: torch.device):
    """A :class:`Counter` over the block; on CUDA its ``syncs`` are the sync-debug warnings instead."""
    counter = Counter()
    hooks = [register_optimizer_step_pre_hook(lambda *_: setattr(counter, "in_optimizer", True)),
             register_optimizer_step_post_hook(lambda *_: setattr(counter, "in_optimizer", False))]
    try:
        if device.type != "cuda":
            with counter:
                yield counter
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with counter:
                    yield counter
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counter.syncs = sum("synchroniz" in str(w.message) for w in caught)
    finally:
        for hook in hooks:
            hook.remove()
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def step_clock(device: torch.device, synced: int, total: int):
    """The clock at the end of each of the first ``synced`` optimiser steps taken in the block and of step
    ``total``, the device synchronised first (a list filled as they happen): the steps between run without
    waiting for the device."""
    ends: list[float] = []
    taken = 0

    def record(*_: Any) -> None:
        nonlocal taken
        taken += 1
        if taken <= synced or taken == total:
            synchronize(device)
            ends.append(time.perf_counter())

    hook = register_optimizer_step_post_hook(record)
    try:
        yield ends
    finally:
        hook.remove()


def step_ms(warmup: int, steps: int) -> Callable[[Callable[[], None]], tuple[float, float]]:
    """A measure of a call of ``warmup`` + 2 x ``steps`` optimiser steps: the median milliseconds between the ends
    of successive steps among the ``steps`` after ``warmup`` (the device synchronised at each), and the
    milliseconds per step of the last ``steps`` (synchronised only at their ends: pipelined)."""
    def measure(call: Callable[[], None]) -> tuple[float, float]:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        with step_clock(device, warmup + steps, warmup + 2 * steps) as ends:
            call()
        synced = 1000.0 * float(np.median(np.diff(ends[warmup - 1:warmup + steps])))
        return synced, 1000.0 * (ends[-1] - ends[warmup + steps - 1]) / steps
    return measure


class Enough(Exception):
    """Raised after the optimiser step that completes what a measurement needs: it ends the training call there."""


def harness_run(scheme: str, shape: Shape, split: Split, steps: int, args: argparse.Namespace,
                measure: Callable[[Callable[[], None]], Any]) -> Any:
    """``measure`` of one :func:`trainer.fit` call on a fresh model, ended right after its ``steps``-th optimiser
    step: within its first epoch, or, where an epoch has fewer batches (SASRec's windows at batch 256: 5), over as
    many epochs as it takes, so the steps then include epoch ends (the loss read, a validation of one example)."""
    device = torch.device(args.device)
    model = build(scheme, shape, split.train.n_items, args)
    cfg = TrainConfig(epochs=steps, batch_size=shape.batch, lr=1e-3, weight_decay=0.0, grad_clip=1.0,
                      patience=steps + 1, valid_metric="ndcg@10", max_valid_examples=1, amp=True, max_batches=steps)
    taken = 0

    def count(*_: Any) -> None:
        nonlocal taken
        taken += 1
        if taken == steps:
            raise Enough

    def run() -> None:
        hook = register_optimizer_step_post_hook(count)
        try:
            trainer.fit(model, split.train, split.valid, split.warm, cfg, (10,), 1, device, args.seed,
                        progress=False, compiled=args.compile)
        except Enough:
            pass
        finally:
            hook.remove()
    return measure(run)


def bare_run(scheme: str, shape: Shape, split: Split, warmup: int, steps: int, args: argparse.Namespace,
             measure: Callable[[Callable[[], None]], Any]) -> Any:
    """``measure`` of ``steps`` bare steps, after ``warmup`` unmeasured ones, on the batches the harness takes
    (same seeded shuffle; an epoch of fewer batches is taken again), built on the device beforehand."""
    device = torch.device(args.device)
    model = build(scheme, shape, split.train.n_items, args).to(device)
    model.prepare(split.train)
    model.train()
    examples = model.training_examples(split.train)
    epoch = iterate(examples, shape.batch, device, np.random.default_rng(args.seed))
    batches = list(itertools.islice(itertools.cycle(epoch), warmup + steps))
    optimizer = trainer.adamw([p for p in model.parameters() if p.requires_grad], 1e-3, 0.0, device)
    loss_of = trainer.compiled_loss(model, device) if args.compile else model.loss

    def step(chosen: list[HistoryBatch]) -> None:
        for batch in chosen:
            optimizer.zero_grad(set_to_none=True)
            with trainer.autocast(device, True):  # the harness's train.amp: bf16 on CUDA, nothing on a CPU
                loss = loss_of(batch)
            loss.backward()
            optimizer.step()
        synchronize(device)

    step(batches[:warmup])
    return measure(lambda: step(batches[warmup:]))


def counts(device: torch.device) -> Callable[[Callable[[], None]], tuple[int, int]]:
    def measure(call: Callable[[], None]) -> tuple[int, int]:
        with counting(device) as counter:
            call()
        return counter.ops, counter.syncs
    return measure


def measure_scheme(scheme: str, split: Split, args: argparse.Namespace) -> dict[str, Any]:
    """Per-step milliseconds (proxy and real, harness and bare), operator calls and syncs (proxy)."""
    device = torch.device(args.device)
    proxy = Shape("proxy", BackboneSpec(PROXY, dropout=args.dropout), 12, args.proxy_batch)
    real = Shape("real", BackboneSpec(args.real_backbone, dropout=args.dropout), SASRecParams().hidden, args.real_batch)
    row: dict[str, Any] = {"scheme": scheme}
    for shape, steps in ((proxy, args.steps), (real, args.real_steps)):
        harness, bare = [], []
        for _ in range(args.rounds):
            measure = step_ms(args.warmup, steps)
            harness.append(harness_run(scheme, shape, split, args.warmup + 2 * steps, args, measure))
            bare.append(bare_run(scheme, shape, split, 0, args.warmup + 2 * steps, args, measure))
        for loop, times in (("harness", harness), ("bare", bare)):
            row[f"{shape.name}_{loop}_ms"] = min(synced for synced, _ in times)
            row[f"{shape.name}_{loop}_pipelined_ms"] = min(pipelined for _, pipelined in times)
    if args.top_ops:
        row["top_ops"] = top_operators(scheme, real, split, args)
    if args.compile:
        row["harness_ops"] = row["harness_syncs"] = row["bare_ops"] = row["bare_syncs"] = None
        return row
    counted = 3
    short = harness_run(scheme, proxy, split, args.warmup, args, counts(device))
    full = harness_run(scheme, proxy, split, args.warmup + counted, args, counts(device))
    row["harness_ops"], row["harness_syncs"] = ((b - a) / counted for a, b in zip(short, full))
    row["bare_ops"], row["bare_syncs"] = (value / counted for value in
                                          bare_run(scheme, proxy, split, args.warmup, counted, args, counts(device)))
    return row


def top_operators(scheme: str, real: Shape, split: Split, args: argparse.Namespace) -> list[tuple[str, float]]:
    """The ``--top-ops`` operators of most self time in one harness call at the real shape (``--warmup`` +
    ``--real-steps`` steps), each with its share of the self time of every profiled operator."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])

    def measure(call: Callable[[], None]) -> list[tuple[str, float]]:
        with profile(activities=activities) as profiler:
            call()
        events = [e for e in profiler.key_averages() if e.key.startswith("aten::")]
        attribute = "self_device_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
        total = sum(getattr(e, attribute) for e in events) or 1.0
        ranked = sorted(events, key=lambda e: getattr(e, attribute), reverse=True)[:args.top_ops]
        return [(e.key.removeprefix("aten::"), getattr(e, attribute) / total) for e in ranked]

    return harness_run(scheme, real, split, args.warmup + args.real_steps, args, measure)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    how = "sync-debug warnings" if args.device.startswith("cuda") else "sync-inducing operators on CPU, see the script"
    hardware = (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
                else f"CPU {cpu_model()}, {args.threads} torch thread(s)")
    title = f"## {args.title}\n\n" if args.title else ""
    lines = [f"{title}Generated by `python scripts/bench_training.py {' '.join(argv)}` at commit {code_version()} on "
             f"{hardware} ({platform.platform()}, torch {torch.__version__}) at "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; do not edit by hand.\n",
             f"Synthetic dataset (loo, history {args.history}); proxy: t5-tiger's layers and heads at d_model 12, "
             f"batch {args.proxy_batch}, {args.steps} timed steps; real: {args.real_backbone}, batch "
             f"{args.real_batch}, {args.real_steps} timed steps; {args.warmup} warm-up steps. "
             + ("Training loss under torch.compile in both loops (run.compile: true); operators and syncs not "
                "counted. " if args.compile else f"Operator calls and syncs per step at the proxy shape ({how}). ")
             + ("" if args.dropout is None else f"Every model at dropout rate {args.dropout:g}. ")
             + f"Times: the fastest of {args.rounds} medians over the timed steps, synchronised at each; pipelined: "
             f"the fastest of {args.rounds} means over as many further steps, synchronised at their ends only.\n",
             "| Scheme | proxy ms harness | proxy ms bare | real ms harness | real ms bare | pipelined: proxy ms "
             "harness | proxy ms bare | real ms harness | real ms bare | ops harness | ops bare | syncs harness "
             "| syncs bare |",
             "|---|" + "---:|" * 12]
    lines += [f"| {r['scheme']} | " + " | ".join(f"{r[f'{shape}_{loop}{kind}_ms']:.1f}" for kind in ("", "_pipelined")
                                                  for shape in ("proxy", "real") for loop in ("harness", "bare"))
              + f" | {shown(r['harness_ops'])} | {shown(r['bare_ops'])} | {shown(r['harness_syncs'], 1)} "
              f"| {shown(r['bare_syncs'], 1)} |" for r in rows]
    if args.top_ops:
        where = "GPU kernel" if args.device.startswith("cuda") else "CPU"
        lines += ["", f"Operators of most self {where} time at the real shape (harness, {args.warmup} + "
                  f"{args.real_steps} steps under torch.profiler), as shares of all aten operators' self time:", ""]
        lines += [f"* {r['scheme']}: " + ", ".join(f"{name} {100 * share:.0f}%" for name, share in r["top_ops"])
                  for r in rows]
    lines += ["", ratios(rows)]
    return "\n".join(lines) + "\n"


def shown(count: float | None, decimals: int = 0) -> str:
    """A per-step count as printed: ``n/a`` when it was not counted (``--compile``)."""
    return "n/a" if count is None else f"{count:.{decimals}f}"


def ratios(rows: list[dict[str, Any]]) -> str:
    """The last line: harness / bare per scheme at each shape, synchronised and pipelined."""
    def of(r: dict[str, Any], kind: str) -> str:
        return ", ".join(f"{r[f'{shape}_harness{kind}_ms'] / r[f'{shape}_bare{kind}_ms']:.2f}x"
                         for shape in ("proxy", "real"))
    return "harness / bare per step (proxy, real; pipelined proxy, real): " + "; ".join(
        f"{r['scheme']} {of(r, '')}; {of(r, '_pipelined')}" for r in rows)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    split = make_split(load_dataset("synthetic"), "loo", args.history)
    rows = []
    for scheme in args.schemes:
        rows.append(measure_scheme(scheme, split, args))
        r = rows[-1]
        print(f"{scheme:>7}: proxy {r['proxy_harness_ms']:.1f} / {r['proxy_bare_ms']:.1f} ms, real "
              f"{r['real_harness_ms']:.0f} / {r['real_bare_ms']:.0f} ms (harness / bare; pipelined "
              f"{r['proxy_harness_pipelined_ms']:.1f} / {r['proxy_bare_pipelined_ms']:.1f}, "
              f"{r['real_harness_pipelined_ms']:.0f} / {r['real_bare_pipelined_ms']:.0f}), ops "
              f"{shown(r['harness_ops'])} / {shown(r['bare_ops'])}, syncs {shown(r['harness_syncs'], 1)} / "
              f"{shown(r['bare_syncs'], 1)}", flush=True)
    text = report(rows, args, argv)
    if args.output:
        previous = args.output.read_text() + "\n" if args.append and args.output.is_file() else ""
        header = "" if previous else "# Training step: harness against a bare loop\n\n"
        args.output.write_text(previous + header + text)
    print(text.rstrip("\n"))


if __name__ == "__main__":
    main()
