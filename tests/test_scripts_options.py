"""The scripts' options: a bad value is a one-line error naming the option, exit code 2, before any work.

Each case calls a script's ``main`` in-process with options that are refused while parsing (or, for a dataset
whose files are missing, right after), so nothing is benchmarked; one case runs a script as a user does.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator
from unittest import mock

import pytest

from benchmark.records import cpu_model
from recommenders.backbones import PRESETS

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
NAMES = ("bench_padding", "bench_decoding", "bench_scaling", "bench_training", "bench_smoke", "tokenrec_cf_check")


@pytest.fixture(scope="module")
def scripts() -> Iterator[dict[str, ModuleType]]:
    """The scripts as modules; the backbone preset that bench_training registers is removed afterwards."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        with mock.patch.dict(PRESETS):
            yield {name: importlib.import_module(name) for name in NAMES}
    finally:
        sys.path.remove(str(SCRIPTS))


def exit_code(script: ModuleType, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``script.main(argv)``'s exit code (argparse's SystemExit included), stdout and stderr."""
    try:
        code = script.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


BAD = [
    ("bench_padding", ["--datasets", "nope"], "--datasets"),
    ("bench_padding", ["--datasets", "synthetic,synthetic"], "--datasets"),
    ("bench_padding", ["--batch-sizes", "0"], "--batch-sizes"),
    ("bench_padding", ["--batch-sizes", "64,064"], "--batch-sizes"),
    ("bench_padding", ["--batch-sizes", "64,,8"], "--batch-sizes"),
    ("bench_padding", ["--k-core", "0"], "--k-core"),
    ("bench_padding", ["--max-history", "100000"], "--max-history"),
    ("bench_padding", ["--split", "random"], "--split"),
    ("bench_padding", ["--seed", "-1"], "--seed"),
    ("bench_padding", ["--data-dir", "{tmp}/missing"], "--data-dir"),
    ("bench_padding", ["--datasets", "beauty", "--data-dir", "{tmp}"], "beauty"),
    ("bench_decoding", ["--items", "0"], "--items"),
    ("bench_decoding", ["--beam", "0"], "--beam"),
    ("bench_decoding", ["--k", "-1"], "--k"),
    ("bench_decoding", ["--k", "30", "--beam", "20"], "--k"),
    ("bench_decoding", ["--batch", "many"], "--batch"),
    ("bench_decoding", ["--users", "0"], "--users"),
    ("bench_decoding", ["--reference-users", "0"], "--reference-users"),
    ("bench_decoding", ["--threads", "-1"], "--threads"),
    ("bench_decoding", ["--tie-tolerance", "nan"], "--tie-tolerance"),
    ("bench_decoding", ["--device", "tpu"], "--device"),
    ("bench_decoding", ["--device", "cuda:99"], "--device"),
    ("bench_decoding", ["--backbone", "no-such-backbone"], "--backbone"),
    ("bench_scaling", ["--paradigms", "set,set"], "--paradigms"),
    ("bench_scaling", ["--paradigms", "graph"], "--paradigms"),
    ("bench_scaling", ["--paradigms", ""], "--paradigms"),
    ("bench_scaling", ["--max-items", "999"], "--max-items"),
    ("bench_scaling", ["--users", "0"], "--users"),
    ("bench_scaling", ["--threads", "0"], "--threads"),
    ("bench_scaling", ["--device", "gpu"], "--device"),
    ("bench_scaling", ["--backbone", "no-such-backbone"], "--backbone"),
    ("bench_scaling", ["--output", "{tmp}"], "--output"),
    ("bench_scaling", ["--output", "{tmp}/a-file/report.md"], "--output"),
    ("bench_training", ["--schemes", "tiger,tiger"], "--schemes"),
    ("bench_training", ["--schemes", "letter"], "--schemes"),
    ("bench_training", ["--steps", "0"], "--steps"),
    ("bench_training", ["--rounds", "0"], "--rounds"),
    ("bench_training", ["--top-ops", "-1"], "--top-ops"),
    ("bench_training", ["--dropout", "1"], "--dropout"),
    ("bench_training", ["--real-backbone", "no-such-backbone"], "--real-backbone"),
    ("bench_training", ["--device", "tpu"], "--device"),
    ("bench_training", ["--append"], "--append"),
    ("bench_training", ["--output", "{tmp}"], "--output"),
    ("bench_smoke", ["--identifiers", "nope"], "--identifiers"),
    ("bench_smoke", ["--identifiers", "tiger,tiger"], "--identifiers"),
    ("bench_smoke", ["--datasets", "nope"], "--datasets"),
    ("bench_smoke", ["--threads", "0"], "--threads"),
    ("bench_smoke", ["--data-dir", "{tmp}/missing"], "--data-dir"),
    ("bench_smoke", ["--datasets", "beauty", "--data-dir", "{tmp}"], "beauty"),
    ("tokenrec_cf_check", ["--dataset", "nope"], "--dataset"),
    ("tokenrec_cf_check", ["--profile", "fast"], "--profile"),
    ("tokenrec_cf_check", ["--seed", "-1"], "--seed"),
    ("tokenrec_cf_check", ["--cache-dir", "{tmp}/a-file"], "--cache-dir"),
    ("tokenrec_cf_check", ["--output", "{tmp}"], "--output"),
    ("tokenrec_cf_check", ["--dataset", "beauty", "--data-dir", "{tmp}", "--cache-dir", "{tmp}/cache"], "beauty"),
]
"""(script, argv, text the error must hold) for every refused option; ``{tmp}`` is a fresh folder holding a file
``a-file``."""


@pytest.mark.parametrize(("name", "argv", "named"), BAD, ids=[f"{n} {' '.join(a)}" for n, a, _ in BAD])
def test_bad_option_exits_2_naming_it(name: str, argv: list[str], named: str, scripts: dict[str, ModuleType],
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("")
    code, out, err = exit_code(scripts[name], [arg.format(tmp=tmp_path) for arg in argv], capsys)
    assert code == 2, err
    assert named in err
    assert out == ""  # nothing was measured or printed before the error


def test_unwritable_output_folder(scripts: dict[str, ModuleType], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes in read-only folders")
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    code, _, err = exit_code(scripts["bench_scaling"], ["--output", str(folder / "report.md")], capsys)
    assert code == 2 and "--output" in err and "not writable" in err


def test_help(scripts: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]) -> None:
    for name in NAMES:
        code, out, _ = exit_code(scripts[name], ["--help"], capsys)
        assert code == 0 and out.startswith("usage:"), name


def test_good_options_parsed(scripts: dict[str, ModuleType], tmp_path: Path) -> None:
    output = tmp_path / "new" / "report.md"
    args = scripts["bench_scaling"].parse_args(["--paradigms", "set, sequence", "--device", "auto",
                                                "--output", str(output)])
    assert args.paradigms == ["set", "sequence"] and args.device in ("cpu", "cuda")
    assert args.output == output and output.parent.is_dir()  # the folder is made before any work
    args = scripts["bench_training"].parse_args(["--schemes", "tiger", "--dropout", "0", "--output", str(output),
                                                 "--append"])
    assert args.schemes == ["tiger"] and args.dropout == 0.0
    assert scripts["bench_training"].parse_args(["--dropout", "0.1", "--real-backbone", "qwen-tiny"]).dropout == 0.1
    assert scripts["bench_decoding"].parse_args(["--k", "0"]).k == 0


def test_reports_name_the_cpu_model(scripts: dict[str, ModuleType]) -> None:
    for name in ("bench_scaling", "bench_training"):
        script = scripts[name]
        assert f"CPU {cpu_model()}," in script.report([], script.parse_args([]), [])


def test_script_run_as_a_user_does() -> None:
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_smoke.py"), "--identifiers", "tigre"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "argument --identifiers: unknown 'tigre'" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_smoke_exits_1_when_a_run_failed(scripts: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    smoke = scripts["bench_smoke"]
    monkeypatch.setattr(smoke, "smoke_run", lambda scheme, *_: {"scheme": scheme, "rc": 2, "wall": 0.0, "cpu": 0.0})
    code, out, err = exit_code(smoke, ["--identifiers", "pop"], capsys)
    assert code == 1 and "| synthetic | pop | 2 |" in out and "1 run(s) failed" in err
