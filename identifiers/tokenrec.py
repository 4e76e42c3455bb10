"""TokenRec of Qu, Fan, Zhao & Li, "TokenRec: Learning to Tokenize ID for LLM-based Generative
Recommendations", arXiv:2406.10450, IEEE TKDE 2025.

Paradigm ``set``: every item is an unordered set of K discrete tokens, one per parallel codebook (no token
comes before another, unlike the residual codes of the sequence paradigm), and the backbone generates one
continuous vector that is matched to items by nearest neighbour, so nothing is decoded token by token.

Pipeline:

* **CF representations**: LightGCN (He et al., SIGIR 2020; propagation ``E^(k+1) = A_hat E^(k)``, layer mean,
  BPR) trained on the training interactions only (:mod:`identifiers.lightgcn`), giving every user and
  item a ``lightgcn_dim`` vector; ``cf_model="mf"`` trains BPR-MF instead (the same BPR training with zero
  propagation layers). Cached on disk per training split, settings (``cf_model`` included, as the layer
  count) and seed.
* **MQ-Tokenizers** (:mod:`identifiers.mq_tokenizer`): a representation ``x`` is masked element-wise with
  ratio rho, encoded by a K-way encoder into sub-vectors ``z_k``, each replaced by its nearest entry of
  codebook k (M entries; token k = its index), decoded K-to-1; loss ``||x - x_hat||^2 + sum_k
  (||sg[z_k] - e_k||^2 + beta ||z_k - sg[e_k]||^2)``. Two tokenizers with the same settings: the item
  tokenizer is fitted on the items that occur in training (a cold item's vector is untrained noise) and
  encodes every item; the user tokenizer is fitted on the users with training interactions and encodes
  them once (a buffer of K tokens per user).
* **Prompt**: the user's K tokens (their own new-token range, after the items' K * M), then the history's
  items, K tokens each, as the paper's prompt lists them; embedded by the T5's new token embeddings and
  read by its encoder.
* **Generative retrieval**: the decoder runs one step from its start token (on a decoder-only backbone: the
  last position's hidden state, as for E4SRec), and an MLP projection
  (Linear-ReLU-Dropout-Linear, as the authors' code) maps its state to a generated representation ``g`` in
  the CF space. Items are ranked by ``cos(g, e_i)`` over every item's CF representation ``e_i`` (a
  nearest-neighbour search over all items: no beam search, no invalid outputs).

Users unseen in training (an empty training sequence, possible under the temporal split, or an id outside
the training users): the paper tokenizes a new user's CF representation with the trained user tokenizer,
without retraining; how that representation is obtained without retraining the CF model is left open. Our
choice is LightGCN's fold-in (:func:`identifiers.lightgcn.fold_in`): ``e_u = sum_i e_i / sqrt(|N_u| |N_i|)``
over the user's distinct history items that occur in training, one propagation step of the items' final
representations, i.e. the layer mean of the user's layers 1..K+1. It is computed from the example's history
when the user is scored and tokenized by the same user tokenizer; the history items need only their tokens.

Hyper-parameters (field: default = quick profile [paper / authors' code]): ``cf_model`` ``lightgcn``
[LightGCN]; LightGCN ``lightgcn_dim`` 64 [64: the released code loads ``lgn-<data>-64.pth.tar`` and ships no
LightGCN training, so the other LightGCN values are those of LightGCN's own code, gusye1234/LightGCN-PyTorch],
``lightgcn_layers`` 3 [3], ``lightgcn_epochs`` 200 [LightGCN: up to 1,000], ``lightgcn_lr`` 1e-3 [1e-3],
``lightgcn_reg`` 1e-4 [1e-4], ``lightgcn_batch_size`` 2048 [2048]; ``cf_vectors`` final [paper: not stated;
code: layer 0]; MQ-Tokenizers ``n_codebooks`` K 3 [3],
``codebook_size`` M 256 [256], ``code_dim`` 64 [code: 512], ``tokenizer_hidden`` (128, 256) [the code's
encoder widths], ``mask_ratio`` rho 0.1 [paper 0.1; code 0.2], ``mask_mode`` element [code: span], ``beta``
0.25 [0.25], ``tokenizer_epochs`` 500 [1,000], ``tokenizer_lr`` 1e-3 [1e-3, AdamW], ``tokenizer_batch_size``
512 [512]; prompt ``user_tokens`` True [users are tokenized], ``item_input`` ``sequence`` [the paper's prompt];
retrieval ``loss`` ``cosine`` [the authors' code], ``temperature`` 0.1 (``softmax`` only),
``projection_hidden`` 256 [256], ``projection_dropout`` 0.2 [0.2]. The authors fine-tune a pretrained
T5-small with AdamW at lr 5e-5 (weight decay 0.01, batch 128: ``--batch`` in ``code/parse.py``, 48 before
its commit 7669f69); the backbone here is trained from scratch, so
the run's ``train`` section applies (the ``train_profiles`` below, lr 1e-3).

Choices the paper leaves open or that differ here, all documented options:
``loss``: the authors' code trains the generated vector with a cosine embedding loss against the target's
representation and one uniformly drawn negative, ``1 - cos(g, e_target) + max(0, cos(g, e_negative))``
(``cosine``, the default); ``softmax`` is a cross-entropy over all items of the cosine similarities divided
by ``temperature``, the loss every other embedding- and set-paradigm row of this benchmark uses.
``user_tokens``: False drops the user's tokens from the prompt (the history's item tokens only).
``item_input``: ``sequence`` feeds all K tokens of every history item (and of the user) in order; ``sum``
feeds one embedding per item (and one for the user), the sum of its K token embeddings. ``cf_model``:
``mf`` replaces LightGCN by BPR-MF. The K codebooks quantise the K encoders' sub-vectors in parallel, as the
paper's K-way encoder describes and as the released code does by default (``code/model.py``, class ``MQ``:
one encoder and one codebook per token, selected by ``--vq_model MQ``, the default of ``code/parse.py`` and
the README's command; its class ``ResidualVQVAE``, ``--vq_model RQ``, is the residual alternative behind one
encoder). ``cf_vectors``: the paper tokenizes and retrieves "CF representations" from LightGCN; ``final``
(default) takes LightGCN's layer mean, while the released code reads the learned layer-0 table
(``embedding_user.weight`` / ``embedding_item.weight`` of the LightGCN checkpoint, ``code/vq.py`` and
``code/utils.py:read_cf_embeddings``), for the tokenizers and for the retrieval targets alike (``layer0``;
users unseen in training are then folded in from the items' layer-0 vectors, i.e. their layer-1
representation). ``mask_mode``: ``element`` (default) masks every element independently per row; ``span`` is
the released masking (:func:`identifiers.mq_tokenizer.span_masks`: encoder k may only lose features of the
k-th of K spans, one mask per batch, accumulated over encoders). ``code_dim``: the paper does not state it;
the released ``code/vq.py`` fixes ``codebook_dim = 512``. The ``paper`` profile takes the released code's
choices: ``layer0`` vectors, ``code_dim`` 512, ``span`` masking at the released ratio 0.2 (the ``MQ`` default,
which ``code/vq.py`` does not override; the paper states 0.1).
Not reproduced from the released tokenizer (``code/model.py``, ``code/train.py:vqvae``): it decodes the sum
of the K code vectors (here their concatenation); it appends each chosen code vector before its
straight-through copy is formed and trains with its commitment term commented out, so its encoders receive
no gradient and only the codebooks and decoder learn; it adds batch norm and dropout to the MLPs, a learned
position vector to the input, re-runs k-means on the codebooks every 50 epochs and keeps the epoch of least
loss on 20% of the vectors held out. Here the encoders learn (straight-through estimator and commitment
term), the MLPs are plain ReLU MLPs and k-means runs once. The user tokenizer shares every setting of the
item tokenizer.

Differences from the paper, by design of this benchmark: the backbone is the run's T5 preset (random init)
instead of a pretrained T5-small, there is no text around the tokens in the prompt, the decoder is one step
instead of a fixed 20-token text prefix, and model selection is early stopping on validation NDCG.
Differences from the released code (``code/main.py``, ``code/dataset.py``, ``code/utils.py``), all of which
this benchmark's shared protocol decides: the code selects its checkpoint on the test users (``main.py``
builds its validation data from the test data), here on validation only; at validation and test it sets the
cosine of every history item to 0 before ranking (``utils.similarity_score``), which pushes repeated items
down, while every row here ranks all items; it shuffles each training history's items (``--no_shuffle``
off by default; test histories keep their order), here histories keep their order; it keeps a user's oldest
items up to its ``item_limit`` (``utils.data_construction``), here the most recent ``run.max_history``; and
it fits both MQ-Tokenizers on a random 80% of all users' and items' vectors, here on the users and items of
the training split only.

**Against popularity.** TokenRec ranks by the cosine between a generated vector and the items' CF vectors, so
it can only beat ``pop`` if those vectors carry what the data's next item depends on. The record's
``lightgcn.retrieval_valid`` gives the run's validation metric of rankings by the CF vectors alone
(:func:`identifiers.lightgcn.cf_rankings`: LightGCN's user-item score, the user-item cosine, the cosine to the
last history item) beside ``pop``. On ``synthetic`` the row does not beat ``pop``; docs/reference/README.md
gives the evidence (``scripts/tokenrec_cf_check.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.batches import HistoryBatch
from benchmark.config import param
from benchmark.evaluate import evaluate
from benchmark.splits import TrainData
from identifiers.base import SetScheme
from identifiers.lightgcn import (
    FixedScores,
    LightGCNConfig,
    cf_rankings,
    fit_lightgcn,
    fold_in,
    item_degrees,
    lightgcn_cache_key,
)
from identifiers.mq_tokenizer import MASK_MODES, OPTIMIZERS, MQTokenizer
from identifiers.quantizers import FitConfig, FitReport, cached_fit
from identifiers.registry import register
from recommenders.backbones import BackboneSpec, build_backbone, new_token_offset, user_state
from recommenders.base import Recommender
from recommenders.contracts import ItemTokenSets, codebook_usage, collision_rate

CF_MODELS = ("lightgcn", "mf")
CF_VECTORS = ("final", "layer0")
ITEM_INPUTS = ("sequence", "sum")
LOSSES = ("cosine", "softmax")


@dataclass
class TokenRecParams:
    """TokenRec hyper-parameters (defaults = quick profile; paper / authors' code values in brackets).

    cf_model: ``lightgcn`` = LightGCN [the paper]; ``mf`` = BPR-MF, the same BPR training with zero
        propagation layers (``lightgcn_layers`` is then ignored).
    lightgcn_dim: width of the CF representations [64].
    lightgcn_layers: propagation layers K of LightGCN [3].
    lightgcn_epochs: BPR epochs over the training interactions [LightGCN: up to 1,000].
    lightgcn_lr: Adam learning rate of the CF model [1e-3].
    lightgcn_reg: L2 weight on the layer-0 embeddings of a batch [1e-4].
    lightgcn_batch_size: BPR triples per step [2048].
    n_codebooks: K, codebooks and thus tokens per item and per user [3].
    codebook_size: M, entries per codebook; items and users each add K * M new tokens [256].
    code_dim: width of each sub-vector and codebook entry [paper: not stated; authors' code 512
        (``codebook_dim`` in ``code/vq.py``); ``paper`` profile 512].
    tokenizer_hidden: hidden widths of each of the K encoders, mirrored by the decoder [128, 256].
    mask_ratio: rho, probability of zeroing each input element while training a tokenizer [paper 0.1; the
        authors' code 0.2, the default of its ``MQ`` class, which ``code/vq.py`` does not override; ``paper``
        profile 0.2].
    beta: commitment weight [0.25].
    tokenizer_epochs: training epochs of each tokenizer [1,000].
    tokenizer_lr: learning rate of the tokenizers [1e-3].
    tokenizer_optimizer: ``adamw`` (weight decay 0.01), ``adam`` or ``adagrad`` [AdamW].
    tokenizer_batch_size: rows per tokenizer step [512].
    user_tokens: True = the user's K tokens open the prompt [the paper]; False = history item tokens only.
    item_input: ``sequence`` = all K tokens of every history item (and of the user) [the paper's prompt];
        ``sum`` = one input per item (and for the user), the sum of its K token embeddings.
    loss: ``cosine`` = cosine embedding loss with the target and one random negative [the authors' code];
        ``softmax`` = cross-entropy over all items of cosine / temperature [ours, as the other rows].
    temperature: softmax temperature of the ``softmax`` loss [not applicable; 0.1].
    projection_hidden: hidden width of the output projection MLP [256].
    projection_dropout: dropout inside the output projection [0.2].
    cf_vectors: which LightGCN vectors are tokenized, retrieved and folded in: ``final`` = the layer mean
        (LightGCN's Eq. 4) [the paper's "CF representations"]; ``layer0`` = the learned layer-0 embedding
        table [the authors' code reads ``embedding_user.weight`` / ``embedding_item.weight``; ``paper``
        profile].
    mask_mode: ``element`` = every element masked independently per row; ``span`` = the K-span masking of the
        authors' code (:func:`identifiers.mq_tokenizer.span_masks`) [``paper`` profile].
    """

    cf_model: str = param("lightgcn", choices=CF_MODELS)
    lightgcn_dim: int = param(64, low=1)
    lightgcn_layers: int = param(3, low=0)
    lightgcn_epochs: int = param(200, low=0)
    lightgcn_lr: float = param(0.001, low=0, low_open=True)
    lightgcn_reg: float = param(1e-4, low=0)
    lightgcn_batch_size: int = param(2048, low=1)
    n_codebooks: int = param(3, low=1)
    codebook_size: int = param(256, low=2)
    code_dim: int = param(64, low=1)
    tokenizer_hidden: tuple[int, ...] = param((128, 256), low=1)
    mask_ratio: float = param(0.1, low=0, high=1, high_open=True)
    beta: float = param(0.25, low=0)
    tokenizer_epochs: int = param(500, low=0)
    tokenizer_lr: float = param(0.001, low=0, low_open=True)
    tokenizer_optimizer: str = param("adamw", choices=OPTIMIZERS)
    tokenizer_batch_size: int = param(512, low=1)
    user_tokens: bool = True
    item_input: str = param("sequence", choices=ITEM_INPUTS, option=True)
    loss: str = param("cosine", choices=LOSSES, option=True)
    temperature: float = param(0.1, low=0, low_open=True, option=True)
    projection_hidden: int = param(256, low=1, option=True)
    projection_dropout: float = param(0.2, low=0, high=1, high_open=True, option=True)
    cf_vectors: str = param("final", choices=CF_VECTORS, added=True)
    mask_mode: str = param("element", choices=MASK_MODES, added=True)


@dataclass(frozen=True)
class TokenRecOptions:
    """Options of :class:`TokenRecRecommender`, see :class:`TokenRecParams` for their meaning."""

    item_input: str = "sequence"
    loss: str = "cosine"
    temperature: float = 0.1
    projection_hidden: int = 256
    projection_dropout: float = 0.2


@dataclass
class UserTokenizer:
    """What gives every user K tokens: ``codes`` ``[n_users, K]`` of the users with training interactions
    (rows of -1 for the others, who are folded in), the fitted user ``tokenizer``, and the fold-in inputs:
    the items' final CF ``item_representations`` ``[n_items, d]`` and training ``item_degrees`` ``[n_items]``."""

    codes: torch.Tensor
    tokenizer: MQTokenizer
    item_representations: torch.Tensor
    item_degrees: torch.Tensor


@dataclass
class TokenRecTokens(ItemTokenSets):
    """TokenRec's identifiers: the set paradigm's discrete form (``codes`` ``[n_items, K]``, grounded in the
    items' CF representations ``cf``) plus the users' tokens (``users``; None without ``user_tokens``)."""

    users: UserTokenizer | None = None


class TokenRecRecommender(Recommender):
    """User tokens + history item tokens -> T5 encoder; one decoder step -> projection -> cosine to every
    item's CF vector.

    Token k of an item with code ``c_k`` is new token ``k * M + c_k`` of the backbone (after its text
    vocabulary); token k of a user with code ``c_k`` is new token ``K * M + k * M + c_k``. Without ``users``
    the prompt holds the history's item tokens only.
    """

    def __init__(self, codes: torch.Tensor, codebook_size: int, item_representations: torch.Tensor,
                 backbone: str | BackboneSpec,
                 max_history: int, options: TokenRecOptions = TokenRecOptions(),
                 users: UserTokenizer | None = None) -> None:
        super().__init__(codes.shape[0])
        self.options = options
        self.max_history = max_history
        self.n_codebooks = codes.shape[1]
        item_tokens = self.n_codebooks * codebook_size
        new_tokens = item_tokens * (2 if users is not None else 1)
        self.t5 = build_backbone(backbone, new_tokens=new_tokens)
        offsets = new_token_offset(self.t5, new_tokens) + codebook_size * torch.arange(self.n_codebooks)
        self.register_buffer("token_ids", codes.long() + offsets[None])
        self.register_buffer("item_representations", F.normalize(item_representations.float(), dim=-1))
        self.user_tokenizer = users.tokenizer.requires_grad_(False) if users is not None else None
        if users is not None:
            self.register_buffer("user_offsets", offsets + item_tokens)
            self.register_buffer("user_codes", users.codes.long())
            self.coded_users = (users.codes >= 0).all(dim=1).numpy()  # on the host: who needs no fold-in
            self.register_buffer("fold_in_representations", users.item_representations.float())
            self.register_buffer("fold_in_degrees", users.item_degrees.long())
        d_model = self.t5.config.hidden_size
        self.projection = nn.Sequential(nn.Linear(d_model, options.projection_hidden), nn.ReLU(),
                                        nn.Dropout(options.projection_dropout),
                                        nn.Linear(options.projection_hidden, item_representations.shape[1]))

    def user_token_codes(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, K]`` user codes: the precomputed ones of users with training interactions, the fold-in of the
        history through the user tokenizer for every other user (empty training sequence or unknown id)."""
        users = batch.users
        known = (users >= 0) & (users < len(self.user_codes))
        codes = torch.where(known[:, None], self.user_codes[users.clamp(0, len(self.user_codes) - 1)], -1)
        unseen = (codes < 0).any(dim=1)
        folded_in = self.sizes_of(batch)["unseen"]
        if folded_in is None:  # a batch made on the device: read the count from it (the host waits for a GPU)
            folded_in = int(unseen.sum())
        if folded_in:
            with torch.no_grad(), torch.autocast(users.device.type, enabled=False):
                folded = fold_in(batch.items[unseen], batch.mask[unseen], self.fold_in_representations,
                                 self.fold_in_degrees)
                codes[unseen] = self.user_tokenizer.codes(folded)
        return codes

    def host_sizes(self, batch: HistoryBatch) -> dict[str, int | None]:
        """``unseen``: the rows whose user has no precomputed user codes (they are folded in), counted on the host
        from ``batch.host_users`` (None when the batch has none)."""
        if self.user_tokenizer is None:
            return {}
        if batch.host_users is None:
            return {"unseen": None}
        users, coded = batch.host_users, self.coded_users
        known = (users >= 0) & (users < len(coded))
        return {"unseen": int(np.count_nonzero(~(known & coded[np.clip(users, 0, len(coded) - 1)])))}

    def history_inputs(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder ``inputs_embeds`` and attention mask: the user's tokens (when used) then the history's items,
        K tokens each (``sequence``) or one summed embedding each (``sum``)."""
        embed = self.t5.get_input_embeddings()
        embeddings = embed(self.token_ids[batch.items])
        if self.options.item_input == "sequence":
            inputs, mask = embeddings.flatten(1, 2), batch.mask.repeat_interleave(self.n_codebooks, dim=1)
        else:
            inputs, mask = embeddings.sum(dim=2), batch.mask
        inputs = inputs * mask[..., None]
        if self.user_tokenizer is None:
            return inputs, mask
        user = embed(self.user_token_codes(batch) + self.user_offsets[None])
        if self.options.item_input == "sum":
            user = user.sum(dim=1, keepdim=True)
        user_mask = torch.ones(user.shape[:2], dtype=torch.bool, device=mask.device)
        return torch.cat([user, inputs], dim=1), torch.cat([user_mask, mask], dim=1)

    def generate(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, d_cf]`` generated representation: projection of the decoder state after its start token (T5),
        or of the last position's hidden state (decoder-only backbone)."""
        inputs, mask = self.history_inputs(batch)
        return self.projection(user_state(self.t5, inputs, mask))

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, n_items]`` cosine similarities of the generated representation to every item's."""
        generated = F.normalize(self.generate(batch).float(), dim=-1)
        return generated @ self.item_representations.T

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        """``cosine``: the authors' cosine embedding loss, ``1 - cos(g, e_target) + max(0, cos(g, e_negative))``
        averaged over both pairs; ``softmax``: cross-entropy over all items of cosine / temperature."""
        scores = self.score(batch)
        if self.options.loss == "softmax":
            return F.cross_entropy(scores / self.options.temperature, batch.targets)
        negatives = torch.randint(0, self.n_items, batch.targets.shape, device=scores.device)
        positive = scores.gather(1, batch.targets[:, None])
        negative = scores.gather(1, negatives[:, None])
        return torch.cat([1 - positive, negative.clamp_min(0)]).mean()


@register("tokenrec")
class TokenRec(SetScheme):
    """LightGCN (or MF) representations -> masked K-codebook tokens per item and per user -> T5 generative
    retrieval."""

    citation = ("Qu, Fan, Zhao & Li, TokenRec: Learning to Tokenize ID for LLM-based Generative Recommendations, "
                "arXiv:2406.10450, IEEE TKDE 2025.")
    Params = TokenRecParams
    Options = TokenRecOptions
    profiles = {"smoke": {"lightgcn_dim": 16, "lightgcn_epochs": 5, "n_codebooks": 2, "codebook_size": 16,
                          "code_dim": 8, "tokenizer_hidden": (32,), "tokenizer_epochs": 5},
                "quick": {},
                "paper": {"lightgcn_epochs": 1000, "tokenizer_epochs": 1000, "cf_vectors": "layer0", "code_dim": 512,
                          "mask_mode": "span", "mask_ratio": 0.2}}
    train_profiles = {"smoke": {"epochs": 1, "lr": 0.003},
                      "quick": {"epochs": 20, "batch_size": 256, "lr": 0.001, "patience": 3},
                      "paper": {"epochs": 100, "lr": 0.001, "patience": 10}}

    def lightgcn_config(self) -> LightGCNConfig:
        """The CF model's settings; ``cf_model="mf"`` is LightGCN with zero propagation layers (BPR-MF)."""
        params = self.params
        layers = 0 if params.cf_model == "mf" else params.lightgcn_layers
        return LightGCNConfig(dim=params.lightgcn_dim, layers=layers, epochs=params.lightgcn_epochs,
                              batch_size=params.lightgcn_batch_size, lr=params.lightgcn_lr, reg=params.lightgcn_reg,
                              max_steps=self.ctx.config.max_fit_steps)

    def cf_representations(self, data: TrainData) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """CF user and item representations of the training split, cached under ``lightgcn/``, and how they were
        made."""
        config, layer0 = self.lightgcn_config(), self.params.cf_vectors == "layer0"

        def train(checkpoint: Path) -> dict[str, Any]:
            result = fit_lightgcn(data, config, self.ctx.device, self.ctx.seed, self.ctx.progress, checkpoint)
            state = {"users": result.users, "items": result.items, "losses": result.losses, "seconds": result.seconds,
                     "resumed_from_epoch": result.resumed_from_epoch}
            return {**state, "ego_users": result.ego_users, "ego_items": result.ego_items} if layer0 else state

        key = lightgcn_cache_key(data, config, self.ctx.seed, with_ego=layer0)
        state, cached = self.ctx.load_or_fit("lightgcn", key, train)
        report = {"final_bpr_loss": state["losses"][-1] if state["losses"] else None,
                  "train_s": state.get("seconds"), "resumed_from_epoch": state.get("resumed_from_epoch", 0),
                  "loaded_from_cache": cached}
        if layer0:
            return state["ego_users"], state["ego_items"], report
        return state["users"], state["items"], report

    def cf_retrieval(self, users: torch.Tensor, items: torch.Tensor, data: TrainData) -> dict[str, Any]:
        """The run's ``train.valid_metric`` on its validation selection subset (as early stopping uses) of the
        rankings of :func:`~identifiers.lightgcn.cf_rankings`: what the CF vectors that TokenRec tokenizes and
        retrieves are worth alone, beside popularity (validation only; test is never scored here)."""
        cfg = self.ctx.config
        examples = self.ctx.valid.subset(cfg.train.max_valid_examples, cfg.seed)
        k = cfg.train.valid_k
        popularity = torch.as_tensor(data.item_counts(), dtype=torch.float32)
        out: dict[str, Any] = {"metric": cfg.train.valid_metric}
        for name, rule in cf_rankings(users.float(), items.float(), popularity).items():
            result = evaluate(FixedScores(data.n_items, rule), examples, self.ctx.warm, (k,), cfg.eval_batch_size,
                              "cpu")
            out[name] = result.value(cfg.train.valid_metric)
        return out

    def fit_tokenizer(self, vectors: torch.Tensor, rows: torch.Tensor) -> tuple[MQTokenizer, FitReport]:
        """An MQ-Tokenizer fitted on ``vectors[rows]`` (on all rows when none is selected), or loaded from the
        cache when one with the same settings was fitted on the same vectors; returned on the CPU."""
        params = self.params
        settings = {"input_dim": vectors.shape[1], "n_codebooks": params.n_codebooks,
                    "codebook_size": params.codebook_size, "code_dim": params.code_dim,
                    "hidden_dims": tuple(params.tokenizer_hidden), "mask_ratio": params.mask_ratio, "beta": params.beta}
        if params.mask_mode != "element":
            settings["mask_mode"] = params.mask_mode
        torch.manual_seed(self.ctx.seed)
        tokenizer = MQTokenizer(**settings).to(self.ctx.device)
        fit = FitConfig(epochs=params.tokenizer_epochs, batch_size=params.tokenizer_batch_size, lr=params.tokenizer_lr,
                        optimizer=params.tokenizer_optimizer, seed=self.ctx.seed,
                        max_steps=self.ctx.config.max_fit_steps)
        x = vectors[rows] if bool(rows.any()) else vectors
        report = cached_fit(self.ctx, "mq-tokenizer", tokenizer, settings, fit, (x,),
                            lambda checkpoint: tokenizer.fit(x, fit, self.ctx.progress, checkpoint))
        return tokenizer.cpu().eval(), report

    def tokenize(self, data: TrainData) -> TokenRecTokens:
        """Every item's K tokens ``[n_items, K]``: CF item vectors through the item MQ-Tokenizer, grounded in the
        items' CF representations; with ``user_tokens``, also the users' tokens and the user MQ-Tokenizer."""
        params = self.params
        users, items, cf_report = self.cf_representations(data)
        tokenizer, report = self.fit_tokenizer(items, torch.as_tensor(data.item_counts() > 0))
        user_side, user_report = self.tokenize_users(data, users, items) if params.user_tokens else (None, None)
        tokens_per_side = params.n_codebooks * params.codebook_size
        details: dict[str, Any] = {
            "new_tokens": tokens_per_side * (2 if user_side is not None else 1), "item_new_tokens": tokens_per_side,
            "lightgcn": {**asdict(self.lightgcn_config()), "cf_model": params.cf_model, "vectors": params.cf_vectors,
                         **cf_report, "retrieval_valid": self.cf_retrieval(users, items, data)},
            "tokenizer_final": report.final, "tokenizer_resumed_from_epoch": report.resumed_from_epoch,
            "tokenizer_loaded_from_cache": report.loaded_from_cache}
        if user_side is not None:
            codes = user_side.codes[(user_side.codes >= 0).all(dim=1)]
            details["users"] = {
                "new_tokens": tokens_per_side, "tokenized": len(codes), "folded_in": len(user_side.codes) - len(codes),
                "collision_rate": collision_rate(codes) if len(codes) else 0.0,
                "codebook_usage_per_level": codebook_usage(codes, params.codebook_size),
                "tokenizer_final": user_report.final, "tokenizer_resumed_from_epoch": user_report.resumed_from_epoch,
                "tokenizer_loaded_from_cache": user_report.loaded_from_cache}
        return TokenRecTokens(cf=items, semantic=None, codes=tokenizer.encode(items).long(),
                              codebook_size=params.codebook_size, details=details, users=user_side)

    def tokenize_users(self, data: TrainData, users: torch.Tensor,
                       items: torch.Tensor) -> tuple[UserTokenizer, FitReport]:
        """The user MQ-Tokenizer, fitted on and encoding the users with training interactions (-1 rows for the
        others, who are folded in from their history when scored), and its fit report."""
        trained = torch.tensor([len(seq) > 0 for seq in data.sequences], dtype=torch.bool)
        tokenizer, report = self.fit_tokenizer(users, trained)
        codes = torch.full((len(users), self.params.n_codebooks), -1, dtype=torch.long)
        codes[trained] = tokenizer.encode(users[trained])
        return UserTokenizer(codes, tokenizer, items, torch.as_tensor(item_degrees(data))), report

    def recommender(self, identifiers: TokenRecTokens) -> Recommender:
        """TokenRec's own recommender: user and item tokens in, one generated CF-space vector out."""
        torch.manual_seed(self.ctx.seed)
        return TokenRecRecommender(identifiers.codes, identifiers.codebook_size, identifiers.cf,
                                   self.ctx.backbone, self.ctx.config.max_history, self.options(),
                                   identifiers.users)
