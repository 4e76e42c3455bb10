"""Command line: ``python -m benchmark {list,stats,run,tune,leaderboard,download}``.

Parsing and error messages only; the work happens in the runner, the data registry and the reports.
Invalid names or options, and output folders that are not writable folders, exit with code 2 (before any work)
and list the valid choices; a training that diverges (loss NaN or infinite) exits with code 3; a write that
fails (disk full) exits with code 4; SIGINT and SIGTERM exit with 130 and 143. Each keeps every record
finished before it (and an interrupt the current training's last epoch checkpoint).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmark import workers
from benchmark.config import (
    MAX_HISTORY,
    MAX_SEED,
    PROFILES,
    SPLITS,
    ConfigError,
    Environment,
    RunConfig,
    read_user_config,
    resolve,
)
from benchmark.data.dataset import DataError, Dataset
from benchmark.data.quality import check_content, coverage_line, data_warnings
from benchmark.data.registry import SPECS, check_dataset_name, dataset_names, is_present, load_dataset, resolve_data_dir
from benchmark.interrupts import EXIT_CODES, Interrupted, Terminated, signal_name, sigterm_raises
from benchmark.reports import GROUP_SCHEMES
from benchmark.safeio import OutputDirError, WriteError, check_input_dir, check_output_dir
from benchmark.splits import SplitError, make_split
from benchmark.threads import default_threads, set_threads

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_WRITE = 4


class UsageError(Exception):
    """Bad user input: printed without a traceback, exit code 2."""


def _dataset_names(value: str, option: str) -> list[str]:
    """The comma-separated names of ``value``, at least one (``option`` names the argument in the error)."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UsageError(f"{option}: give at least one dataset name; choose from {', '.join(dataset_names())}")
    return names


def _datasets(value: str, data_dir: str | None) -> list[str]:
    """The named datasets; ``all`` means every registered one whose folder exists (the others are noted). A
    ``--data-dir`` that is not a folder is an error (a mistyped one would otherwise leave only ``synthetic``)."""
    if data_dir:
        check_input_dir(data_dir, "--data-dir",
                        "the folder that holds the datasets' folders (`python -m benchmark download NAME` makes it)")
    if value.strip() == "all":
        present = [name for name in SPECS if is_present(name, data_dir)]
        absent = [name for name in SPECS if name not in present]
        if not present:
            raise UsageError(f"--datasets all: no dataset folder under {resolve_data_dir(data_dir)}/")
        if absent:
            print(f"note: --datasets all skips {', '.join(absent)}: no folder under {resolve_data_dir(data_dir)}/ "
                  "(pass --data-dir, or fetch one with `python -m benchmark download NAME`)", file=sys.stderr)
        return present
    names = _dataset_names(value, "--datasets")
    for name in names:
        try:
            check_dataset_name(name)
        except KeyError as error:
            raise UsageError(f"--datasets: {error.args[0]}") from error
    return names


def _schemes(value: str) -> list[str]:
    from identifiers.registry import expand, schemes

    try:
        names = expand(value)
    except KeyError as error:
        raise UsageError(f"--identifiers: {error.args[0]}") from error
    if not names:
        raise UsageError(f"--identifiers: give at least one name; choose from all, {', '.join(schemes())}")
    return names


def _seeds(value: str | None) -> list[int | None]:
    """``--seed``: one seed or comma-separated seeds, each 0 .. 2**32-1; None (the config's seed) when absent."""
    if value is None:
        return [None]
    parts = [part.strip() for part in value.split(",")]
    if not all(part.isdecimal() and int(part) <= MAX_SEED for part in parts):
        raise UsageError(f"--seed: expected integers from 0 to {MAX_SEED}, comma-separated (e.g. 1,2,3); "
                         f"got '{value}'")
    return list(dict.fromkeys(int(part) for part in parts))


