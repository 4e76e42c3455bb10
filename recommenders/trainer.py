"""The one training loop: AdamW, bf16 autocast on GPU, validation-based early stopping, resumable.

After every ``train.eval_every``-th epoch and the last, the model is scored on (a fixed subset of) the validation
examples (:func:`selection_examples`; early stopping counts these validations); the best validated epoch's
weights are restored at the end. The state after each epoch is written atomically to ``checkpoint`` so a
killed run resumes from its last finished epoch, provided the model's buffers (item codes, tries, fixed
item inputs: what the identifiers made) have the same :func:`fingerprint`; a checkpoint of other
identifiers, e.g. from a re-fitted tokenizer that came out differently, is ignored and training starts over.
A checkpoint written when early stopping fired is marked finished: resuming from it trains no further.
The checkpoint also holds every generator state the next epoch draws from (:func:`generator_states`: torch on
the CPU and CUDA, NumPy's and Python's global generators, the batch-order generator), so a resumed run is the
uninterrupted run: same batches, same dropout, same curve and metrics. It holds only tensors, numbers, strings,
lists and dicts and is read with :func:`benchmark.safeio.safe_load` (``weights_only=True``): a file that does
not load so is reported and training starts over, nothing in it runs. Resuming, or ignoring a checkpoint, prints
one line naming the file. The components fitted before the recommender (:func:`train_epochs`) resume the same way
from a :class:`FitCheckpoint`.
A loss that is not finite stops training with :class:`DivergenceError`. The first step with a loss checks that a
model with LoRA adapters gave them a gradient (:func:`~recommenders.backbones.check_adapters_trained`).

The step does not wait for the device: the batch losses stay on it and are read (and checked for NaN/inf) every
:data:`CHECK_EVERY` steps and at the end of each epoch, so a diverged run stops at most that many steps later,
naming the first batch whose loss was not finite. The gradient clipping uses PyTorch's ``foreach`` implementation
and AdamW (:func:`adamw`) its fused kernel on CUDA and ``foreach`` elsewhere (fewer operator launches; on the CPU
the same values as the per-parameter loop, bit for bit).
``compiled=True`` runs the model's training loss under :func:`torch.compile` (:func:`compiled_loss`: one graph,
the sizes it needs from the host computed outside it).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from benchmark.batches import HistoryBatch, iterate
from benchmark.config import TrainConfig
from benchmark.evaluate import evaluate
from benchmark.hashing import content_key
from benchmark.safeio import safe_load, save_tensors
from benchmark.splits import Examples, TrainData
from recommenders import parallel
from recommenders.backbones import check_adapters_trained
from recommenders.base import Recommender


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the message names the model, the epoch and what to try."""


def check_finite(value: float, what: str, epoch: int, knob: str, batch: int | None = None) -> None:
    """Raise :class:`DivergenceError` when ``what``'s training loss of ``epoch`` (1-based; its mean, or that of
    ``batch`` when given) is NaN or infinite; ``knob`` names the setting to lower."""
    if not math.isfinite(value):
        at = f"in epoch {epoch}" if batch is None else f"at epoch {epoch}, batch {batch}"
        raise DivergenceError(f"{what}: the training loss is {value} {at}; it diverged: lower {knob}")


CHECK_EVERY = 50
"""Steps between reads of the training loss from the device (each is a host-device sync)."""


def check_losses(losses: torch.Tensor, what: str, epoch: int, knob: str) -> None:
    """:func:`check_finite` for the batch losses of ``epoch`` so far (one read from the device); names the first
    batch whose loss is NaN or infinite."""
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        check_finite(float(losses[first]), what, epoch, knob, batch=first + 1)


Batches = Callable[[], Iterable[tuple[int, Any]]]
"""A fresh pass over the training data: ``(rows, batch)`` pairs, ``rows`` weighting the batch's loss."""


@dataclass
class FitCheckpoint:
    """Where a component fit (:func:`train_epochs`) keeps its progress, so that a killed run resumes it: at
    ``path``, the weights of ``module``, the optimiser's state, every generator the next epoch draws from
    (:func:`generator_states`, with the fit's own batch-order ``generator``), the finished epochs' loss means and
    the seconds spent. Written atomically after an epoch once ``every_s`` seconds have passed since the last
    write, so a kill loses at most that much plus one epoch; a resumed fit is the uninterrupted fit, bit for bit.
    Its owner removes the file once the fitted component is saved (the path is named after the component's
    cache key, so a checkpoint never meets other settings or data)."""

    path: Path
    module: torch.nn.Module
    generator: torch.Generator | np.random.Generator
    every_s: float = 30.0


