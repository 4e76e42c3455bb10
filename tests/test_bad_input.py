"""Bad input and faults at the edges, as a user meets them: every case checks the exit code, that the message
names the file, field or option, and that no traceback is printed.

Covered: data files in every source format, CLI options, YAML keys and types, names that could leave the data
folder, output locations (not folders, not writable, disk full while writing), SIGINT / SIGTERM, crafted
cache files and checkpoints (a pickle whose payload would create a marker file), and several workers on one
results folder. Most cases call :func:`benchmark.cli.main` in-process; signals, lock take-over and concurrent
workers use subprocesses.
"""
from __future__ import annotations

import builtins
import errno
import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmark import records
from benchmark.cli import main
from benchmark.config import resolve
from benchmark.safeio import safe_load, save_tensors
from identifiers.encoders import TfidfSvdEncoder, item_embeddings
from identifiers.registry import get_scheme
from recommenders import trainer
from recommenders.text import text_vocabulary
from tests.conftest import make_context

ROOT = Path(__file__).resolve().parents[1]
EXIT_USAGE, EXIT_WRITE, EXIT_SIGINT, EXIT_SIGTERM = 2, 4, 130, 143


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``main(argv)``'s exit code (argparse's SystemExit included), stdout and stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def run_argv(tmp_path: Path, identifiers: str = "pop", *extra: str) -> list[str]:
    return ["run", "--identifiers", identifiers, "--datasets", "synthetic", "--profile", "smoke", "--results-dir",
            str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress", *extra]


def one_epoch_config(tmp_path: Path, epochs: int = 1) -> Path:
    config = tmp_path / "short.yaml"
    config.write_text(f"train: {{epochs: {epochs}, patience: {epochs}}}\n")
    return config


class Payload:
    """Unpickling this object creates ``marker``: the stand-in for arbitrary code in a crafted file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def plant(path: Path, marker: Path, raw: bool = False) -> Path:
    """A malicious file at ``path``: a torch file (or a bare pickle) whose loading with pickle runs the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw:
        path.write_bytes(pickle.dumps({"state": Payload(marker)}))
    else:
        torch.save({"state": Payload(marker), "report": {}}, path)
    return path


# Data files, one source format after another ---------------------------------------------------------------

def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_gz(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


REVIEW = '{"reviewerID": "R1", "asin": "A1", "unixReviewTime": 1}'
DATA_CASES = {
    "folder-missing": ("beauty", {}, "amazon2014-p5/beauty not found"),
    "p5-missing": ("beauty", {"amazon2014-p5/beauty/item_text.txt": "A apple\n"}, "user_sequence.txt not found"),
    "p5-short-line": ("beauty", {"amazon2014-p5/beauty/user_sequence.txt": "U1 A B\nU2\n"},
                      "user_sequence.txt line 2"),
    "p5-duplicate-user": ("toys", {"amazon2014-p5/toys/user_sequence.txt": "U1 A B\nU1 C D\n"},
                          "user 'U1' already has a sequence on line 1"),
    "lcrec-missing-items": ("office", {"amazon-lcrec/office/Office.inter.json": '{"0": [1, 2]}'},
                            "*.item.json not found"),
    "lcrec-bad-json": ("office", {"amazon-lcrec/office/Office.inter.json": '{"0": [1,, 2]}',
                                  "amazon-lcrec/office/Office.item.json": "{}"}, "Office.inter.json line 1"),
    "lcrec-wrong-shape": ("scientific", {"amazon-lcrec/scientific/S.inter.json": '{"0": [1, {"x": 2}]}',
                                         "amazon-lcrec/scientific/S.item.json": "{}"},
                          "S.inter.json: user '0': expected a list of item ids"),
    "recbole-missing": ("ml-100k", {"movielens-100k/readme.txt": "x"}, "*.inter not found"),
    "recbole-header": ("ml-100k", {"movielens-100k/ml.inter": "user_id:token\tmovie:token\nu\ta\n"},
                       "ml.inter: header lacks the field 'item_id'"),
    "recbole-short-row": ("ml-100k", {"movielens-100k/ml.inter":
                                      "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\tb\n"},
                          "ml.inter line 3: expected 3 tab-separated fields"),
    "recbole-timestamp": ("ml-100k", {"movielens-100k/ml.inter":
                                      "user_id:token\titem_id:token\ttimestamp:float\nu\ta\tsoon\n"},
                          "expected a finite number in field 'timestamp', got 'soon'"),
    "recbole-empty-user": ("ml-100k", {"movielens-100k/ml.inter": "user_id:token\titem_id:token\nu\ta\n\tb\n"},
                           "ml.inter line 3: field 'user_id' is empty"),
    "recbole-empty-item": ("ml-100k", {"movielens-100k/ml.inter": "user_id:token\titem_id:token\nu\ta\n",
                                       "movielens-100k/ml.item": "item_id:token\tmovie_title:token_seq\n \tx\n"},
                           "ml.item line 2: field 'item_id' is empty"),
    "recbole-infinite-timestamp": ("ml-100k", {"movielens-100k/ml.inter":
                                               "user_id:token\titem_id:token\ttimestamp:float\nu\ta\tinf\n"},
                                   "expected a finite number in field 'timestamp', got 'inf'"),
    "lcrec-empty-user": ("office", {"amazon-lcrec/office/Office.inter.json": '{"": [1, 2]}',
                                    "amazon-lcrec/office/Office.item.json": "{}"},
                         "Office.inter.json: a user id is empty"),
    "lcrec-empty-item": ("office", {"amazon-lcrec/office/Office.inter.json": '{"0": [1, ""]}',
                                    "amazon-lcrec/office/Office.item.json": "{}"},
                         "Office.inter.json: user '0': expected a list of item ids (int or non-empty str)"),
    "lcrec-repeated-user": ("office", {"amazon-lcrec/office/Office.inter.json": '{"0": [1, 2], "0": [3, 4]}',
                                       "amazon-lcrec/office/Office.item.json": "{}"},
                            "Office.inter.json: key(s) '0' appear more than once"),
    "lcrec-categories-object": ("office", {"amazon-lcrec/office/Office.inter.json": '{"0": [1, 2]}',
                                           "amazon-lcrec/office/Office.item.json":
                                           '{"1": {"title": "a", "categories": {"a": 1}}}'},
                                "Office.item.json: item '1', field 'categories': expected a comma-separated path"),
    "lcrec-brand-object": ("office", {"amazon-lcrec/office/Office.inter.json": '{"0": [1, 2]}',
                                      "amazon-lcrec/office/Office.item.json": '{"1": {"brand": {"en": "x"}}}'},
                           "Office.item.json: item '1', field 'brand': expected text, got '{\"en\": \"x\"}'"),
    "p5-meta-title-object": ("beauty", {"amazon2014-p5/beauty/user_sequence.txt": "U1 A B\n",
                                        "amazon2014-p5/beauty/item_meta.jsonl":
                                        '{"asin": "A", "title": {"en": "x"}, "categories": []}\n'},
                             "item_meta.jsonl line 1, field 'title': expected text"),
    "amazon-missing": ("amazon2014:Beauty", {}, "reviews_Beauty_5.json.gz"),
    "amazon-bad-json": ("amazon2014:Beauty", {"amazon2014/reviews_Beauty_5.json.gz": [REVIEW, '{"asin": }']},
                        "reviews_Beauty_5.json.gz line 2"),
    "amazon-missing-field": ("amazon2014:Beauty", {"amazon2014/reviews_Beauty_5.json.gz":
                                                   [REVIEW, '{"reviewerID": "R2", "asin": "A1"}']},
                             "reviews_Beauty_5.json.gz line 2: expected a JSON object"),
    "amazon-empty-asin": ("amazon2014:Beauty", {"amazon2014/reviews_Beauty_5.json.gz":
                                                [REVIEW, '{"reviewerID": "R2", "asin": " ", "unixReviewTime": 1}']},
                          "reviews_Beauty_5.json.gz line 2: expected a JSON object with non-empty 'reviewerID'"),
    "amazon-not-gzip": ("amazon2014:Beauty", {"amazon2014/reviews_Beauty_5.json.gz": b"not gzip"},
                        "expected a complete gzip file"),
    "amazon-meta-garbage": ("amazon2014:Beauty", {"amazon2014/reviews_Beauty_5.json.gz": [REVIEW],
                                                  "amazon2014/meta_Beauty.json.gz": ["not a dict"]},
                            "meta_Beauty.json.gz line 1: expected a Python dict literal"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_files_name_the_file(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset, files, message = DATA_CASES[case]
    for name, content in files.items():
        if isinstance(content, bytes):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(content)
        elif isinstance(content, list):
            write_gz(tmp_path / name, content)
        else:
            write(tmp_path / name, content)
    code, _, err = cli(["stats", "--datasets", dataset, "--data-dir", str(tmp_path)], capsys)
    assert code == EXIT_USAGE and message in err


# Command-line options and names ------------------------------------------------------------------------------

OPTION_CASES = [
    (["run", "--identifiers", "nope"], "--identifiers: unknown identifier scheme 'nope'"),
    (["run", "--identifiers", " , "], "--identifiers"),
    (["run", "--identifiers", "pop", "--datasets", "nowhere"], "unknown dataset 'nowhere'"),
    (["run", "--identifiers", "pop", "--datasets", "amazon2014:../../../etc/passwd"],
     "category may hold letters, digits, _, - and & only"),
    (["run", "--identifiers", "pop", "--datasets", "amazon2014:Beauty/../x"], "amazon2014: category"),
    (["stats", "--datasets", "amazon2014:Be auty"], "category may hold"),
    (["stats", "--datasets", "amazon2014:"], "unknown dataset 'amazon2014:'"),
    (["run", "--identifiers", "pop", "--seed", "abc"], "--seed: expected integers from 0 to 4294967295"),
    (["run", "--identifiers", "pop", "--seed", "1,-2"], "--seed"),
    (["run", "--identifiers", "pop", "--seed", "99999999999"], "--seed"),
    (["run", "--identifiers", "pop", "--device", "tpu"], "--device"),
    (["run", "--identifiers", "sasrec", "--backbone", "gpt-17"], "unknown backbone 'gpt-17'"),
    (["run", "--identifiers", "tiger", "--backbone", "bad\nname"], "without control characters"),
    (["run", "--identifiers", "pop", "--profile", "huge"], "--profile"),
    (["run", "--identifiers", "pop", "--split", "random"], "--split"),
    (["run", "--identifiers", "pop", "--k-core", "0"], "--k-core"),
    (["run", "--identifiers", "pop", "--max-history", "x"], "--max-history"),
    (["stats", "--datasets", "synthetic", "--max-history", "1000000000000"], "expected an integer from 1 to 1024"),
    (["run", "--identifiers", "all,nope"], "--identifiers: unknown identifier scheme 'nope'"),
    (["run", "--identifiers", "pop", "--datasets", "all", "--data-dir", "/nonexistent/data"],
     "--data-dir /nonexistent/data: no such folder"),
    (["run", "--identifiers", "pop", "--results-dir", ""], "--results-dir: give a folder"),
    (["list", "--params", "all"], "--params: unknown identifier scheme 'all'; give one of pop"),
    (["download", "beauty,nope", "--data-dir", "/nonexistent/never-made"], "no download source for 'nope'"),
    (["run", "--identifiers", "pop", "--config", "/nonexistent/c.yaml"], "config file /nonexistent/c.yaml"),
    (["list", "--params", "nope"], "--params: unknown identifier scheme"),
    (["download", "nope"], "no download source for 'nope'"),
    (["download", " , "], "download: give at least one dataset name"),
    (["download", "amazon2014:../../x"], "invalid Amazon 2014 category"),
]


@pytest.mark.parametrize("argv, message", OPTION_CASES, ids=[" ".join(a[1:]) for a, _ in OPTION_CASES])
def test_bad_options_exit_2_naming_the_option(argv: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for option, folder in (("--results-dir", "r"), ("--cache-dir", "c")):
        if argv[0] == "run" and option not in argv:
            argv = [*argv, option, str(tmp_path / folder)]
    code, _, err = cli(argv, capsys)
    assert code == EXIT_USAGE and message in err
    assert not list(tmp_path.rglob("*.json")) and not Path("/nonexistent").exists()


def test_a_backbone_path_must_be_a_checkpoint_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(run_argv(tmp_path, "tiger", "--backbone", "/etc/passwd"), capsys)
    assert code == EXIT_USAGE and "backbone '/etc/passwd': a local checkpoint must be a folder" in err


# YAML keys and types -----------------------------------------------------------------------------------------

YAML_CASES = [
    ("run: [unclosed", "invalid YAML"),
    ("- just\n- a list", "expected a mapping with sections run, train, schemes"),
    ("evaluation: {k: 1}", "unknown section(s) ['evaluation']"),
    ("run: 5", "section 'run' must be a mapping"),
    ("run: {max_eval_users: -1}", "run.max_eval_users: expected a value >= 0, got -1"),
    ('run: {max_eval_users: "many"}', "run.max_eval_users: expected an integer, got 'many'"),
    ("run: {seed: 5000000000}", "run.seed: expected an integer from 0 to 4294967295"),
    ("run: {split: random}", "unknown split 'random'"),
    ("run: {ks: [5, 2.5]}", "run.ks[1]: expected an integer, got 2.5"),
    ("train: {valid_metric: mrr@10}", "train.valid_metric 'mrr@10'"),
    ("train: {lr: .nan}", "train.lr: expected a finite number"),
    ("train: {amp: 1}", "train.amp: expected true or false, got 1"),
    ("train: {max_valid_examples: -5}", "train.max_valid_examples: expected a value >= 0"),
    ("schemes: {sasrec: {hiden: 3}}", "unknown parameter 'hiden'"),
    ("schemes: [sasrec]", "section 'schemes' must be a mapping"),
    ("run: {seed: 1}\nrun: {seed: 2}", "repeated key 'run'"),
    ("run: {max_history: 5000}", "run.max_history: expected an integer from 1 to 1024, got 5000"),
    ("run: {ks: [5, 5, 10]}", "run.ks: expected a non-empty list of distinct positive integers"),
    ("schemes: {setrec: {beta_grid: []}}", "beta_grid: expected at least one value"),
    ("run: {backbone: gpt-17}", "run.backbone: unknown backbone 'gpt-17'"),
    ("run: {backbone_dropout: 1.0}", "run.backbone_dropout: expected null or a number in [0, 1), got 1.0"),
    ("run: {backbone_dropout: high}", "run.backbone_dropout: expected"),
    ("run: {ks: [10, 100000]}", "run.ks: cut-off 100000 exceeds the 457 items of dataset 'synthetic'"),
    ("train: {valid_metric: ndcg@458}", "train.valid_metric: cut-off 458 exceeds the 457 items"),
]


@pytest.mark.parametrize("text, message", YAML_CASES, ids=[t for t, _ in YAML_CASES])
def test_bad_yaml_names_the_key(text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text + "\n")
    code, _, err = cli(run_argv(tmp_path, "sasrec", "--config", str(config)), capsys)
    assert code == EXIT_USAGE and message in err
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.json"))


def test_a_lora_target_naming_no_module_stops_before_any_run(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "lora.yaml"
    config.write_text("run: {finetune: lora, lora: {target_modules: [q, nosuch_layer]}}\n")
    code, _, err = cli(run_argv(tmp_path, "pop,tiger", "--config", str(config)), capsys)
    assert code == EXIT_USAGE and "run.lora: lora.target_modules: nosuch_layer name(s) no module of backbone" in err
    assert "linear layers are named k, lm_head, o, q, v, wi, wo" in err and not list(tmp_path.rglob("*.json"))


def test_a_config_that_is_not_utf8_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "binary.yaml"
    config.write_bytes(b"\xff\xfe\x00run")
    code, _, err = cli(run_argv(tmp_path, "sasrec", "--config", str(config)), capsys)
    assert code == EXIT_USAGE and f"config file {config}: not UTF-8 text" in err


# Output locations --------------------------------------------------------------------------------------------

def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a file, not a folder")
    return path


@pytest.mark.parametrize("option, make, problem", [
    ("--results-dir", lambda t: _file(t / "results"), "is not a folder"),
    ("--results-dir", lambda t: _file(t / "blocker") / "results", "cannot be created"),
    ("--cache-dir", lambda t: _file(t / "cache"), "is not a folder"),
    ("--cache-dir", lambda t: _file(t / "cache" / "checkpoints").parent, "checkpoints folder"),
])
def test_unusable_output_folders_stop_before_any_work(option: str, make, problem: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = make(tmp_path)
    argv = run_argv(tmp_path)
    argv[argv.index(option) + 1] = str(path)
    code, out, err = cli(argv, capsys)
    assert code == EXIT_USAGE and option in err and problem in err and str(path) in err
    assert "done" not in out


def test_a_reports_dir_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = _file(tmp_path / "reports")
    code, _, err = cli(["leaderboard", "--results-dir", str(tmp_path), "--reports-dir", str(reports)], capsys)
    assert code == EXIT_USAGE and f"--reports-dir {reports}: is not a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_results_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        code, _, err = cli(run_argv(tmp_path), capsys)
    finally:
        results.chmod(0o755)
    assert code == EXIT_USAGE and "is not writable" in err


def _disk_full(after: int, real):
    """A writer that works ``after`` times, then writes half its output and fails with ENOSPC."""
    calls = []

    def write(payload, target, *args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            (target.write if hasattr(target, "write") else open(target, "w").write)("{\"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(payload, target, *args, **kwargs)
    return write


def test_a_full_disk_while_writing_a_record_exits_4_and_keeps_earlier_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(records.json, "dump", _disk_full(1, json.dump))
    code, out, err = cli(run_argv(tmp_path, "pop", "--seed", "1,2"), capsys)
    assert code == EXIT_WRITE and "No space left on device" in err and "__s2__" in err and "resumes" in err
    [(path, record)] = list(records.iter_records(tmp_path / "results"))
    assert record["seed"] == 1
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")] == [path.name]


def test_a_full_disk_while_writing_a_checkpoint_exits_4_without_a_partial_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch, "save", _disk_full(0, torch.save))
    code, _, err = cli(run_argv(tmp_path, "sasrec", "--config", str(one_epoch_config(tmp_path))), capsys)
    assert code == EXIT_WRITE and "checkpoints" in err and "No space left on device" in err
    assert list((tmp_path / "cache" / "checkpoints").iterdir()) == []
    assert not list(records.iter_records(tmp_path / "results"))


# Interrupts ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raised, code", [(KeyboardInterrupt, EXIT_SIGINT), ("terminated", EXIT_SIGTERM)])
def test_an_interrupt_between_runs_names_the_finished_ones(raised, code: int, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark import runner
    from benchmark.interrupts import Terminated

    real, calls = runner.run_one, []

    def run_one(config, env):
        calls.append(config.run_name)
        if len(calls) == 2:
            raise Terminated if raised == "terminated" else raised
        return real(config, env)

    monkeypatch.setattr(runner, "run_one", run_one)
    exit_code, _, err = cli(run_argv(tmp_path, "pop", "--seed", "1,2"), capsys)
    signal_name = "SIGTERM" if code == EXIT_SIGTERM else "SIGINT"
    assert exit_code == code and f"interrupted by {signal_name} during synthetic__pop__none__loo__smoke__s2" in err
    assert "1 run(s) finished" in err and "synthetic__pop__none__loo__smoke__s1" in err
    assert "Run the same command again to resume" in err
    monkeypatch.undo()
    assert cli(run_argv(tmp_path, "pop", "--seed", "1,2"), capsys)[0] == 0
    assert len(list(records.iter_records(tmp_path / "results"))) == 2


def test_an_interrupt_keeps_the_last_epoch_checkpoint_and_the_same_command_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = trainer.save_tensors

    def save_then_interrupt(path, payload):
        real(path, payload)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_tensors", save_then_interrupt)
    argv = run_argv(tmp_path, "sasrec", "--config", str(one_epoch_config(tmp_path, epochs=2)))
    code, _, err = cli(argv, capsys)
    [checkpoint] = list((tmp_path / "cache" / "checkpoints").glob("*.pt"))
    assert code == EXIT_SIGINT and f"checkpoint of the last finished epoch is kept ({checkpoint})" in err
    monkeypatch.undo()
    assert cli(argv, capsys)[0] == 0
    [(_, record)] = list(records.iter_records(tmp_path / "results"))
    assert record["training"]["resumed_from_epoch"] == 1 and record["training"]["epochs_run"] == 2


def _subprocess_run(tmp_path: Path, identifiers: str, *extra: str) -> subprocess.Popen:
    """The CLI in a child process with SIGINT's default disposition, as a terminal gives it: a test suite started in
    the background by a shell without job control inherits SIGINT ignored, and Python then keeps ignoring it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "benchmark", *run_argv(tmp_path, identifiers, *extra)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, EXIT_SIGINT), (signal.SIGTERM, EXIT_SIGTERM)])
def test_a_real_signal_during_training_exits_with_its_code_and_no_traceback(sig: int, code: int,
                                                                           tmp_path: Path) -> None:
    process = _subprocess_run(tmp_path, "sasrec", "--config", str(one_epoch_config(tmp_path, epochs=200)))
    checkpoints = tmp_path / "cache" / "checkpoints"
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("*.pt")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(sig)
    err = _stderr_after_signal(process, 60)
    assert process.returncode == code, err
    assert "Traceback" not in err and f"interrupted by {signal.Signals(sig).name}" in err
    assert "checkpoint of the last finished epoch is kept" in err and list(checkpoints.glob("*.pt"))


def test_sigterm_to_a_run_with_jobs_stops_its_workers_and_keeps_their_checkpoints(tmp_path: Path) -> None:
    process = _subprocess_run(tmp_path, "sasrec", "--seed", "1,2", "--jobs", "2", "--threads", "1",
                              "--config", str(one_epoch_config(tmp_path, epochs=200)))
    checkpoints = tmp_path / "cache" / "checkpoints"
    deadline = time.monotonic() + 600
    while len(list(checkpoints.glob("*.pt"))) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    err = _stderr_after_signal(process, 120)
    assert process.returncode == EXIT_SIGTERM, err
    assert "Traceback" not in err and err.count("interrupted by SIGTERM during") == 2, err
    assert len(list(checkpoints.glob("*.pt"))) == 2
    assert not [p for p in Path("/proc").glob("[0-9]*") if str(tmp_path) in _cmdline(p)]  # no worker left


def _stderr_after_signal(process: subprocess.Popen, timeout: float) -> str:
    """The stderr of ``process`` once it exits; a test failure with what it printed when it has not exited within
    ``timeout`` seconds of the signal (it is then killed)."""
    try:
        return process.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"no exit within {timeout:g} s of the signal; its stderr ends:\n{process.communicate()[1][-4000:]}")


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


# Crafted cache files and checkpoints -----------------------------------------------------------------------

def test_the_planted_payload_is_live(tmp_path: Path) -> None:
    """The crafted files of the tests below do run code under a plain unpickler; the loaders never run it."""
    marker = tmp_path / "owned"
    torch.load(plant(tmp_path / "x.pt", marker), weights_only=False)
    assert marker.exists()
    marker.unlink()
    assert safe_load(plant(tmp_path / "y.pt", marker, raw=True)) is None and not marker.exists()


@pytest.mark.parametrize("kind", ["cf", "rqvae", "lightgcn", "mq-tokenizer", "anything-new"])
@pytest.mark.parametrize("raw", [False, True], ids=["torch-file", "bare-pickle"])
def test_a_crafted_cache_file_is_reported_and_recomputed_never_run(kind: str, raw: bool, tmp_path: Path,
                                                                   small_synthetic,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ctx = make_context(get_scheme("sasrec"), small_synthetic, tmp_path)
    marker = tmp_path / "owned"
    path = plant(ctx.cache_path(kind, "key", ".pt"), marker, raw)
    saved, cached = ctx.load_or_compute(kind, "key", lambda: {"state": torch.ones(2), "report": {"n": np.int64(3)}})
    assert not marker.exists() and not cached and saved["report"]["n"] == 3
    assert f"warning: {path}: not loaded" in capsys.readouterr().err
    saved, cached = ctx.load_or_compute(kind, "key", lambda: pytest.fail("the safe file was not read"))
    assert cached and torch.equal(saved["state"], torch.ones(2)) and not marker.exists()


def test_a_crafted_embedding_cache_is_reported_and_encoded_again(tmp_path: Path, small_synthetic,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ctx = make_context(get_scheme("sasrec"), small_synthetic, tmp_path)
    encoder = TfidfSvdEncoder()
    item_embeddings(ctx, encoder)
    [path] = list((tmp_path / "embeddings").glob("*.pt"))
    marker = tmp_path / "owned"
    plant(path, marker, raw=True)
    vectors = item_embeddings(ctx, encoder)
    assert not marker.exists() and vectors.shape[0] == small_synthetic.n_items
    assert f"warning: {path}: not loaded" in capsys.readouterr().err
    assert safe_load(path) is not None and ctx.components["text_encoder"]["loaded_from_cache"] is False


def test_a_crafted_vocabulary_cache_is_reported_and_fitted_again(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    corpus = ["red apple pie", "green apple", "blue berry jam"] * 5
    text_vocabulary("t5-tiny", corpus, 60, tmp_path)
    [path] = list((tmp_path / "text_vocab").glob("*.pt"))
    marker = tmp_path / "owned"
    plant(path, marker, raw=True)
    vocab = text_vocabulary("t5-tiny", corpus, 60, tmp_path)
    assert not marker.exists() and vocab.size > 3
    assert f"warning: {path}: not loaded" in capsys.readouterr().err
    json.loads(safe_load(path)["tokenizer"])


def test_a_crafted_checkpoint_is_reported_and_training_starts_over(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = one_epoch_config(tmp_path)
    run = resolve("synthetic", get_scheme("sasrec"), None, "smoke", yaml.safe_load(config.read_text()))
    marker = tmp_path / "owned"
    checkpoint = plant(tmp_path / "cache" / "checkpoints" / f"{run.hash()}.pt", marker)
    code, out, err = cli(run_argv(tmp_path, "sasrec", "--config", str(config)), capsys)
    assert code == 0 and not marker.exists() and f"warning: {checkpoint}: not loaded" in err
    [(_, record)] = list(records.iter_records(tmp_path / "results"))
    assert record["status"] == "ok" and record["training"]["resumed_from_epoch"] == 0


def test_checkpoints_hold_only_what_weights_only_loads(tmp_path: Path) -> None:
    save_tensors(tmp_path / "c.pt", {"report": trainer.TrainReport(curve=[{"x": np.float64(0.5)}]),
                                     "array": np.arange(3)})
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["report"]["curve"] == [{"x": 0.5}] and torch.equal(state["array"], torch.arange(3))


# Several workers on one results folder ---------------------------------------------------------------------

HOLD = ("import sys, time\nfrom filelock import FileLock\nlock = FileLock(sys.argv[1]); lock.acquire()\n"
        "print('locked', flush=True)\ntime.sleep(300)\n")


def test_a_locked_run_is_skipped_and_a_dead_holder_s_lock_is_taken_over(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.records import record_path
    from benchmark.runner import lock_path

    config = resolve("synthetic", get_scheme("pop"), None, "smoke")
    lock = lock_path(record_path(tmp_path / "results", config))
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, out, _ = cli(run_argv(tmp_path), capsys)
        assert code == 0 and f"another process is running it (it holds {lock})" in out
        assert "1 run(s) left to the other process(es)" in out
        assert not list(records.iter_records(tmp_path / "results"))
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists()  # the killed holder's lock file stays, but the kernel released its lock
    code, out, _ = cli(run_argv(tmp_path), capsys)
    assert code == 0 and "done synthetic__pop" in out
    assert len(list(records.iter_records(tmp_path / "results"))) == 1


def test_two_workers_on_one_folder_train_every_config_exactly_once(tmp_path: Path) -> None:
    config = str(one_epoch_config(tmp_path, epochs=2))
    workers = [_subprocess_run(tmp_path, "pop,sasrec", "--config", config, "--seed", "1,2"),
               _subprocess_run(tmp_path, "sasrec,pop", "--config", config, "--seed", "2,1")]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    done = [line.split(":")[0] for out, _ in outputs for line in out.splitlines() if line.startswith("done ")]
    found = list(records.iter_records(tmp_path / "results"))
    assert len(done) == len(set(done)) == len(found) == 4
    assert all(record["status"] == "ok" and record["evaluation"]["test_examples"] > 0 for _, record in found)
    assert not [p for p in (tmp_path / "results").rglob("*") if p.name.endswith(".tmp")]


def test_a_smoke_run_is_capped_recorded_and_marked_in_the_leaderboard(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(run_argv(tmp_path), capsys)[0] == 0
    [(_, record)] = list(records.iter_records(tmp_path / "results"))
    evaluation = record["evaluation"]
    assert evaluation["max_eval_users"] == record["config"]["max_eval_users"] == 300
    assert evaluation["test_users"] == 300 < evaluation["test_examples_total"]
    assert record["config"]["train"]["max_batches"] == 10 and record["config"]["max_fit_steps"] == 100
    code, _, _ = cli(["leaderboard", "--results-dir", str(tmp_path / "results"), "--reports-dir",
                      str(tmp_path / "reports")], capsys)
    table = (tmp_path / "reports" / "leaderboard.md").read_text()
    assert code == 0 and "| pop ¶ " in table and "¶ smoke row: evaluated on a fixed random subset" in table
