"""The one content hash: stable for configs, sensitive to content, defined for every tensor and array."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from benchmark.hashing import content_key


def test_a_single_json_part_hashes_its_json_text() -> None:
    config = {"b": [1, 2], "a": "x"}
    expected = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    assert content_key(config, length=12) == expected


def test_content_dtype_shape_and_order_change_the_key() -> None:
    base = content_key({"k": 1}, [np.arange(3), np.arange(2)])
    assert base == content_key({"k": 1}, [np.arange(3), np.arange(2)])
    assert base != content_key({"k": 1}, [np.arange(2), np.arange(3)])
    assert base != content_key({"k": 1}, [np.arange(3, dtype=np.int32), np.arange(2)])
    assert content_key(["ab"]) != content_key(["a", "b"])
    assert content_key(torch.zeros(2, 3)) != content_key(torch.zeros(3, 2))


def test_empty_and_non_contiguous_inputs() -> None:
    assert content_key([np.zeros(0, dtype=np.int64), np.arange(2)]) != content_key([np.arange(2)])
    wide = torch.arange(12).reshape(3, 4)
    assert content_key(wide[:, ::2]) == content_key(wide[:, ::2].contiguous())
    assert content_key(torch.ones(2, dtype=torch.bfloat16)) != content_key(torch.ones(2, dtype=torch.float32))
    assert content_key(torch.zeros(4, 0)) == content_key(torch.zeros(4, 0))