@dataclass
class FitEpochs:
    """What :func:`train_epochs` did: the per-epoch mean of every loss term (``history``, all epochs), the epochs
    taken from the checkpoint of an earlier, killed process (``resumed_from_epoch``; 0: all trained in this one)
    and the seconds those processes spent in the loop (``earlier_seconds``)."""

    history: list[dict[str, float]]
    resumed_from_epoch: int = 0
    earlier_seconds: float = 0.0


def train_epochs(optimizer: torch.optim.Optimizer, epochs: int, batches: Batches,
                 loss_terms: Callable[[Any], dict[str, torch.Tensor]], what: str, knob: str, progress: bool,
                 clip: tuple[float, Iterable[torch.nn.Parameter]] | None = None,
                 max_steps: int = 0, checkpoint: FitCheckpoint | None = None) -> FitEpochs:
    """The epoch loop of every component trained before the recommender (RQ-VAE, MQ-Tokenizer, LightGCN, STORE's
    tokenizer, IDGenRec's ID generator): for each epoch, one step per batch on the sum of ``loss_terms(batch)``
    (gradient norm clipped to ``clip[0]`` over ``clip[1]`` when given), a progress bar named ``what``, and the
    row-weighted mean of every term; a non-finite epoch loss raises :class:`DivergenceError` naming ``knob``.
    ``max_steps > 0`` (``run.max_fit_steps``) stops after that many steps in all epochs together: the epoch in
    progress ends there (its means cover the batches it ran) and no later epoch starts. With ``checkpoint``, the
    fit resumes from the one an earlier process left (one printed line says so) and keeps its own."""
    history: list[dict[str, float]] = []
    steps, earlier = 0, 0.0
    state = read_fit_checkpoint(checkpoint, optimizer, what) if checkpoint is not None else None
    if state is not None:
        checkpoint.module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        restore_generators(state["generators"], checkpoint.generator)
        history, steps, earlier = state["history"], state["steps"], state["seconds"]
        tqdm.write(f"{what}: resuming from checkpoint {checkpoint.path} after epoch {len(history)} of {epochs}")
    resumed = len(history)
    began = saved = time.perf_counter()
    bar = tqdm(range(resumed, epochs), desc=what, disable=not progress, leave=False, initial=resumed, total=epochs)
    for epoch in bar:
        if 0 < max_steps <= steps:
            break
        names: list[str] = []
        totals: torch.Tensor | float = 0.0
        rows = 0
        for size, batch in batches():
            if 0 < max_steps <= steps:
                break
            steps += 1
            terms = loss_terms(batch)
            names, values = list(terms), torch.stack(list(terms.values()))
            optimizer.zero_grad(set_to_none=True)
            values.sum().backward()
            if clip is not None and clip[0] > 0:
                torch.nn.utils.clip_grad_norm_(clip[1], clip[0], foreach=True)
            optimizer.step()
            totals = totals + values.detach().double() * size  # float64 on the device: the sums a host float makes
            rows += size
        means = totals.tolist() if isinstance(totals, torch.Tensor) else []
        history.append({name: value / max(1, rows) for name, value in zip(names, means)})
        total = sum(history[-1].values())
        check_finite(total, what, epoch + 1, knob)
        bar.set_postfix(loss=f"{total:.4f}")
        now = time.perf_counter()
        if checkpoint is not None and now - saved >= checkpoint.every_s and parallel.is_main():
            save_tensors(checkpoint.path, {"module": checkpoint.module.state_dict(),
                                           "optimizer": optimizer.state_dict(),
                                           "generators": generator_states(checkpoint.generator), "history": history,
                                           "steps": steps, "seconds": earlier + now - began})
            saved = now
    return FitEpochs(history, resumed, earlier)


FIT_CHECKPOINT_KEYS = frozenset({"module", "optimizer", "generators", "history", "steps", "seconds"})


