"""SETRec of Lin, Shi, Wang, Feng, Wang, Ng & Chua, "Order-agnostic Identifier for Large Language
Model-based Generative Recommendation", SIGIR 2025 (arXiv:2502.10833), set paradigm.

Each item is a set of order-agnostic tokens: one CF token, the item's embedding from the SASRec trained on
the training split (:meth:`~identifiers.base.RunContext.cf_encoder`, frozen) through a learned linear
projection, and N semantic tokens that one shared autoencoder makes from the item's text embedding
(:func:`identifiers.encoders.item_embeddings`, available for cold items too) and trains with the
recommender (Eq. 3-4, reconstruction loss weighted by ``alpha``, Eq. 8). The backbone encodes the history
under the sparse attention mask and generates all N+1 dimensions at once from learnable queries; items are
ranked by CF score + beta * sum of semantic scores (Eq. 7), beta chosen on validation. See
:mod:`recommenders.set` for the model.

Differences from the paper: the backbone is the run's T5 preset (random init) instead of a pretrained T5
or Qwen, there is no instruction prompt, the semantic embedding comes from MiniLM (TF-IDF + SVD without it)
instead of the backbone LLM's (the paper; the authors' T5 scripts use the sentence encoder sentence-t5-base,
their Qwen scripts the backbone), and beta is chosen on validation (the authors' scripts sweep beta on test).
The authors weight CF by 1 - beta' and each semantic score by beta' (beta' in 0.1 .. 1.0); up to a scale
that is this Eq. 7 with beta = beta' / (1 - beta').

Profiles: ``paper`` uses N = 4 and the authors' batch size 512 and learning rate 1e-3 (with this suite's
early stopping instead of their 30 epochs); ``quick`` uses N = 2 and 15 epochs at 1e-3, batch 256 (about
17 s an epoch on two CPU cores for the default synthetic data, plus the shared SASRec).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.config import ConfigError, param
from benchmark.splits import TrainData
from identifiers.base import SetScheme
from identifiers.encoders import ENCODERS, item_embeddings
from identifiers.registry import register
from recommenders.contracts import ItemTokenSets


@dataclass
class SETRecParams:
    """SETRec hyper-parameters (defaults = quick profile; paper / authors' code values in brackets).

    n_semantic: semantic tokens per item, N [4 in the authors' example script for T5, used by the
        ``paper`` profile; the paper varies it in its hyper-parameter study]. Each item then has N + 1
        tokens. Default 2: the encoder reads N + 1 tokens per history item, so N = 2 makes the quick
        profile about 1.7 times faster than N = 4.
    alpha: weight of the autoencoder's reconstruction loss, the tokenizer strength of Eq. 8 [0.7 in the
        authors' example script].
    beta_grid: weights of the summed semantic scores in the grounding, score = CF + beta * sum_j sem_j
        (Eq. 7), chosen on validation after training [authors: 1 - b for CF and b per semantic score,
        b in 0.1 .. 1.0, i.e. beta = b / (1 - b) from 0.11 to 9 and semantic-only; our grid 0 .. 4].
    semantic_layers: hidden widths of the autoencoder's encoder, mirrored by its decoder [512, 256, 128].
        Token dimensions: every token has the backbone's width d_model (CF: SASRec ``hidden`` -> d_model by
        a linear projection; semantic: the autoencoder's output is N x d_model) [as in the authors' code].
    semantic_dropout: dropout inside the autoencoder [paper: not stated; the authors' code: 0.0,
        ``--dropout_prob`` in ``code/parse_utils.py``].
    semantic_encoder: text encoder of the semantic embedding, ``auto`` / ``minilm`` / ``tfidf`` [the authors'
        code: the sentence encoder sentence-t5-base for the T5 rows (``data/extract_item_semantic_rep_t5.py``),
        the backbone Qwen itself for the Qwen rows; ours MiniLM; smoke: tfidf, as TIGER's smoke, so that a smoke
        run does not encode a large catalogue with MiniLM on a CPU].
    use_cf: include the CF token (ablation "w/o CF", Sec. 4.3.1) [True].
    use_semantic: include the semantic tokens (ablation "w/o Sem", Sec. 4.3.1) [True].
    learnable_queries: learn the query vectors of Eq. 5; False keeps them frozen at random values
        (ablation of the query-guided generation, Sec. 4.3.1) [True].
    sparse_mask: the sparse attention mask of Sec. 3.2.2; False = full attention over all history tokens
        (ablation "w/o SA", Sec. 4.3.1) [True].
    """

    n_semantic: int = param(2, low=1)
    alpha: float = param(0.7, low=0, option=True)
    beta_grid: tuple[float, ...] = param((0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0), low=0, option=True)
    semantic_layers: tuple[int, ...] = param((512, 256, 128), low=1, option=True)
    semantic_dropout: float = param(0.0, low=0, high=1, high_open=True, option=True)
    semantic_encoder: str = param("auto", choices=ENCODERS)
    use_cf: bool = True
    use_semantic: bool = True
    learnable_queries: bool = param(True, option=True)
    sparse_mask: bool = param(True, option=True)

    def check(self) -> None:
        if not (self.use_cf or self.use_semantic):
            raise ConfigError("use_cf and use_semantic cannot both be false")
        if not self.beta_grid:
            raise ConfigError("beta_grid: expected at least one value")


@register("setrec")
class SETRec(SetScheme):
    """Order-agnostic set identifiers: a CF token and N autoencoder semantic tokens per item."""

    citation = ("Lin, Shi, Wang, Feng, Wang, Ng & Chua, Order-agnostic Identifier for Large Language "
                "Model-based Generative Recommendation, SIGIR 2025.")
    Params = SETRecParams
    profiles = {"smoke": {"n_semantic": 1, "semantic_layers": (64,), "semantic_encoder": "tfidf"}, "quick": {},
                "paper": {"n_semantic": 4}}
    train_profiles = {"smoke": {"epochs": 1, "lr": 0.003},
                      "quick": {"epochs": 15, "batch_size": 256, "lr": 0.001, "patience": 4},
                      "paper": {"batch_size": 512, "lr": 0.001}}

    @classmethod
    def required_content(cls, params: dict[str, Any]) -> tuple[str, ...]:
        """Item text for the semantic part only."""
        return ("text",) if params["use_semantic"] else ()

    def tokenize(self, data: TrainData) -> ItemTokenSets:
        params = self.params
        cf = None
        if params.use_cf:
            cf = self.ctx.cf_encoder(data).item_embeddings().detach().to("cpu", torch.float32).clone()
        semantic = None
        if params.use_semantic:
            semantic = torch.as_tensor(item_embeddings(self.ctx, params.semantic_encoder), dtype=torch.float32)
        return ItemTokenSets(cf=cf, semantic=semantic, n_semantic=params.n_semantic if params.use_semantic else 0)
