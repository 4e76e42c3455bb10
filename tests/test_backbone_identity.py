"""How a run names its backbone: presets keep their config, hash and record name; a checkpoint folder is one
backbone however its path is spelt, and another one once a different checkpoint is saved to the same path (its
content fingerprint is in the config hash); the record says over how many data-parallel processes it trained."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from benchmark.config import Environment, RunConfig, backbone_identity, resolve
from benchmark.hashing import BLOCK_BYTES, SAMPLE_BLOCKS, checkpoint_fingerprint
from benchmark.records import hardware, read_record, record_path, write_json_atomic
from benchmark.reports.costs import cost_frame
from benchmark.reports.hardware import machines
from benchmark.runner import checkpoint_path
from identifiers.registry import get_scheme
from recommenders.backbones import BackboneError, check_backbone
from tests.test_leaderboard import write_record
from tests.test_records_damaged import finished

PRESET_HASHES = [
    ("tiger", "t5-tiny", "smoke", "5ef3f1f8b225"),
    ("tiger", "qwen-tiny", "quick", "33eaafa45809"),
    ("tiger", "t5-tiger", "paper", "06e1a4a9ead2"),
    ("e4srec", "qwen-tiny", "smoke", "51400db193aa"),
    ("sasrec", "t5-tiny", "smoke", "14854fd87a26"),
]
"""Config hashes of preset runs on ``synthetic``, seed 1, as the code before backbone fingerprints wrote them."""


def config(backbone: str | None, scheme: str = "tiger", profile: str = "smoke", user: dict | None = None) -> RunConfig:
    """The config of ``scheme`` on ``synthetic``, seed 1, with ``--backbone backbone`` (None: the YAML's)."""
    return resolve("synthetic", get_scheme(scheme), 1, profile, user, {"backbone": backbone})


def save_gpt2(folder: Path, seed: int) -> None:
    """A one-layer GPT-2 (initialised from ``seed``) and a tokenizer file saved into ``folder``."""
    torch.manual_seed(seed)
    settings = GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32, bos_token_id=1, eos_token_id=1)
    GPT2LMHeadModel(settings).save_pretrained(folder)
    (folder / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')


@pytest.mark.parametrize("scheme, backbone, profile, expected", PRESET_HASHES)
def test_a_preset_keeps_its_config_hash_and_record_name(scheme: str, backbone: str, profile: str,
                                                        expected: str) -> None:
    resolved = config(backbone, scheme, profile)
    assert resolved.hash() == expected and resolved.backbone_fingerprint is None
    assert "backbone_fingerprint" not in resolved.to_dict()
    name = backbone if get_scheme(scheme).uses_backbone else "none"
    assert resolved.run_name == f"synthetic__{scheme}__{name}__loo__{profile}__s1"
    assert record_path("r", resolved).name == f"{scheme}__{name}__loo__{profile}__s1__{expected}.json"


def test_every_spelling_of_a_checkpoint_path_is_one_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_gpt2(tmp_path / "ck" / "qwen", seed=0)
    monkeypatch.chdir(tmp_path)
    configs = [config(name) for name in ("ck/qwen", "ck/qwen/", "./ck/qwen", "ck//qwen/.")]
    configs.append(config(None, user={"run": {"backbone": "./ck/qwen/"}}))
    fingerprint = checkpoint_fingerprint("ck/qwen")
    assert {(c.backbone, c.backbone_fingerprint, c.hash()) for c in configs} == {
        ("ck/qwen", fingerprint, configs[0].hash())}
    assert configs[0].to_dict()["backbone_fingerprint"] == fingerprint
    assert configs[0].run_name == f"synthetic__tiger__ck/qwen@{fingerprint}__loo__smoke__s1"
    assert backbone_identity(str(tmp_path / "ck" / "qwen") + "/") == (str(tmp_path / "ck" / "qwen"), fingerprint)
    assert backbone_identity("../x/ck") == ("../x/ck", None), "a name that is no folder is kept as it is"


def test_a_new_checkpoint_at_the_same_path_gets_its_own_record_and_epoch_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_gpt2(tmp_path / "ck", seed=0)
    first = config("ck")
    save_gpt2(tmp_path / "ck", seed=0)
    assert config("ck") == first, "the same checkpoint saved again is the same backbone"
    save_gpt2(tmp_path / "ck", seed=1)
    second = config("ck")
    env = Environment(results_dir="results", cache_dir="cache")
    assert second.backbone == first.backbone and second.backbone_fingerprint != first.backbone_fingerprint
    assert record_path(env.results_dir, second) != record_path(env.results_dir, first)
    assert checkpoint_path(second, env) != checkpoint_path(first, env)


def test_the_fingerprint_reads_small_files_whole_and_samples_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "pytorch_model.bin"
    weights.write_bytes(bytes(4 * SAMPLE_BLOCKS * BLOCK_BYTES))
    base = checkpoint_fingerprint(tmp_path)
    (tmp_path / ".lock").write_text("x")
    assert checkpoint_fingerprint(tmp_path) == base, "hidden files do not count"
    (tmp_path / "config.json").write_text('{"n": 1}')
    changed = checkpoint_fingerprint(tmp_path)
    assert changed != base
    data = bytearray(weights.read_bytes())
    data[-1] = 1  # the last block is always sampled
    weights.write_bytes(bytes(data))
    assert checkpoint_fingerprint(tmp_path) != changed


def test_a_folder_named_like_a_preset_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_backbone("t5-tiny")
    (tmp_path / "t5-tiny").mkdir()
    with pytest.raises(BackboneError, match="is a preset, and also a folder in the working directory"):
        check_backbone("t5-tiny")


def test_the_record_counts_its_processes_and_old_records_read_as_one(tmp_path: Path) -> None:
    assert hardware(torch.device("cpu"), 4)["processes"] == 4
    old = finished("cid")
    assert "processes" not in old["hardware"]
    write_json_atomic(tmp_path / "old.json", old)
    assert read_record(tmp_path / "old.json")["hardware"] == old["hardware"]
    results = tmp_path / "results"
    for seed, processes in ((1, 1), (2, 4)):
        path = write_record(results, "cid", seed=seed, config={"backbone": "t5-tiny"})
        record = json.loads(path.read_text())
        write_json_atomic(path, record | {"hardware": {"cpu_count": 2, "processes": processes}})
    records = [json.loads(path.read_text()) for path in sorted(results.rglob("*.json"))]
    assert cost_frame(records)["hardware"].tolist() == ["2-core CPU: model not recorded; 2-core CPU: model not "
                                                        "recorded (4 processes)"]
    assert machines(records) == "2-core CPU: model not recorded, 2-core CPU: model not recorded (4 processes)"


def test_a_cached_hugging_face_name_is_fingerprinted_by_the_snapshot_it_loads(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``org/model`` in the cache keeps its name and gets the fingerprint of the snapshot ``main`` points to: a
    newer revision fetched later is another experiment. A name not cached, and a preset, get none."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    repo = cache / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    for revision, seed in (("a" * 40, 0), ("b" * 40, 1)):
        save_gpt2(repo / "snapshots" / revision, seed)
    fingerprints = []
    for revision in ("a" * 40, "b" * 40):
        (repo / "refs" / "main").write_text(revision)
        name, fingerprint = backbone_identity("org/tiny")
        assert name == "org/tiny" and fingerprint == checkpoint_fingerprint(repo / "snapshots" / revision)
        fingerprints.append(fingerprint)
    assert fingerprints[0] != fingerprints[1]
    assert backbone_identity("org/absent") == ("org/absent", None)
    assert backbone_identity("t5-tiny") == ("t5-tiny", None)