def read_fit_checkpoint(checkpoint: FitCheckpoint, optimizer: torch.optim.Optimizer,
                        what: str) -> dict[str, Any] | None:
    """The state in ``checkpoint.path`` (loaded with ``weights_only=True``), or None when there is none or it does
    not fit ``checkpoint.module`` and ``optimizer`` (other names or shapes, e.g. from an older version); an
    unusable one is named with the reason in one printed line and the fit starts over."""
    if not checkpoint.path.is_file():
        return None
    state = safe_load(checkpoint.path)
    own = checkpoint.module.state_dict()
    if state is None:
        reason = "cannot be read (truncated, or not a checkpoint)"
    elif FIT_CHECKPOINT_KEYS - set(state):
        reason = f"lacks {', '.join(sorted(FIT_CHECKPOINT_KEYS - set(state)))}"
    elif set(state["module"]) != set(own) or any(state["module"][k].shape != v.shape for k, v in own.items()):
        reason = "holds weights of another shape"
    elif len(state["optimizer"]["param_groups"]) != len(optimizer.param_groups):
        reason = "holds another optimiser"
    else:
        return state
    tqdm.write(f"{what}: checkpoint {checkpoint.path} {reason}; fitting from the start")
    return None


@dataclass
class TrainReport:
    """What training did: epochs run, the selected epoch and its validation value, the curve, seconds.

    ``resumed_from_epoch`` is the number of epochs taken from the checkpoint of an earlier, killed process (0:
    all trained in this one); ``seconds`` and ``curve`` include those epochs. A ``curve`` entry of an epoch that
    was not validated (``train.eval_every``) has no validation value.
    """

    epochs_run: int = 0
    best_epoch: int = -1
    best_valid: float = float("-inf")
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled, a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def adamw(parameters: list[torch.nn.Parameter], lr: float, weight_decay: float,
          device: torch.device) -> torch.optim.AdamW:
    """The trainer's AdamW: PyTorch's fused kernel on CUDA (a few launches a step for all weights, where the
    ``foreach`` form launches several per operation and a small model's step is bound by launches; values equal up
    to float rounding), the ``foreach`` form elsewhere (on the CPU the per-parameter loop's values bit for bit, so
    CPU records do not move)."""
    implementation = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, **implementation)