def _positive(text: str, high: int | None = None) -> int:
    """An integer >= 1 (and <= ``high`` when given) parsed from ``text``; ``ArgumentTypeError`` otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or (high is not None and value > high):
        expected = "an integer >= 1" if high is None else f"an integer from 1 to {high}"
        raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'")
    return value


def _at_least_one(text: str) -> int:
    """argparse type of ``--k-core`` and ``--threads``: an integer >= 1."""
    return _positive(text)


def _jobs_option(text: str) -> int | str:
    """argparse type of ``--jobs``: an integer >= 1 or ``auto``."""
    if text == "auto":
        return text
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or auto, got '{text}'") from None


def _history(text: str) -> int:
    """argparse type of ``--max-history``: an integer from 1 to :data:`~benchmark.config.MAX_HISTORY`."""
    return _positive(text, MAX_HISTORY)


def _user_config(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """The ``--config`` YAML (empty without one), its ``schemes`` sections checked before any work: every scheme
    named exists and its parameters resolve (for ``tune`` too: the best parameters' YAML carries every section to
    ``run --config``)."""
    from identifiers.registry import get_scheme, schemes

    user = read_user_config(args.config) if args.config else {}
    unknown = sorted(set(user.get("schemes") or {}) - set(schemes()))
    if unknown:
        raise ConfigError(f"config file {args.config}: schemes: unknown scheme(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(schemes())}")
    for name in user.get("schemes") or {}:
        resolve(dataset, get_scheme(name), None, args.profile, user)
    return user


def _check_cache_dir(cache_dir: str) -> None:
    """``--cache-dir`` and its checkpoints folder: made when missing, writable folders (:class:`OutputDirError`)."""
    for folder, option in ((cache_dir, "--cache-dir"),
                           (Path(cache_dir) / "checkpoints", "--cache-dir checkpoints folder")):
        check_output_dir(folder, option)


def _threads(args: argparse.Namespace, jobs: int = 1) -> int:
    """Set torch's and the BLAS / OpenMP thread pools to ``--threads`` (default: $OMP_NUM_THREADS when set, else the
    physical cores available to this process, :func:`benchmark.threads.default_threads`, shared out among ``jobs``
    worker processes) before any work; the count used."""
    threads = args.threads or max(1, default_threads() // jobs)
    set_threads(threads)
    return threads


def _jobs(args: argparse.Namespace, configs: list[RunConfig]) -> int:
    """``run --jobs``: the number given, or for ``auto`` one worker process per physical core available to this
    process (:func:`benchmark.threads.default_threads`; per ``--threads`` cores when it is given), at most one
    per config without a record and one per 3 GiB of available memory (:func:`benchmark.workers.auto_count`);
    1 with ``--force``, under ``accelerate launch`` and on a CUDA device (the runs would share its one GPU).
    ``configs`` are the command's resolved configs, ``--device`` already checked."""
    if args.jobs != "auto":
        return args.jobs
    from benchmark.records import record_path
    from benchmark.runner import resolve_device
    from recommenders import parallel

    if args.force or parallel.launched() or resolve_device(args.device).type != "cpu":
        return 1
    pending = sum(not record_path(args.results_dir, config).is_file() for config in configs)
    return workers.auto_count(default_threads(), args.threads or 1, pending)


def _backbones(text: str | None) -> list[str | None]:
    """``--backbone``: one name or a comma-separated grid (None: the config's backbone)."""
    if text is None:
        return [None]
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise UsageError(f"--backbone '{text}': expected comma-separated backbone names")
    return list(dict.fromkeys(names))


def _named_backbones(grid: list[str | None], user: dict[str, Any]) -> set[str]:
    """The backbones that ``--backbone`` (``grid``) or else the ``--config``'s ``run.backbone`` names: checked even
    when no selected scheme uses one, so that a mistyped name is reported, not silently ignored."""
    if grid != [None]:
        return {name for name in grid if name is not None}
    named = (user.get("run") or {}).get("backbone")
    return {named} if named is not None else set()


def cmd_list(args: argparse.Namespace) -> int:
    from identifiers.registry import get_scheme, schemes
    from recommenders.backbones import PRESETS, BackboneSpec, finetune_mode, preset_parameters

    if args.params is not None:
        if args.params not in schemes():
            raise UsageError(f"--params: unknown identifier scheme '{args.params}'; give one of {', '.join(schemes())}")
        cls = get_scheme(args.params)
        print(f"{cls.name} ({cls.paradigm}): {cls.citation}\n")
        print((cls.Params.__doc__ or "").strip())
        for profile in PROFILES:
            print(f"\nprofile {profile}: {cls.resolve_params(profile, {})}")
        return 0
    print("datasets:")
    for spec in SPECS.values():
        print(f"  {spec.name:<12} {spec.fmt:<10} {spec.description}")
    print("  amazon2014:<Category>   raw Amazon 2014 reviews_<Category>_5.json.gz + meta_<Category>.json.gz")
    print("\nidentifier schemes:")
    for name, cls in schemes().items():
        print(f"  {name:<10} {cls.paradigm:<10} {cls.citation}")
    print("\nbackbones (parameters with a 2-token text vocabulary, before item tokens and heads):")
    print(f"  {'name':<12} {'family':<7} {'parameters':>12}  {'finetune':<8} description")
    for name, preset in PRESETS.items():
        print(f"  {name:<12} {preset.family:<7} {preset_parameters(name):>12,}  "
              f"{finetune_mode(BackboneSpec(name)):<8} {preset.description}")
    print(f"  {'<name/path>':<12} {'t5/qwen2/causal':<22}  {finetune_mode(BackboneSpec('')):<8} a T5 or any causal LM "
          "checkpoint loadable with from_pretrained from local files (weights are never downloaded)")
    return 0


