"""TokenRec of Qu, Fan, Zhao & Li, "TokenRec: Learning to Tokenize ID for LLM-based Generative
Recommendation", arXiv:2406.10450, 2024 (set paradigm: every item is an unordered set of K discrete tokens,
one per codebook).

Pipeline:

* **CF representations**: LightGCN (He et al., SIGIR 2020) trained with BPR on the training
  interactions only (:mod:`recommenders.lightgcn`), giving every user and item a ``lightgcn_dim`` vector;
  cached on disk per training split, settings and seed.
* **MQ-Tokenizer** (:mod:`recommenders.mq_tokenizer`): the item representations are masked
  element-wise with ratio rho, encoded by a K-way encoder, each sub-vector quantised against its own codebook
  of M entries (K tokens per item, new vocabulary of K * M tokens), decoded K-to-1; loss = reconstruction +
  codebook + beta * commitment. It is fitted on the items that occur in training (a cold item's LightGCN
  vector is untrained noise) and then encodes every item.
* **Generative retrieval**: the history's items, K tokens each, are embedded by the new token
  embeddings of the T5 and read by its encoder; the decoder runs one step from its start token, and an MLP
  projection (Linear-ReLU-Dropout-Linear, as the authors' code) maps its state to a generated representation
  in the LightGCN space. Items are ranked by its cosine similarity to every item's LightGCN representation
  (a nearest-neighbour search over all items: no beam search, no invalid outputs).

Users unseen in training: the model reads only the history's item tokens, never a user ID or a user token,
so it scores any user who has a history, including users absent from the training interactions; their
history items need only their tokens.

Hyper-parameters (field: default = quick profile [paper / authors' code]): LightGCN ``lightgcn_dim`` 64 [64],
``lightgcn_layers`` 3 [3], ``lightgcn_epochs`` 200 [LightGCN: up to 1,000], ``lightgcn_lr`` 1e-3 [1e-3],
``lightgcn_reg`` 1e-4 [1e-4], ``lightgcn_batch_size`` 2048 [2048]; MQ-Tokenizer ``n_codebooks`` K 3 [3],
``codebook_size`` M 256 [256], ``code_dim`` 64, ``tokenizer_hidden`` (128, 256) [the code's encoder widths],
``mask_ratio`` rho 0.1 [0.1], ``beta`` 0.25 [0.25], ``tokenizer_epochs`` 500 [1,000], ``tokenizer_lr`` 1e-3
[1e-3, AdamW], ``tokenizer_batch_size`` 512 [512]; retrieval ``item_input`` ``sequence``, ``loss``
``softmax``, ``temperature`` 0.1, ``projection_hidden`` 256 [256], ``projection_dropout`` 0.2 [0.2]. The
authors fine-tune a pretrained T5-small with AdamW at lr 5e-5 (weight decay 0.01, batch 48); the backbone here
is trained from scratch, so the run's ``train`` section applies (the ``train_profiles`` below, lr 1e-3).

Choices the paper leaves open or that differ here, all documented options:
``loss``: the authors' code trains the generated vector with a cosine embedding loss against the target's
representation and one uniformly drawn negative (``loss="cosine"``); the default ``softmax`` is a
cross-entropy over all items of the cosine similarities divided by ``temperature``, the loss every other
embedding- and set-paradigm row of this benchmark uses. ``item_input``: ``sequence`` feeds all K tokens of
every history item in order, as the paper's prompt lists them; ``sum`` feeds one embedding per item, the
sum of its K token embeddings. The K codebooks quantise the K encoders' sub-vectors in parallel, as the
paper's K-way encoder describes (the released code instead quantises residuals, RQ-VAE style, behind one
encoder). Masking is element-wise and independent per item (the code draws one feature mask per batch); the
encoders and decoder are plain ReLU MLPs (the code adds batch norm and dropout) and the codebooks are k-means
initialised once (the code re-runs k-means every 50 epochs).

Differences from the paper, by design of this benchmark: the backbone is the run's T5 preset (random init)
instead of a pretrained T5-small, there is no text prompt and no user tokens (see above), the decoder is one
step instead of a fixed 20-token text prefix, and model selection is early stopping on validation NDCG.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import ConfigError
from benchmark.splits import TrainData
from identifiers.base import Scheme, collision_rate, options_from_params
from identifiers.quantizers import FitConfig
from identifiers.registry import register
from recommenders import trainer
from recommenders.backbones import build_t5, new_token_offset
from recommenders.base import HistoryBatch, Recommender
from recommenders.lightgcn import LightGCNConfig, fit_lightgcn, lightgcn_cache_key
from recommenders.mq_tokenizer import OPTIMIZERS, MQTokenizer

ITEM_INPUTS = ("sequence", "sum")
LOSSES = ("softmax", "cosine")


@dataclass
class TokenRecParams:
    """TokenRec hyper-parameters (defaults = quick profile; paper / authors' code values in brackets).

    lightgcn_dim: width of the LightGCN representations [64].
    lightgcn_layers: propagation layers K of LightGCN [3].
    lightgcn_epochs: BPR epochs over the training interactions [LightGCN: up to 1,000].
    lightgcn_lr: Adam learning rate of LightGCN [1e-3].
    lightgcn_reg: L2 weight on the layer-0 embeddings of a batch [1e-4].
    lightgcn_batch_size: BPR triples per step [2048].
    n_codebooks: K, codebooks and thus tokens per item [3].
    codebook_size: M, entries per codebook; the new vocabulary has K * M tokens [256].
    code_dim: width of each sub-vector and codebook entry [not stated; 64].
    tokenizer_hidden: hidden widths of each of the K encoders, mirrored by the decoder [128, 256].
    mask_ratio: rho, probability of zeroing each input element while training the tokenizer [0.1].
    beta: commitment weight [0.25].
    tokenizer_epochs: training epochs of the tokenizer [1,000].
    tokenizer_lr: learning rate of the tokenizer [1e-3].
    tokenizer_optimizer: ``adamw`` (weight decay 0.01), ``adam`` or ``adagrad`` [AdamW].
    tokenizer_batch_size: items per tokenizer step [512].
    item_input: ``sequence`` = all K tokens of every history item [the paper's prompt]; ``sum`` = one input
        per item, the sum of its K token embeddings.
    loss: ``softmax`` = cross-entropy over all items of cosine / temperature [ours, as the other rows];
        ``cosine`` = cosine embedding loss with the target and one random negative [the authors' code].
    temperature: softmax temperature of the ``softmax`` loss [not applicable; 0.1].
    projection_hidden: hidden width of the output projection MLP [256].
    projection_dropout: dropout inside the output projection [0.2].
    """

    lightgcn_dim: int = 64
    lightgcn_layers: int = 3
    lightgcn_epochs: int = 200
    lightgcn_lr: float = 0.001
    lightgcn_reg: float = 1e-4
    lightgcn_batch_size: int = 2048
    n_codebooks: int = 3
    codebook_size: int = 256
    code_dim: int = 64
    tokenizer_hidden: tuple[int, ...] = (128, 256)
    mask_ratio: float = 0.1
    beta: float = 0.25
    tokenizer_epochs: int = 500
    tokenizer_lr: float = 0.001
    tokenizer_optimizer: str = "adamw"
    tokenizer_batch_size: int = 512
    item_input: str = "sequence"
    loss: str = "softmax"
    temperature: float = 0.1
    projection_hidden: int = 256
    projection_dropout: float = 0.2


@dataclass(frozen=True)
class TokenRecOptions:
    """Options of :class:`TokenRecRecommender`, see :class:`TokenRecParams` for their meaning."""

    item_input: str = "sequence"
    loss: str = "softmax"
    temperature: float = 0.1
    projection_hidden: int = 256
    projection_dropout: float = 0.2


class TokenRecRecommender(Recommender):
    """History item tokens -> T5 encoder; one decoder step -> projection -> cosine to every item's CF vector.

    Token k of an item with code ``c_k`` is new token ``k * M + c_k`` of the backbone (after its text vocabulary).
    """

    def __init__(self, codes: torch.Tensor, codebook_size: int, item_representations: torch.Tensor, backbone: str,
                 max_history: int, options: TokenRecOptions = TokenRecOptions()) -> None:
        super().__init__(codes.shape[0])
        self.options = options
        self.max_history = max_history
        self.n_codebooks = codes.shape[1]
        new_tokens = self.n_codebooks * codebook_size
        self.t5 = build_t5(backbone, new_tokens=new_tokens)
        offsets = new_token_offset(self.t5, new_tokens) + codebook_size * torch.arange(self.n_codebooks)
        self.register_buffer("token_ids", codes.long() + offsets[None])
        self.register_buffer("item_representations", F.normalize(item_representations.float(), dim=-1))
        d_model = self.t5.config.d_model
        self.projection = nn.Sequential(nn.Linear(d_model, options.projection_hidden), nn.ReLU(),
                                        nn.Dropout(options.projection_dropout),
                                        nn.Linear(options.projection_hidden, item_representations.shape[1]))

    def history_inputs(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder ``inputs_embeds`` and attention mask: K tokens per item (``sequence``) or their sum (``sum``)."""
        embeddings = self.t5.get_input_embeddings()(self.token_ids[batch.items])
        if self.options.item_input == "sequence":
            inputs, mask = embeddings.flatten(1, 2), batch.mask.repeat_interleave(self.n_codebooks, dim=1)
        else:
            inputs, mask = embeddings.sum(dim=2), batch.mask
        return inputs * mask[..., None], mask

    def generate(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, d_cf]`` generated representation: projection of the decoder state after its start token."""
        inputs, mask = self.history_inputs(batch)
        encoded = self.t5.encoder(inputs_embeds=inputs, attention_mask=mask.long()).last_hidden_state
        start = torch.full((len(inputs), 1), self.t5.config.decoder_start_token_id, dtype=torch.long,
                           device=inputs.device)
        decoded = self.t5.decoder(input_ids=start, encoder_hidden_states=encoded, encoder_attention_mask=mask.long(),
                                  use_cache=False)
        return self.projection(decoded.last_hidden_state[:, -1])

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, n_items]`` cosine similarities of the generated representation to every item's."""
        generated = F.normalize(self.generate(batch).float(), dim=-1)
        return generated @ self.item_representations.T

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        """``softmax``: cross-entropy over all items of cosine / temperature; ``cosine``: the authors' cosine
        embedding loss, ``1 - cos(g, e_target) + max(0, cos(g, e_negative))`` averaged over both pairs."""
        scores = self.score(batch)
        if self.options.loss == "softmax":
            return F.cross_entropy(scores / self.options.temperature, batch.targets)
        negatives = torch.randint(0, self.n_items, batch.targets.shape, device=scores.device)
        positive = scores.gather(1, batch.targets[:, None])
        negative = scores.gather(1, negatives[:, None])
        return torch.cat([1 - positive, negative.clamp_min(0)]).mean()


@register("tokenrec")
class TokenRec(Scheme):
    """LightGCN representations -> masked K-codebook tokens per item -> T5 generative retrieval."""

    paradigm = "set"
    citation = ("Qu, Fan, Zhao & Li, TokenRec: Learning to Tokenize ID for LLM-based Generative Recommendation, "
                "arXiv:2406.10450, 2024.")
    Params = TokenRecParams
    profiles = {"smoke": {"lightgcn_dim": 16, "lightgcn_epochs": 5, "n_codebooks": 2, "codebook_size": 16,
                          "code_dim": 8, "tokenizer_hidden": (32,), "tokenizer_epochs": 5},
                "quick": {},
                "paper": {"lightgcn_epochs": 1000, "tokenizer_epochs": 1000}}
    train_profiles = {"smoke": {"epochs": 1, "lr": 0.003},
                      "quick": {"epochs": 20, "batch_size": 256, "lr": 0.001, "patience": 3},
                      "paper": {"epochs": 100, "lr": 0.001, "patience": 10}}

    def _check(self) -> None:
        params = self.params
        for name, value, valid in (("item_input", params.item_input, ITEM_INPUTS), ("loss", params.loss, LOSSES),
                                   ("tokenizer_optimizer", params.tokenizer_optimizer, OPTIMIZERS)):
            if value not in valid:
                raise ConfigError(f"schemes.tokenrec: unknown {name} '{value}'; choose from {', '.join(valid)}")
        if params.n_codebooks < 1 or params.codebook_size < 2:
            raise ConfigError("schemes.tokenrec: n_codebooks must be at least 1 and codebook_size at least 2")
        if not 0.0 <= params.mask_ratio < 1.0:
            raise ConfigError(f"schemes.tokenrec: mask_ratio must lie in [0, 1), got {params.mask_ratio}")

    def lightgcn_config(self) -> LightGCNConfig:
        params = self.params
        return LightGCNConfig(dim=params.lightgcn_dim, layers=params.lightgcn_layers, epochs=params.lightgcn_epochs,
                              batch_size=params.lightgcn_batch_size, lr=params.lightgcn_lr, reg=params.lightgcn_reg)

    def cf_representations(self, data: TrainData) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN user and item representations of the training split, cached under ``lightgcn/``."""
        config = self.lightgcn_config()
        path = self.ctx.cache_path("lightgcn", lightgcn_cache_key(data, config, self.ctx.seed), ".pt")
        if path.is_file():
            state = torch.load(path, map_location="cpu")
        else:
            result = fit_lightgcn(data, config, self.ctx.device, self.ctx.seed, self.ctx.progress)
            state = {"users": result.users, "items": result.items, "losses": result.losses}
            trainer.save_atomic(path, state)
        self.lightgcn_final_loss = state["losses"][-1] if state["losses"] else None
        return state["users"], state["items"]

    def tokenize(self, data: TrainData) -> torch.Tensor:
        """Every item's K tokens ``[n_items, K]``: LightGCN item vectors through the MQ-Tokenizer."""
        self._check()
        params = self.params
        _, items = self.cf_representations(data)
        self.item_representations = items
        warm = torch.as_tensor(data.item_counts() > 0)
        torch.manual_seed(self.ctx.seed)
        tokenizer = MQTokenizer(items.shape[1], params.n_codebooks, params.codebook_size, params.code_dim,
                                tuple(params.tokenizer_hidden), params.mask_ratio, params.beta).to(self.ctx.device)
        fit = FitConfig(epochs=params.tokenizer_epochs, batch_size=params.tokenizer_batch_size, lr=params.tokenizer_lr,
                        optimizer=params.tokenizer_optimizer, seed=self.ctx.seed)
        training_items = items[warm] if bool(warm.any()) else items
        self.tokenizer_report = tokenizer.fit(training_items, fit, self.ctx.progress)
        return tokenizer.encode(items)

    def build(self, data: TrainData) -> Recommender:
        self.codes = self.tokenize(data)
        params = self.params
        options = options_from_params(TokenRecOptions, params)
        torch.manual_seed(self.ctx.seed)
        return TokenRecRecommender(self.codes, params.codebook_size, self.item_representations,
                                   self.ctx.config.backbone, self.ctx.config.max_history, options)

    def statistics(self) -> dict[str, Any]:
        params = self.params
        usage = [float(len(torch.unique(self.codes[:, k])) / params.codebook_size) for k in range(params.n_codebooks)]
        collisions = collision_rate(self.codes)
        return {"new_tokens": params.n_codebooks * params.codebook_size, "code_length_max": params.n_codebooks,
                "collision_rate_before_dedup": collisions, "collision_rate_after_dedup": collisions,
                "codebook_usage_per_level": usage,
                "lightgcn": {**asdict(self.lightgcn_config()), "final_bpr_loss": self.lightgcn_final_loss},
                "tokenizer_final": self.tokenizer_report.final}