def compile_step(fn: Callable[..., Any], device: torch.device, cuda_graphs: bool,
                 dynamic: bool | None = None) -> Callable[..., Any]:
    """``fn``, a training step's forward pass (the backward pass through its outputs is compiled with it), under
    :func:`torch.compile`; ``dynamic`` as :func:`torch.compile` takes it (False: one graph per input shape).
    Inductor draws random numbers (dropout) through PyTorch's generator (``fallback_random``), as eager code does,
    so a compiled step gives the eager one's values up to float rounding, not other dropout masks. Compiled code of
    earlier steps is dropped first (``torch._dynamo.reset``): graphs kept for models that are gone would count
    against dynamo's recompile limit, past which it silently runs ``fn`` eagerly.

    With ``cuda_graphs`` on CUDA, the compiled forward and backward graphs are also recorded as CUDA graphs
    (inductor's ``triton.cudagraphs``, what ``mode="reduce-overhead"`` sets; one recording per input shape,
    replayed with one launch), since a small model's step is bound by kernel launches there; each call marks the
    start of a new step (``torch.compiler.cudagraph_mark_step_begin``), so the outputs of the call before are
    overwritten: the caller reads them (into new tensors) before the next call. Only for steps whose shapes take
    few values: each new shape is recorded anew and the recordings hold GPU memory."""
    torch._dynamo.reset()
    graphs = cuda_graphs and device.type == "cuda"
    options = {"fallback_random": True, **({"triton.cudagraphs": True} if graphs else {})}
    inner = torch.compile(fn, options=options, dynamic=dynamic)
    if not graphs:
        return inner

    def step(*args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        return inner(*args, **kwargs)
    return step


def compiled_loss(model: Recommender, device: torch.device) -> Callable[[HistoryBatch], torch.Tensor]:
    """``model.loss`` under :func:`compile_step`, given each batch with its host-side sizes filled in
    (:meth:`~recommenders.base.Recommender.compiled_sizes`, computed here, outside the graph: widths rounded up to
    few values), so that nothing in the loss reads the host and the forward and backward pass each compile to one
    graph per shape (the schemes of one paradigm share their ``loss`` code, hence :func:`compile_step`'s reset).
    On CUDA recorded as CUDA graphs; the trainer reads each step's loss into its loss buffer before the next
    step."""
    inner = compile_step(model.loss, device, cuda_graphs=True)
    return lambda batch: inner(replace(batch, sizes=model.compiled_sizes(batch)))


def fit(model: Recommender, data: TrainData, valid: Examples, warm: np.ndarray, cfg: TrainConfig,
        ks: tuple[int, ...], eval_batch_size: int, device: torch.device, seed: int, progress: bool = True,
        checkpoint: Path | None = None, desc: str = "train",
        on_epoch: Callable[[int, float], None] | None = None, compiled: bool = False) -> TrainReport:
    """Train ``model`` on ``data`` with early stopping on ``cfg.valid_metric`` over ``valid``.

    ``on_epoch(epoch, value)`` is called after every validated epoch (1-based) with its validation value, e.g. to
    prune a tuning trial; an exception it raises stops training and propagates. ``compiled``: the training loss
    runs under :func:`torch.compile` (``run.compile``)."""
    report = TrainReport()
    model.to(device)
    model.prepare(data)
    if not model.trainable or cfg.epochs <= 0:
        return report
    valid = selection_examples(valid, cfg, seed)
    metric_k = cfg.valid_k
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(trainable, cfg.lr, cfg.weight_decay, device)
    loss_of = compiled_loss(model, device) if compiled else model.loss
    best_state, bad, start_epoch, finished, unchecked = None, 0, 0, False, True
    identity = fingerprint(model)
    order = np.random.default_rng(seed)
    state = read_checkpoint(checkpoint, identity, desc) if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best_state, bad, start_epoch = state["best_state"], state["bad"], state["epoch"] + 1
        report, finished = TrainReport(**state["report"]), state["finished"]
        report.resumed_from_epoch = start_epoch
        restore_generators(state["generators"], order)
        tqdm.write(f"{desc}: resuming from checkpoint {checkpoint} after epoch {start_epoch} of {cfg.epochs}"
                   + (" (early stopping had fired: no further training)" if finished else ""))
    start = time.perf_counter() - report.seconds
    last_epoch = start_epoch if finished else cfg.epochs  # an early-stopped checkpoint has nothing left to train
    knob = f"train.lr (now {cfg.lr:g})" + ("" if cfg.grad_clip > 0 else " or set train.grad_clip > 0")
    for epoch in range(start_epoch, last_epoch):
        model.train()
        examples = model.training_examples(data)
        total = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
        total = min(total, cfg.max_batches) if cfg.max_batches > 0 else total
        losses = torch.zeros(total, dtype=torch.float64, device=device)  # each batch's loss, read every CHECK_EVERY
        steps = 0
        bar = tqdm(iterate(examples, cfg.batch_size, device, order, cfg.bucketing), total=total, disable=not progress,
                   desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for batch in bar:
            if steps == total:  # train.max_batches: the rest of this epoch's shuffle is skipped
                break
            part = parallel.shard(batch)
            optimizer.zero_grad(set_to_none=True)
            loss = None
            if len(part.targets):
                with autocast(device, cfg.amp):
                    loss = loss_of(part)
                loss.backward()
                if unchecked:  # the first step with a loss: LoRA adapters that get no gradient train nothing
                    check_adapters_trained(model)
                    unchecked = False
            losses[steps] = parallel.average(loss, len(part.targets), len(batch.targets), trainable)
            steps += 1
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
            optimizer.step()
            if steps % CHECK_EVERY == 0:
                check_losses(losses[:steps], desc, epoch + 1, knob)
                bar.set_postfix(loss=f"{float(losses[steps - CHECK_EVERY:steps].mean()):.4f}")
        losses = losses[:steps].cpu().numpy()
        check_losses(torch.from_numpy(losses), desc, epoch + 1, knob)
        value = None
        if validates(epoch + 1, cfg):
            result = evaluate(model, valid, warm, (metric_k,), eval_batch_size, device)
            value = result.value(cfg.valid_metric)
        report.curve.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if steps else 0.0,
                             **({} if value is None else {cfg.valid_metric: value})})
        report.epochs_run = epoch + 1
        if value is not None and value > report.best_valid:
            report.best_valid, report.best_epoch, bad = value, epoch + 1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif value is not None:
            bad += 1
        report.seconds = time.perf_counter() - start
        scored = "not validated" if value is None else (
            f"valid {cfg.valid_metric} {value:.4f} (best {report.best_valid:.4f} @ {report.best_epoch})")
        tqdm.write(f"{desc} epoch {epoch + 1}: loss {report.curve[-1]['loss']:.4f} {scored}, {report.seconds:.0f} s")
        finished = bad >= cfg.patience
        if checkpoint is not None and parallel.is_main():
            save_tensors(checkpoint, {"fingerprint": identity, "model": model.state_dict(),
                                      "optimizer": optimizer.state_dict(), "best_state": best_state, "bad": bad,
                                      "epoch": epoch, "finished": finished, "report": asdict(report),
                                      "generators": generator_states(order)})
        if on_epoch is not None and value is not None:
            on_epoch(epoch + 1, value)
        if finished:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    report.seconds = time.perf_counter() - start
    return report