def _report_content(dataset: Dataset) -> None:
    """Print the dataset's item-content coverage, and its data warnings to stderr."""
    print(f"  {coverage_line(dataset)}")
    for warning in data_warnings(dataset):
        print(f"warning: {warning}", file=sys.stderr)


def cmd_stats(args: argparse.Namespace) -> int:
    for name in _datasets(args.datasets, args.data_dir):
        dataset = load_dataset(name, args.data_dir, args.k_core)
        stats = dataset.stats()
        print(f"{name}: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions, "
              f"density {stats['density']:.5f}, mean history length {stats['mean_history_length']:.2f}, "
              f"timestamps {'yes' if stats['has_timestamps'] else 'no'}, "
              f"categories {'yes' if stats['has_categories'] else 'no'}, "
              f"extras {', '.join(stats['extras']) or 'none'}")
        _report_content(dataset)
        for protocol in SPLITS:
            try:
                split = make_split(dataset, protocol, args.max_history).stats()
            except SplitError as error:
                print(f"  {protocol:<9} not available: {error}")
                continue
            users = {part: f" ({split[part + '_users']:,} users)" if part + "_users" in split else ""
                     for part in ("valid", "test")}
            print(f"  {protocol:<9} train interactions {split['train_interactions']:,}, "
                  f"valid {split['valid_examples']:,}{users['valid']}, "
                  f"test {split['test_examples']:,}{users['test']}, "
                  f"cold test targets {100 * split['cold_test_share']:.2f}% "
                  f"(valid {100 * split['cold_valid_share']:.2f}%)")
    return 0


def _check_lora(configs: list[RunConfig]) -> None:
    """Refuse, before any work, a LoRA target that names no module of a run's backbone, or one LoRA cannot adapt,
    and a rank above what the targets' weights allow (``run.lora``)."""
    from identifiers.base import backbone_spec
    from identifiers.registry import get_scheme
    from recommenders.backbones import BackboneError, check_lora_targets, finetune_mode

    specs = [backbone_spec(c) for c in configs if get_scheme(c.scheme).uses_backbone]
    for name, targets, rank in {(s.name, tuple(s.lora["target_modules"] or ()), s.lora["r"]) for s in specs
                                if finetune_mode(s) == "lora"}:
        try:
            check_lora_targets(name, list(targets) or None, rank)
        except BackboneError as error:
            raise UsageError(f"run.lora: {error}") from error


def _check_models(args: argparse.Namespace, configs: list[RunConfig], grid: list[str | None],
                  user: dict[str, Any]) -> None:
    """``run``'s and ``tune``'s checks of what the configs train on, before any work: the ``--device``, every
    backbone a config uses or ``--backbone`` (``grid``) or ``run.backbone`` names, and the LoRA targets."""
    from benchmark.runner import resolve_device
    from identifiers.registry import get_scheme
    from recommenders.backbones import BackboneError, check_backbone

    try:
        resolve_device(args.device)
    except ValueError as error:
        raise UsageError(f"--device: {error}") from error
    backbones = {c.backbone for c in configs if get_scheme(c.scheme).uses_backbone} | _named_backbones(grid, user)
    for backbone in sorted(backbones):
        try:
            check_backbone(backbone)
        except BackboneError as error:
            raise UsageError(f"{'--backbone' if args.backbone else 'run.backbone'}: {error}") from error
    _check_lora(configs)


