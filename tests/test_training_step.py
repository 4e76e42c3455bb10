"""The training step without host-device syncs: what it may not call, what it must compute as before."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmark.batches import HistoryBatch
from benchmark.config import ConfigError, resolve
from benchmark.data.dataset import Dataset
from benchmark.splits import PAD, Examples, make_split
from identifiers.registry import get_scheme
from recommenders import trainer
from recommenders.backbones import build_backbone, padding_mask_4d
from recommenders.base import REAL_BUCKET, masked_mean
from recommenders.contracts import ItemCodes, ItemTokenSets, ItemVectors
from recommenders.embedding import EmbeddingRecommender
from recommenders.sasrec import SASRec, SASRecParams
from recommenders.sequence import SPAN_BUCKET, GenerativeRecommender
from recommenders.set import SetOptions, SetRecommender

pytestmark = pytest.mark.usefixtures("single_thread")

N_ITEMS = 30
SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2"}


class SyncCounter(TorchDispatchMode):
    """Names of the operators called that make the host wait for a GPU (scalar reads, nonzero, boolean indexing)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = func.overloadpacket.__name__
        boolean_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ())
        if name in SYNCING or boolean_index:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _examples(rng: np.random.Generator, n: int = 8, width: int = 5) -> Examples:
    lengths = rng.integers(1, width + 1, size=n)
    histories = rng.integers(0, N_ITEMS, size=(n, width))
    histories[np.arange(width)[None, :] < (width - lengths)[:, None]] = PAD
    return Examples(np.arange(n), histories, rng.integers(0, N_ITEMS, size=n))


def _models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    codes = torch.as_tensor(np.stack([rng.integers(0, 4, N_ITEMS), 4 + rng.integers(0, 4, N_ITEMS),
                                      8 + np.arange(N_ITEMS)], axis=1))
    tiger = GenerativeRecommender(ItemCodes(codes=codes, vocab_size=8 + N_ITEMS, level_sizes=[4, 4, N_ITEMS]),
                                  "t5-tiny", 5)
    tokens = ItemTokenSets(cf=torch.randn(N_ITEMS, 8), semantic=torch.randn(N_ITEMS, 12), n_semantic=1)
    setrec = SetRecommender(tokens, "t5-tiny", 5, SetOptions(semantic_layers=(16,)))
    e4srec = EmbeddingRecommender(ItemVectors(torch.randn(N_ITEMS, 8)), "t5-tiny", 5)
    return {"tiger": tiger, "setrec": setrec, "sasrec": SASRec(N_ITEMS, 5, SASRecParams(hidden=16, layers=1)),
            "e4srec": e4srec}


@pytest.mark.parametrize("name", ["tiger", "setrec", "sasrec"])
def test_a_training_step_on_a_batch_from_examples_never_waits_for_the_device(name: str) -> None:
    model = _models()[name].train()
    batch = HistoryBatch.from_examples(_examples(np.random.default_rng(1)), np.arange(8), "cpu")
    with SyncCounter() as counter:
        model.loss(batch).backward()
    assert counter.calls == []