def validates(epoch: int, cfg: TrainConfig) -> bool:
    """Whether epoch ``epoch`` (1-based) is validated: every ``cfg.eval_every``-th and the last, ``cfg.epochs``."""
    return epoch % cfg.eval_every == 0 or epoch == cfg.epochs


def selection_examples(valid: Examples, cfg: TrainConfig, seed: int) -> Examples:
    """The validation examples that select the model (early stopping, checkpoint and a model's own validation-only
    choices): every example of a fixed random subset of ``cfg.valid_users`` users (all when 0), then at most
    ``cfg.max_valid_examples`` of those (a fixed random subset; all when 0), both drawn with ``seed``."""
    return valid.of_users(cfg.valid_users, seed).subset(cfg.max_valid_examples, seed)


def fingerprint(model: torch.nn.Module) -> str:
    """A hash of every buffer of ``model`` (persistent or not), i.e. of the identifiers it was built on."""
    buffers = sorted(model.named_buffers(), key=lambda item: item[0])
    return content_key([name for name, _ in buffers], [buffer for _, buffer in buffers], length=64)


CHECKPOINT_KEYS = frozenset({"fingerprint", "model", "optimizer", "best_state", "bad", "epoch", "finished", "report",
                             "generators"})


def read_checkpoint(path: Path, identity: str, desc: str) -> dict[str, Any] | None:
    """The epoch checkpoint at ``path`` (loaded with ``weights_only=True``, on the CPU), or None when there is
    none or it cannot be used; an unusable one is named with the reason in one printed line."""
    if not path.is_file():
        return None
    state = safe_load(path)
    if state is None:
        reason = "cannot be read (truncated, or not a checkpoint)"
    else:
        missing = CHECKPOINT_KEYS - set(state)
        if missing:
            reason = f"lacks {', '.join(sorted(missing))} (written by an older version)"
        elif state["fingerprint"] != identity:
            reason = "belongs to other identifiers"
        else:
            return state
    tqdm.write(f"{desc}: checkpoint {path} {reason}; training from the start")
    return None


def generator_states(order: np.random.Generator | torch.Generator) -> dict[str, Any]:
    """Every generator state the next epoch draws from, as tensors, numbers, strings, lists and dicts only (so
    the checkpoint loads with ``weights_only=True``): torch's CPU generator, each CUDA device's, NumPy's global
    generator as ``[kind, keys, position, has_gauss, cached_gaussian]``, Python's ``random`` as
    ``[version, internal state, gauss_next]`` and the batch-order generator ``order``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss),
                      float(cached)],
            "python": [version, list(internal), gauss_next],
            "batch_order": order.get_state() if isinstance(order, torch.Generator) else order.bit_generator.state}


def restore_generators(states: dict[str, Any], order: np.random.Generator | torch.Generator) -> None:
    """Put the generators saved by :func:`generator_states` back (CUDA devices this machine has)."""
    torch.set_rng_state(states["torch"])
    for index, cuda_state in enumerate(states["cuda"][:torch.cuda.device_count()]):
        torch.cuda.set_rng_state(cuda_state, index)
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if isinstance(order, torch.Generator):
        order.set_state(states["batch_order"])
    else:
        order.bit_generator.state = states["batch_order"]

