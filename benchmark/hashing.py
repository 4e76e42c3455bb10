"""One content hash for every cache key, checkpoint fingerprint and config id of the suite."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch


def content_key(*parts: Any, length: int = 16) -> str:
    """The first ``length`` hex characters of the SHA-256 of ``parts``, in order.

    A tensor or array counts by its dtype, shape and bytes; a list or tuple whose elements are tensors, arrays or
    strings counts element by element (each closed by a separator, so ``["ab"]`` and ``["a", "b"]`` differ); a
    string counts as its UTF-8 bytes; anything else as sorted-key JSON (``str`` for what JSON cannot write). A
    single JSON part hashes exactly its JSON text, which keeps config hashes stable.
    """
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()[:length]


def without_off_values(fields: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the keys of ``later`` (keys added after hashes of ``fields`` were first kept) that hold
    their off value ``later[key]``: adding a key leaves every existing hash, config id and cache key as it was."""
    return {key: value for key, value in fields.items() if not (key in later and value == later[key])}


def _update(digest: Any, part: Any) -> None:
    if isinstance(part, np.ndarray):
        digest.update(repr((str(part.dtype), part.shape)).encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, torch.Tensor):
        tensor = part.detach().cpu().contiguous().reshape(-1)
        digest.update(repr((str(part.dtype), tuple(part.shape))).encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
    elif isinstance(part, str):
        digest.update(part.encode())
    elif isinstance(part, (list, tuple)) and part and all(
            isinstance(item, (torch.Tensor, np.ndarray, str)) for item in part):
        for item in part:
            _update(digest, item)
            digest.update(b"\0")
    else:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