@pytest.mark.parametrize("name", ["tiger", "setrec", "sasrec"])
def test_the_host_side_shapes_give_the_loss_and_gradients_of_the_device_side_ones(name: str) -> None:
    """With ``histories`` the batch's shape is read on the host; without, from the device, as before: same bits."""
    losses, grads = [], []
    for keep_host in (True, False):
        model = _models()[name].train()
        batch = HistoryBatch.from_examples(_examples(np.random.default_rng(2)), np.arange(8), "cpu")
        if not keep_host:
            batch.histories = None
        torch.manual_seed(3)
        loss = model.loss(batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.equal(losses[0], losses[1]) and torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("name", ["tiger", "setrec", "sasrec", "e4srec"])
def test_the_training_loss_traces_to_one_graph_given_its_host_sizes(name: str) -> None:
    """What ``run.compile`` compiles (:func:`trainer.compiled_loss`): the loss of a batch that carries its host
    sizes, traced by dynamo (no compilation) without a graph break; the sizes do not change the loss."""
    model = _models()[name].train()
    batch = HistoryBatch.from_examples(_examples(np.random.default_rng(4)), np.arange(8), "cpu")
    sized = replace(batch, sizes=model.host_sizes(batch))
    explained = torch._dynamo.explain(model.loss)(sized)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    losses = []
    for chosen in (batch, sized):
        torch.manual_seed(5)
        losses.append(model.loss(chosen).detach())
    assert torch.equal(losses[0], losses[1])


@pytest.mark.parametrize("name", ["tiger", "setrec", "sasrec"])
def test_a_compiled_loss_sees_few_shapes_that_give_the_exact_shapes_loss(name: str) -> None:
    """:meth:`Recommender.compiled_sizes` rounds the sizes that set a shape up (TIGER's encoder width to a multiple
    of ``SPAN_BUCKET``, SETRec's and SASRec's count of real positions to one of ``REAL_BUCKET``, at most every
    position): the padding is masked, so loss and gradients are the exact sizes' up to float rounding (no dropout
    here, whose masks would be drawn for another shape); the loss still traces to one graph."""
    model = _models()[name].eval()
    seen, shapes = set(), set()
    for seed in range(6):
        batch = HistoryBatch.from_examples(_examples(np.random.default_rng(seed)), np.arange(2), "cpu")
        exact, rounded = model.host_sizes(batch), model.compiled_sizes(batch)
        if name == "tiger":
            widest = model.max_history * model.history_tokens.shape[1] + 1
            assert exact["span"] <= rounded["span"] and rounded["span"] in (SPAN_BUCKET, widest)
        else:
            assert exact["real"] <= rounded["padded_real"] == min(REAL_BUCKET, batch.mask.numel())
        seen.add(tuple(exact.values()))
        shapes.add(tuple(rounded.values()))
        results = []
        for sizes in (exact, rounded):
            model.zero_grad(set_to_none=True)
            loss = model.loss(replace(batch, sizes=sizes))
            loss.backward()
            results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()
                                                      if p.grad is not None])))
        assert torch.allclose(results[0][0], results[1][0], rtol=1e-5)
        assert torch.allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)
    assert len(shapes) == 1 and len(seen) > 1
    explained = torch._dynamo.explain(model.loss)(replace(batch, sizes=model.compiled_sizes(batch)))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_masked_mean_is_the_mean_of_the_kept_entries() -> None:
    values = torch.tensor([1.0, 2.0, 30.0, 4.0])
    assert masked_mean(values, torch.tensor([True, True, False, True])) == pytest.approx(7 / 3)
    assert torch.equal(masked_mean(values, None), values.mean())


def test_run_compile_is_refused_for_a_scheme_whose_loss_cannot_be_one_graph() -> None:
    store = get_scheme("store")
    assert store.not_compilable and not get_scheme("tiger").not_compilable
    with pytest.raises(ConfigError, match=r"run.compile: true is not supported by store: .*run.compile: false"):
        resolve("synthetic", store, 0, "smoke", {"run": {"compile": True}})


def test_a_4d_padding_mask_gives_a_t5_the_bits_of_its_own_2d_mask() -> None:
    torch.manual_seed(0)
    model = build_backbone("t5-tiny", new_tokens=20).eval()
    ids = torch.randint(2, 22, (4, 7))
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[3, 2:] = 0
    labels = torch.randint(2, 22, (4, 3))
    for rows in (slice(0, 4), slice(0, 1)):  # with padding, and without any (transformers then skips the mask)
        two_d = model(input_ids=ids[rows], attention_mask=mask[rows], labels=labels[rows]).logits
        four_d = model(input_ids=ids[rows], attention_mask=padding_mask_4d(mask[rows], torch.float32),
                       labels=labels[rows]).logits
        assert torch.equal(two_d, four_d)


def test_setrec_reuses_its_item_tokens_at_inference_only_while_their_weights_are_unchanged() -> None:
    model = _models()["setrec"].eval()
    with torch.no_grad():
        first = model.item_tokens()[0]
        assert model.item_tokens()[0] is first
        model.cf_proj.weight.add_(1.0)
        second = model.item_tokens()[0]
    assert second is not first and not torch.equal(second, first)
    assert torch.equal(second, model.compute_item_tokens()[0].detach())


def test_the_trainers_adamw_is_fused_on_cuda_and_foreach_elsewhere() -> None:
    """Fused: a few launches a step on a GPU; foreach on the CPU, whose values are the per-parameter loop's."""
    weights = [torch.nn.Parameter(torch.randn(3))]
    assert trainer.adamw(weights, 1e-3, 0.0, torch.device("cuda")).defaults["fused"] is True
    cpu = trainer.adamw(weights, 1e-3, 0.5, torch.device("cpu")).defaults
    assert cpu["foreach"] is True and not cpu["fused"] and cpu["weight_decay"] == 0.5


