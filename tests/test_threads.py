"""``--threads``: the physical cores a process may use, the pools it sets, its validation and its record."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info

from benchmark import threads
from benchmark.cli import main


def _topology(root: Path, siblings: dict[int, str]) -> Path:
    """A fake ``/sys/devices/system/cpu``: ``core_cpus_list`` of each logical CPU."""
    for cpu, listed in siblings.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "core_cpus_list").write_text(listed + "\n")
    return root


@pytest.mark.parametrize("affinity, quota, expected", [
    ({0, 1, 2, 3}, None, 2),        # two cores with two hyper-threads each
    ({0, 2}, None, 1),              # both hyper-threads of core 0
    ({0, 1}, None, 2),              # one hyper-thread of each core
    ({0, 1, 2, 3}, "150000 100000", 2),
    ({0, 1, 2, 3}, "50000 100000", 1),
    ({0, 1, 2, 3}, "max 100000", 2),
])
def test_available_cores_counts_physical_cores_of_the_affinity_within_the_quota(
        affinity: set[int], quota: str | None, expected: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "CPU_TOPOLOGY", _topology(tmp_path / "cpu", {0: "0,2", 1: "1,3", 2: "0,2",
                                                                              3: "1,3"}))
    cgroup = tmp_path / "cpu.max"
    if quota is not None:
        cgroup.write_text(quota + "\n")
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", cgroup)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: affinity)
    assert threads.available_cores() == expected


def test_without_a_topology_every_cpu_of_the_affinity_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "CPU_TOPOLOGY", tmp_path / "absent")
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", tmp_path / "absent.max")
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 5, 7})
    assert threads.available_cores() == 3


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("0", None), ("x", None), ("", None)])
def test_the_default_is_omp_num_threads_when_set(value: str, expected: int | None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr(threads, "available_cores", lambda: 5)
    assert threads.default_threads() == (expected or 5)


def test_set_threads_sets_torch_and_every_loaded_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in threads.THREAD_VARIABLES:
        monkeypatch.setenv(name, "1")
    before = torch.get_num_threads()
    try:
        effect = threads.set_threads(2)
        assert torch.get_num_threads() == 2 and effect["torch"] == 2
        assert all(pool["num_threads"] == 2 for pool in threadpool_info())
        assert set(effect) == {"torch"} | {f"{p['internal_api']}:{Path(p['filepath']).name}" for p in threadpool_info()}
        assert all(threads.os.environ[name] == "2" for name in threads.THREAD_VARIABLES)
    finally:
        threads.set_threads(before)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
@pytest.mark.parametrize("command", [["run", "--identifiers", "pop"], ["tune", "--identifiers", "sasrec",
                                                                        "--trials", "0"]])
def test_bad_threads_exit_2_naming_the_option(command: list[str], value: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--threads", value])
    assert exit_info.value.code == 2
    assert f"argument --threads: expected an integer >= 1, got '{value}'" in capsys.readouterr().err


def test_threads_are_recorded_but_not_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in threads.THREAD_VARIABLES:
        monkeypatch.setenv(name, "1")
    before = torch.get_num_threads()
    paths = {}
    try:
        for count in (1, 2):
            results = tmp_path / f"results{count}"
            assert main(["run", "--identifiers", "pop", "--profile", "smoke", "--threads", str(count), "--no-progress",
                         "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache")]) == 0
            [paths[count]] = results.rglob("*.json")
    finally:
        threads.set_threads(before)
    one, two = (json.loads(paths[count].read_text()) for count in (1, 2))
    assert paths[1].name == paths[2].name and one["config_hash"] == two["config_hash"]
    assert (one["environment"]["threads"], two["environment"]["threads"]) == (1, 2)
    assert (one["hardware"]["torch_threads"], two["hardware"]["torch_threads"]) == (1, 2)
    assert one["metrics"] == two["metrics"]