def _check_data(configs: list[RunConfig], data_dir: str | None, report: bool) -> dict[tuple[str, int], Dataset]:
    """``run``'s and ``tune``'s checks of the data, before any work: each config's dataset loads (its content
    coverage printed when ``report``), holds the content its scheme needs, splits, and has more items than every
    cut-off. The datasets by (name, k-core)."""
    from identifiers.registry import get_scheme

    loaded: dict[tuple[str, int], Dataset] = {}
    for config in configs:
        key = (config.dataset, config.k_core)
        if key not in loaded:
            loaded[key] = load_dataset(config.dataset, data_dir, config.k_core)
            if report:
                print(f"{config.dataset} (k-core {config.k_core}):")
                _report_content(loaded[key])
        check_content(loaded[key], config.scheme, get_scheme(config.scheme).required_content(config.params))
    for config in {(c.dataset, c.k_core, c.split, c.max_history): c for c in configs}.values():
        make_split(loaded[config.dataset, config.k_core], config.split, config.max_history)
    for config in configs:
        config.check_cutoffs(loaded[config.dataset, config.k_core].n_items)
    return loaded


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.records import record_path
    from benchmark.runner import records_on_other_data, run_all
    from identifiers.base import canonical
    from identifiers.registry import get_scheme
    from recommenders import parallel
    from recommenders.backbones import BackboneError
    from recommenders.trainer import DivergenceError

    given = 1 if args.jobs == "auto" else args.jobs  # auto comes to 1 under a launcher and with --force (_jobs)
    if given > 1 and parallel.launched():
        raise UsageError("--jobs: use 1 under accelerate launch (its processes already share every run)")
    if given > 1 and args.force:
        raise UsageError("--force: not with --jobs above 1 (each worker would run every config again); remove the "
                         "records to redo and run without --force")
    datasets, names, seeds = _datasets(args.datasets, args.data_dir), _schemes(args.identifiers), _seeds(args.seed)
    check_output_dir(args.results_dir, "--results-dir")
    _check_cache_dir(args.cache_dir)
    user = _user_config(args, datasets[0])
    grid = _backbones(args.backbone)
    cli = {"split": args.split, "max_history": args.max_history, "k_core": args.k_core, "finetune": args.finetune}
    resolved = [canonical(resolve(d, get_scheme(s), seed, args.profile, user, {**cli, "backbone": b})) for b in grid
                for d in datasets for seed in seeds for s in names]
    configs = list({c.hash(): c for c in resolved}.values())
    _check_models(args, configs, grid, user)
    jobs = _jobs(args, configs)
    threads = _threads(args, jobs)
    if args.jobs == "auto" and not args.worker:
        print(f"--jobs auto: {jobs} process(es) of {threads} torch thread(s) each")
    env = Environment(device=args.device, data_dir=args.data_dir, results_dir=args.results_dir,
                      reports_dir=args.reports_dir, cache_dir=args.cache_dir, progress=not args.no_progress,
                      threads=threads, jobs=jobs)
    loaded = _check_data(configs, env.data_dir, report=not args.worker)  # a worker's starter has reported the data
    stale = [] if args.force else records_on_other_data(configs, env, loaded)
    if stale:
        raise UsageError("records that this run would skip were made on other data (the dataset's files changed, "
                         "or another --data-dir): " + "; ".join(stale) + ". Pass another --results-dir for the new "
                         "data, or --force to run them again")
    started = [] if args.worker else workers.start(args.argv, jobs, threads)
    try:
        paths = run_all(configs, env, force=args.force)
    except BackboneError as error:
        workers.stop(started)
        raise UsageError(f"backbone: {error}") from error
    except DivergenceError as error:
        workers.stop(started)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except BaseException:
        workers.stop(started)
        raise
    failed = [code for code in workers.wait(started) if code != 0]
    if failed:
        print(f"error: {len(failed)} of the {len(started)} other worker(s) stopped with exit code(s) "
              f"{', '.join(map(str, failed))} (their messages are above); finished records and checkpoints are kept, "
              "the same command resumes", file=sys.stderr)
        return failed[0]
    if started:
        paths = [path for path in (record_path(args.results_dir, c) for c in configs) if path.is_file()]
    others = len(configs) - len(paths)
    print(f"{len(paths)} record(s) under {args.results_dir}/" + (f"; {others} run(s) left to the other process(es) "
                                                                 "holding their locks" if others else "")
          + "; build tables with `python -m benchmark leaderboard`")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from benchmark.tuning import TuneError, TuneSettings, check_request, check_unpinned, tunable_space, tune
    from identifiers.base import canonical
    from identifiers.registry import get_scheme
    from recommenders.backbones import BackboneError
    from recommenders.trainer import DivergenceError

    threads = _threads(args)
    datasets, names, seeds = _datasets(args.datasets, args.data_dir), _schemes(args.identifiers), _seeds(args.seed)
    if len(datasets) != 1 or len(names) != 1 or len(seeds) != 1:
        raise UsageError("tune: give exactly one scheme (--identifiers), one dataset (--datasets) and at most one "
                         "--seed; a study tunes one of each")
    if args.trials < 0:
        raise UsageError(f"--trials: expected an integer >= 0, got {args.trials}")
    try:
        tunable_space(names[0])  # before anything is created
    except TuneError as error:
        raise UsageError(str(error)) from error
    user = _user_config(args, datasets[0])
    try:
        check_unpinned(user, names[0])
    except TuneError as error:
        raise UsageError(str(error)) from error
    cli = {key: value for key, value in {"split": args.split, "backbone": args.backbone,
                                         "max_history": args.max_history, "k_core": args.k_core}.items()
           if value is not None}
    base = canonical(resolve(datasets[0], get_scheme(names[0]), seeds[0], args.profile, user, cli))
    _check_models(args, [base], [args.backbone], user)
    settings = TuneSettings(trials=args.trials, storage=args.storage, study_name=args.study_name, output=args.output,
                            final_run=not args.no_final_run, force=args.force)
    try:  # the study name and storage URL, then --results-dir and --output (made when missing)
        check_request(base, settings, args.results_dir)
    except TuneError as error:
        raise UsageError(str(error)) from error
    _check_cache_dir(args.cache_dir)
    _check_data([base], args.data_dir, report=True)
    env = Environment(device=args.device, data_dir=args.data_dir, results_dir=args.results_dir,
                      reports_dir=args.reports_dir, cache_dir=args.cache_dir, progress=not args.no_progress,
                      threads=threads)
    try:
        done = tune(base, user, cli, env, settings)
    except TuneError as error:
        raise UsageError(str(error)) from error
    except BackboneError as error:  # what only building the model finds; the study keeps its finished trials
        raise UsageError(f"backbone: {error}") from error
    except DivergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    best = done["tuned_from"]
    print(f"study {done['study']} ({done['storage']}): best trial {best['best_trial']}, validation "
          f"{best['valid_metric']} {best['best_valid']:.4f}, {best['best_params']}; trials {best['trials']}")
    print(f"best parameters: {done['best_config']} (`run --config` takes it)")
    if done["record"]:
        print(f"test record: {done['record']}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.records import check_results_dir, scan_records
    from benchmark.reports.costs import build_cost_report
    from benchmark.reports.groups import build_group_report
    from benchmark.reports.html import build_html_report
    from benchmark.reports.identifiers import build_identifier_report
    from benchmark.reports.leaderboard import build_leaderboard
    from benchmark.reports.scaling import build_scaling_report

    results = check_results_dir(args.results_dir, "--results-dir")
    reports = check_output_dir(args.reports_dir, "--reports-dir")
    scan = scan_records(results)
    for problem in scan.problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    try:
        written = build_leaderboard(scan, reports)
        if written:
            written += [*build_identifier_report(scan, reports), *build_cost_report(scan, reports),
                        *build_group_report(scan, reports, args.groups), *build_scaling_report(scan, reports)]
            written += build_html_report(scan, reports, written)
    except OSError as error:
        raise WriteError(f"cannot write the reports under {reports}: {error.strerror or error}") from error
    if not written:
        raise UsageError(f"no run records under {args.results_dir}/; run `python -m benchmark run` first")
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from benchmark.data.download import download, source

    names = _dataset_names(args.datasets, "download")
    for name in names:
        source(name)  # every name checked before any download starts
    folder = check_output_dir(resolve_data_dir(args.data_dir), "--data-dir")
    for name in names:
        print(f"{name}: files in {download(name, folder)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,stats,run,tune,leaderboard,download}")

    def run_options(p: argparse.ArgumentParser) -> None:
        """The options ``run`` and ``tune`` share: data shaping, the config file, the device and the folders."""
        p.add_argument("--max-history", type=_history, default=None)
        p.add_argument("--k-core", type=_at_least_one, default=None)
        p.add_argument("--config", default=None, help="YAML overriding benchmark/defaults.yaml (run/train/schemes)")
        p.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda or cuda:N")
        p.add_argument("--threads", type=_at_least_one, default=None,
                       help="CPU threads of torch and the BLAS/OpenMP pools, for every fit of the run (default: "
                            "$OMP_NUM_THREADS when set, else the physical cores available to this process: its CPU "
                            "affinity counted one per core, within the cgroup quota); not part of the config hash")
        p.add_argument("--results-dir", default="results")
        p.add_argument("--reports-dir", default="reports")
        p.add_argument("--cache-dir", default=".cache", help="embeddings, CF encoders and epoch checkpoints")
        p.add_argument("--no-progress", action="store_true",
                       help="no progress bars (a line per training epoch is still printed)")
        data_options(p)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", default=None,
                       help="folder holding the datasets' folders (default: $GENREC_DATA_DIR or ./datasets)")

    p = sub.add_parser("list", help="datasets, identifier schemes and backbones")
    p.add_argument("--params", metavar="SCHEME", help="show one scheme's hyper-parameters per profile")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("stats", help="dataset statistics and, per split, the share of cold test targets")
    p.add_argument("--datasets", required=True, help="comma-separated dataset names, or all")
    p.add_argument("--k-core", type=_at_least_one, default=5)
    p.add_argument("--max-history", type=_history, default=20)
    data_options(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("run", help="train and evaluate schemes on datasets; one record per run")
    p.add_argument("--identifiers", required=True, help="comma-separated scheme names, or all")
    p.add_argument("--datasets", default="synthetic", help="comma-separated dataset names (default: synthetic)")
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--seed", default=None, help="seed, or comma-separated seeds (default: from the config)")
    p.add_argument("--split", default=None, choices=SPLITS)
    p.add_argument("--backbone", default=None,
                   help="backbone preset or from_pretrained name/path, or a comma-separated grid of them")
    p.add_argument("--finetune", default=None, choices=("auto", "full", "lora"),
                   help="backbone fine-tuning (default run.finetune: auto = lora for checkpoints, full for presets)")
    run_options(p)
    p.add_argument("--force", action="store_true", help="re-run configs whose record exists")
    p.add_argument("--jobs", type=_jobs_option, default=1,
                   help="worker processes sharing the runs through their lock files (default 1), or auto: on a CPU "
                        "one per physical core (per --threads cores when given), at most one per config without a "
                        "record and one per 3 GiB of available memory; 1 on CUDA and with --force. --threads is "
                        "then per worker (default: the physical cores divided among the workers). Pays off for "
                        "small models on a CPU; times in the records include the other workers' contention")
    p.add_argument(workers.WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tune", help="search a scheme's declared hyper-parameters on validation (optuna), then "
                                    "run the best on test")
    p.add_argument("--identifiers", required=True, help="one scheme name")
    p.add_argument("--datasets", default="synthetic", help="one dataset name (default: synthetic)")
    p.add_argument("--trials", type=int, required=True, help="trials this worker adds to the study (0: none, only "
                                                              "the best so far is written and run)")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL of the study (default: sqlite:///RESULTS_DIR/"
                                                   "tuning/STUDY.db); workers sharing it share the study")
    p.add_argument("--study-name", default=None,
                   help="default: dataset__scheme__backbone__split__profile__sSEED")
    p.add_argument("--output", default=None, help="YAML of the best parameters (default: RESULTS_DIR/tuning/"
                                                  "STUDY.yaml)")
    p.add_argument("--no-final-run", action="store_true", help="do not run the best config on test afterwards")
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--seed", default=None, help="one seed (default: from the config)")
    p.add_argument("--split", default=None, choices=SPLITS)
    p.add_argument("--backbone", default=None, help="backbone preset or from_pretrained name/path")
    run_options(p)
    p.add_argument("--force", action="store_true", help="re-run the final test run when its record exists")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("leaderboard", help="tables (md, csv, tex), analyses, figures and index.html from the records")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--reports-dir", default="reports")
    p.add_argument("--groups", default="interactions", choices=GROUP_SCHEMES,
                   help="popularity groups: an equal number of training interactions (default) or of items per "
                        "group")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("download", help="fetch a dataset's files from its public source")
    p.add_argument("datasets", help="comma-separated dataset names, e.g. beauty or amazon2014:Beauty")
    data_options(p)
    p.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with sigterm_raises():
            return args.func(args)
    except (UsageError, ConfigError, DataError, SplitError, OutputDirError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except WriteError as error:
        print(f"error: {error}; records finished before it are kept, the same command resumes once there is room",
              file=sys.stderr)
        return EXIT_WRITE
    except Interrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        return error.exit_code
    except (KeyboardInterrupt, Terminated) as error:
        name = signal_name(error)
        print(f"stopped: interrupted by {name} while no run or trial was training; every record and finished "
              "trial written so far is kept. Run the same command again.", file=sys.stderr)
        return EXIT_CODES[name]


if __name__ == "__main__":
    sys.exit(main())