def test_a_non_finite_loss_is_reported_at_its_batch_after_the_steps_that_followed(small_synthetic: Dataset,
                                                                                  monkeypatch) -> None:
    split = make_split(small_synthetic, "loo", 10)
    cfg = resolve("synthetic", get_scheme("sasrec"), 0, "smoke").train
    model = SASRec(split.train.n_items, 10, SASRecParams(hidden=16, layers=1))
    calls = []

    def loss(batch: HistoryBatch) -> torch.Tensor:
        calls.append(len(batch.targets))
        value = model.item_emb.weight.sum() * 0.0
        return value + (float("inf") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(model, "loss", loss)
    monkeypatch.setattr(trainer, "CHECK_EVERY", 2)
    cfg = type(cfg)(**{**cfg.__dict__, "batch_size": 8, "max_batches": 6})
    with pytest.raises(trainer.DivergenceError, match=r"the training loss is inf at epoch 1, batch 3;"):
        trainer.fit(model, split.train, split.valid, split.warm, cfg, (10,), 256, torch.device("cpu"), 0,
                    progress=False, desc="sasrec")
    assert len(calls) == 4  # found at the read after step 4, not at step 3


@pytest.mark.skipif(os.environ.get("BENCHMARK_TEST_COMPILE") != "1",
                    reason="torch.compile takes minutes on a busy 2-core CPU; set BENCHMARK_TEST_COMPILE=1")
def test_a_compiled_training_loss_trains_sasrec_end_to_end(small_synthetic: Dataset) -> None:
    """With dropout: the compiled loss draws the eager loss's masks (inductor's ``fallback_random``)."""
    split = make_split(small_synthetic, "loo", 10)
    cfg = resolve("synthetic", get_scheme("sasrec"), 0, "smoke").train
    cfg = type(cfg)(**{**cfg.__dict__, "epochs": 1, "max_batches": 3})
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = SASRec(split.train.n_items, 10, SASRecParams(hidden=16, layers=1, dropout=0.3))
        report = trainer.fit(model, split.train, split.valid, split.warm, cfg, (10,), 256, torch.device("cpu"), 0,
                             progress=False, compiled=compiled)
        results.append(report.curve[0]["loss"])
    assert results[1] == pytest.approx(results[0], rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_compiled_training_loss_trains_tiger_through_cuda_graphs(small_synthetic: Dataset) -> None:
    """On CUDA ``run.compile`` records the loss as CUDA graphs: two epochs (a recording per batch shape, then
    replays, the trainer reading every step's loss) train to the eager loop's curve up to bf16 rounding (no
    dropout, whose masks a replayed graph need not draw as the eager loop does)."""
    split = make_split(small_synthetic, "loo", 5)
    cfg = resolve("synthetic", get_scheme("tiger"), 0, "smoke").train
    cfg = type(cfg)(**{**cfg.__dict__, "epochs": 2, "max_batches": 4, "batch_size": 8})
    curves = []
    n = split.train.n_items
    for compiled in (False, True):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        codes = torch.as_tensor(np.stack([rng.integers(0, 8, n), 8 + rng.integers(0, 8, n), 16 + np.arange(n)], 1))
        model = GenerativeRecommender(ItemCodes(codes=codes, vocab_size=16 + n, level_sizes=[8, 8, n]), "t5-tiny", 5)
        for module in model.modules():  # no dropout: the two loops' curves differ by rounding alone
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            elif isinstance(getattr(module, "dropout", None), float):  # T5's attention-weight dropout rate
                module.dropout = 0.0
        report = trainer.fit(model, split.train, split.valid, split.warm, cfg, (10,), 256, torch.device("cuda"), 0,
                             progress=False, compiled=compiled)
        curves.append([point["loss"] for point in report.curve])
    assert len(curves[1]) == 2 and np.isfinite(curves[1]).all()
    assert curves[1] == pytest.approx(curves[0], rel=2e-2)


def test_run_compile_is_recorded_only_when_on() -> None:
    off = resolve("synthetic", get_scheme("sasrec"), 0, "smoke")
    on = resolve("synthetic", get_scheme("sasrec"), 0, "smoke", {"run": {"compile": True}})
    assert not off.compile and "compile" not in off.to_dict()
    assert on.compile and on.to_dict()["compile"] is True and on.hash() != off.hash()
    with pytest.raises(ConfigError, match="run.compile"):
        resolve("synthetic", get_scheme("sasrec"), 0, "smoke", {"run": {"compile": "yes"}})
