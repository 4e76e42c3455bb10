"""Hyper-parameter search on validation: ``python -m benchmark tune`` (optuna).

The search space is the scheme's own: the ``Params`` fields declared ``param(..., tune=...)``
(:func:`benchmark.config.search_space`). Each trial resolves a normal run config with the sampled values, builds
the scheme on the training split and trains it with the shared loop; its objective is the run's
``train.valid_metric`` on the validation examples used for model selection (the fixed subsets of
``train.valid_users`` and ``train.max_valid_examples``), after the model's own inference-time selection. Test
examples are never evaluated during the search. After every validated epoch (``train.eval_every``) the validation
value is reported to optuna and a median pruner stops trials that are worse than the median of earlier trials at
the same epoch.

The study lives in a storage (a SQLite file under ``<results>/tuning/`` by default, or any SQLAlchemy URL), so
several workers (processes, machines) can add trials to one study, and a killed worker loses only its running
trial. A study remembers the config it was made for (everything but the tuned values); a worker whose config
differs is refused. Each trial's sampler is seeded from the run's seed and the number of trials the study
held when it was asked, so a single worker's search is reproducible; that seed is stored with the trial.

A running trial writes a heartbeat (its ``heartbeat`` user attribute, every :data:`HEARTBEAT_INTERVAL` seconds).
Before each trial, a worker fails every RUNNING trial of the study whose heartbeat (or start, without one) is older
than :data:`STALE_AFTER` seconds: its worker was killed (SIGKILL, out of memory, a lost machine). A trial stopped
by SIGINT or SIGTERM is failed at once (:class:`~benchmark.interrupts.Interrupted` names it). Either way its
parameters are queued once more (``retry_of`` names the trial), so the next worker's first trial retries them.

At the end the best trial's values are written as a YAML that ``run --config`` accepts, and (unless
``final_run`` is off) the final test run is a normal record with a ``tuned_from`` field naming the study. A
record of the same config (and seed) that exists already, e.g. from ``run``, is the same run: it is reused and
given the study's ``tuned_from`` (:func:`benchmark.runner.run_all`), unless it was made on other data (an error,
as for ``run``).

Before any work (:func:`check_request`, which the CLI calls first): the scheme must declare a search space, the
study name must be a plain file name (:data:`SAFE_NAME`), a request of no trial must name a study that exists,
the storage a SQLAlchemy URL whose dialect and driver are installed, and every folder written to (the SQLite
file's, the YAML's) a writable folder; a SQLite lock that cannot be taken within :data:`LOCK_TIMEOUT` seconds is
an error naming it, never a wait without end.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import optuna
import sqlalchemy.exc
import yaml
from filelock import FileLock, Timeout
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from benchmark.config import Environment, RunConfig, Tunable, load_defaults, resolve, search_space
from benchmark.evaluate import evaluate
from benchmark.interrupts import Interrupted, Terminated, signal_name
from benchmark.runner import (
    cached_dataset,
    cached_split,
    records_on_other_data,
    resolve_device,
    run_all,
    seed_everything,
)
from benchmark.safeio import OutputDirError, check_output_dir, write_text
from identifiers.base import RunContext, canonical
from identifiers.registry import get_scheme
from recommenders import trainer

optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial's outcome is printed by run_trials

SEED_STRIDE = 1_000_003
"""Sampler seed of a trial: ``(seed * SEED_STRIDE + trials already in the study) mod 2**32``."""


SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
"""A study name: letters, digits, ``_``, ``-`` and ``.``, not starting with a dot (it names files)."""
URL_FORMS = ("sqlite:///relative/path.db, sqlite:////absolute/path.db, postgresql://user:password@host/database "
             "or mysql://user:password@host/database")
"""The storage URLs a message shows (any SQLAlchemy URL whose driver is installed works)."""
LOCK_TIMEOUT = 120.0
"""Seconds a worker waits for the lock that guards creating a new SQLite study's schema (held for seconds)."""
HEARTBEAT_INTERVAL = 30.0
"""Seconds between two heartbeats of a running trial (its ``heartbeat`` user attribute, a Unix time)."""
STALE_AFTER = 120.0
"""A RUNNING trial without a heartbeat for this many seconds belongs to a worker that is gone; it is failed."""


class TuneError(ValueError):
    """A tuning request that cannot be served (no search space, an unsafe study name, an invalid storage URL, a
    study of another config, no finished trial, no study to run the best of)."""


@dataclass(frozen=True)
class TuneSettings:
    """One worker's tuning request; unset keys come from the ``tune`` section of ``defaults.yaml``.

    ``trials``: trials this worker adds to the study. ``storage``: SQLAlchemy URL (default: a SQLite file under
    ``<results>/tuning/``). ``study_name``: default :func:`study_name`. ``output``: the best parameters' YAML
    (default: beside the default SQLite file). ``final_run``: run the best config on test afterwards.
    """

    trials: int
    storage: str | None = None
    study_name: str | None = None
    output: str | None = None
    final_run: bool = True
    force: bool = False


def study_name(config: RunConfig) -> str:
    """The default study of a base config: its run name (dataset, scheme, backbone, split, profile, seed), with the
    dataset's ``:`` as ``_`` and any other character outside :data:`SAFE_NAME` (a backbone given as a path) as
    ``-``, so it is always a plain file name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.run_name.replace(":", "_"))
    return name.lstrip(".") or "study"


def check_study_name(name: str) -> str:
    """``name`` when it is a safe study name (:data:`SAFE_NAME`), else a :class:`TuneError`."""
    if not SAFE_NAME.fullmatch(name):
        raise TuneError(f"--study-name '{name}': use letters, digits, '_', '-' and '.' only, not starting with a "
                        "dot (it names the study's SQLite and YAML files under RESULTS_DIR/tuning/)")
    return name


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for another database or an in-memory SQLite one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def check_storage(url: str) -> str:
    """``url`` when it is a SQLAlchemy URL whose dialect and driver are installed, else a :class:`TuneError`
    showing the valid forms. Nothing is connected to."""
    shown = public_url(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise TuneError(f"--storage '{shown}': not a database URL; give one such as {URL_FORMS}") from None
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise TuneError(f"--storage '{shown}': unknown database kind '{parsed.drivername}'; give a URL such as "
                        f"{URL_FORMS}") from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        raise TuneError(f"--storage '{shown}': the driver of {parsed.drivername} is not installed ({error}); install "
                        f"it, or use a SQLite file such as sqlite:///path/study.db") from None
    return url


@dataclass(frozen=True)
class StudyPlan:
    """Where a tuning request keeps its study and writes its best parameters."""

    name: str
    url: str
    database: Path | None
    """The SQLite file of the storage; None for another database."""
    output: Path


def plan_study(base: RunConfig, settings: TuneSettings, results_dir: str) -> StudyPlan:
    """The study name, storage URL, SQLite file and output YAML of a request, each checked (:class:`TuneError`:
    an unsafe name, an invalid URL, a SQLite file or output that is a folder); nothing is created."""
    name = check_study_name(settings.study_name) if settings.study_name is not None else study_name(base)
    url = check_storage(settings.storage if settings.storage is not None
                        else f"sqlite:///{Path(results_dir) / 'tuning' / name}.db")
    if settings.output is not None and not settings.output.strip():
        raise TuneError("--output: give a file path for the best parameters' YAML (got an empty path)")
    output = Path(settings.output) if settings.output is not None else Path(results_dir) / "tuning" / f"{name}.yaml"
    plan = StudyPlan(name=name, url=url, database=sqlite_file(url), output=output)
    if plan.database is not None and plan.database.is_dir():
        raise TuneError(f"{storage_option(settings, url)}: the SQLite file {plan.database} is a folder; give a file "
                        "path")
    if output.is_dir():
        raise TuneError(f"--output {output}: is a folder; give a file path such as {output / (name + '.yaml')}")
    return plan


def storage_option(settings: TuneSettings, url: str) -> str:
    """The option that chose the storage, for messages: ``--storage URL``, or ``--results-dir`` for the default."""
    return f"--storage {public_url(url)}" if settings.storage is not None else "--results-dir"


def check_request(base: RunConfig, settings: TuneSettings, results_dir: str) -> StudyPlan:
    """Everything a request needs, checked before any work: the scheme's search space and :func:`plan_study`
    (:class:`TuneError`), then the folders it writes to: made when missing, :class:`OutputDirError` naming the
    option when one is not a writable folder (or an existing SQLite file is not writable). A request of no trial
    (``--trials 0``) on a SQLite file that does not exist is a :class:`TuneError`: it has no study to run the best
    of, and no file is made."""
    tunable_space(base.scheme)
    plan = plan_study(base, settings, results_dir)
    if settings.trials == 0 and plan.database is not None and not plan.database.exists():
        raise no_study(plan)
    check_output_dir(results_dir, "--results-dir")
    if settings.storage is None or settings.output is None:
        check_output_dir(Path(results_dir) / "tuning", "--results-dir tuning folder")
    if plan.database is not None:
        option = storage_option(settings, plan.url)
        check_output_dir(plan.database.parent, f"{option}: the SQLite file's folder")
        if plan.database.exists() and not os.access(plan.database, os.R_OK | os.W_OK):
            raise OutputDirError(f"{option}: the SQLite file {plan.database} is not readable and writable")
    if settings.output is not None:
        check_output_dir(plan.output.parent, f"--output {plan.output}: its folder")
    return plan


def no_study(plan: StudyPlan) -> TuneError:
    """The error of ``--trials 0`` on a study that does not exist."""
    return TuneError(f"--trials 0: there is no study '{plan.name}' in {public_url(plan.url)} to write and run the best "
                     "of; give --trials 1 or more to start it (or the --study-name / --storage of an existing one)")


def public_url(url: str) -> str:
    """``url`` without a password, for records and messages."""
    return re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", url)


def tunable_space(scheme: str) -> list[Tunable]:
    """The scheme's search space; a :class:`TuneError` when it declares none."""
    cls = get_scheme(scheme)
    space = search_space(cls.Params)
    if not space:
        raise TuneError(f"scheme {scheme} declares no tunable parameter (param(..., tune=...) in its Params); "
                        f"see `python -m benchmark list --params {scheme}`")
    return space


def check_unpinned(user: dict[str, Any], scheme: str) -> None:
    """A :class:`TuneError` when the user config (``--config``) sets a field the search tunes: every trial would
    replace that value with its own draw, so the value the user fixed would silently not hold."""
    space = [dim.name for dim in tunable_space(scheme)]
    pinned = [name for name in space if name in ((user.get("schemes") or {}).get(scheme) or {})]
    if pinned:
        raise TuneError(f"--config: schemes.{scheme} sets {', '.join(pinned)}, which tune searches (its space: "
                        f"{', '.join(space)}); remove it from the config to search it, or use `run` to train with it "
                        "fixed")


def suggest(trial: optuna.Trial, space: list[Tunable]) -> dict[str, Any]:
    """One value per tunable field, drawn by ``trial``."""
    values: dict[str, Any] = {}
    for dim in space:
        if dim.choices is not None:
            values[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices))
        elif dim.scale.startswith("int"):
            values[dim.name] = trial.suggest_int(dim.name, int(dim.low), int(dim.high), log=dim.scale == "int-log")
        else:
            values[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, log=dim.scale == "log")
    return values


def with_params(user: dict[str, Any], scheme: str, values: dict[str, Any]) -> dict[str, Any]:
    """The user config with ``values`` over its ``schemes.<scheme>`` section."""
    schemes = dict(user.get("schemes") or {})
    schemes[scheme] = {**(schemes.get(scheme) or {}), **values}
    return {**user, "schemes": schemes}


def validation_value(config: RunConfig, env: Environment, on_epoch: Any = None) -> float:
    """Build and train ``config``'s scheme as :func:`benchmark.runner.run_one` does (no checkpoint) and return
    ``train.valid_metric`` on the selection subset of validation, after the model's validation-only selection.
    ``on_epoch(epoch, value)`` sees every epoch's validation value."""
    device = resolve_device(env.device)
    seed_everything(config.seed)
    dataset = cached_dataset(config.dataset, env.data_dir, config.k_core)
    split = cached_split(config.dataset, env.data_dir, config.k_core, config.split, config.max_history)
    cf_config = resolve(config.dataset, get_scheme("sasrec"), config.seed, config.profile)
    ctx = RunContext(config=config, dataset=dataset, valid=split.valid, warm=split.warm, device=device,
                     cf_config=cf_config, cache_dir=Path(env.cache_dir), progress=env.progress)
    scheme = get_scheme(config.scheme)(config.params, ctx)
    reason = scheme.not_applicable(dataset)
    if reason:
        raise TuneError(f"{config.scheme} cannot run on {config.dataset}: {reason}")
    model = scheme.build(split.train).model
    trainer.fit(model, split.train, split.valid, split.warm, config.train, config.ks, config.eval_batch_size, device,
                config.seed, env.progress, desc=f"{config.scheme} trial", on_epoch=on_epoch, compiled=config.compile)
    examples = trainer.selection_examples(split.valid, config.train, config.seed)
    k = config.train.valid_k

    def score(m: Any) -> Any:
        return evaluate(m, examples, split.warm, config.ks, config.eval_batch_size, device)

    model.select_on_validation(score)
    result = evaluate(model, examples, split.warm, (k,), config.eval_batch_size, device)
    return result.value(config.train.valid_metric)


def open_study(base: RunConfig, settings: TuneSettings, results_dir: str) -> tuple[optuna.Study, StudyPlan]:
    """The study (created, or loaded when it exists) and its plan (name, storage, output). The request is checked first
    (:func:`check_request`: nothing is created for one that cannot be served); a request of no trial only loads
    (:class:`TuneError` when the study does not exist). A loaded study must have been made for the same base config,
    else :class:`TuneError`."""
    plan = check_request(base, settings, results_dir)
    name, url, database = plan.name, plan.url, plan.database
    tuned = {dim.name for dim in tunable_space(base.scheme)}
    defaults = load_defaults()["tune"]
    pruner = optuna.pruners.MedianPruner(n_startup_trials=defaults["pruner_startup_trials"],
                                         n_warmup_steps=defaults["pruner_first_epoch"])
    # Workers started together on a new SQLite file would each create its schema, and all but one fail (optuna's
    # alembic version row is written twice): the first creates it under an OS lock, the others then open it.
    lock = f"{database}.lock" if database is not None else None
    try:
        with FileLock(lock, timeout=LOCK_TIMEOUT) if lock is not None else nullcontext():
            storage: Any = (optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
                            if database is not None else url)
            study = (optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                         load_if_exists=True, pruner=pruner) if settings.trials
                     else optuna.load_study(storage=storage, study_name=name, pruner=pruner))
    except KeyError:  # load_study: no study of that name in the storage
        raise no_study(plan) from None
    except Timeout:
        raise TuneError(f"study storage {public_url(url)}: the lock {lock} was not free after {LOCK_TIMEOUT:.0f} s (it "
                        f"cannot be created in {Path(str(lock)).parent}, or another worker holds it); check that "
                        "the folder is writable, or remove a stale lock file") from None
    except sqlalchemy.exc.SQLAlchemyError as error:
        first = str(error).strip().splitlines()[0]
        raise TuneError(f"{storage_option(settings, url)}: cannot open the study '{name}' in {public_url(url)} "
                        f"({first})") from None
    made_for = json.loads(json.dumps({**base.to_dict(), "params": {key: value for key, value in base.params.items()
                                                                   if key not in tuned}}))
    known = study.user_attrs.get("base_config")
    if known is None:
        study.set_user_attr("base_config", made_for)
    elif known != made_for:
        changed = sorted(key for key in made_for if known.get(key) != made_for[key])
        raise TuneError(f"study '{name}' in {public_url(url)} was made for another config (differs in "
                        f"{', '.join(changed)}); give another --study-name")
    return study, plan


@contextmanager
def heartbeat(trial: optuna.Trial) -> Iterator[None]:
    """While the body runs, a thread sets the trial's ``heartbeat`` to the time every :data:`HEARTBEAT_INTERVAL`
    seconds (a beat the storage refuses is skipped: a SQLite file locked too long, or a trial that another worker
    failed as stale after such a lock)."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                trial.set_user_attr("heartbeat", time.time())
            except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.OptunaError):
                pass
            if stop.wait(HEARTBEAT_INTERVAL):
                return

    thread = threading.Thread(target=beat, name=f"trial {trial.number} heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def retry(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial) -> bool:
    """Queue the parameters of the failed ``trial`` once more (user attribute ``retry_of``: the first trial that
    had them), unless it is itself a retry; whether they were queued."""
    if "retry_of" in trial.user_attrs or not trial.params:
        return False
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return True


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the study's RUNNING trials whose worker is gone (no heartbeat, or else no start, for
    :data:`STALE_AFTER` seconds) and :func:`retry` each (a trial that another worker fails or finishes meanwhile
    is left to it)."""
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        start = trial.datetime_start.timestamp() if trial.datetime_start is not None else now
        if now - trial.user_attrs.get("heartbeat", start) <= STALE_AFTER:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue
        queued = retry(study, trial)
        print(f"trial {trial.number} failed: its worker stopped (no heartbeat for over {STALE_AFTER:.0f} s)"
              + ("; its parameters are queued again" if queued else ""))


def run_trials(study: optuna.Study, base: RunConfig, user: dict[str, Any], cli: dict[str, Any], env: Environment,
               trials: int) -> None:
    """Ask, train and tell ``trials`` trials; pruned and diverged trials are recorded as such, and the stale trials
    of killed workers failed and queued again first (:func:`fail_stale_trials`). A SIGINT or SIGTERM fails the
    running trial, queues its parameters again and raises :class:`~benchmark.interrupts.Interrupted` naming it."""
    cls, space = get_scheme(base.scheme), tunable_space(base.scheme)
    startup = load_defaults()["tune"]["sampler_startup_trials"]
    for _ in range(trials):
        fail_stale_trials(study)
        seed = (base.seed * SEED_STRIDE + len(study.get_trials(deepcopy=False))) % 2**32
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        trial = study.ask()
        trial.set_user_attr("sampler_seed", seed)
        values = suggest(trial, space)
        try:
            drawn = with_params(user, base.scheme, values)
            config = canonical(resolve(base.dataset, cls, base.seed, base.profile, drawn, cli))
        except ValueError as error:  # a cross-field rule of Params.check() refuses this combination
            trial.set_user_attr("failure", str(error))
            study.tell(trial, state=TrialState.FAIL)
            continue
        trial.set_user_attr("config_hash", config.hash())

        def report(epoch: int, value: float, trial: optuna.Trial = trial) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {value:.4f} below the median of earlier trials")

        try:
            with heartbeat(trial):
                value = validation_value(config, env, report)
        except optuna.TrialPruned as pruned:
            print(f"trial {trial.number} pruned at {pruned}")
            study.tell(trial, state=TrialState.PRUNED)
            continue
        except trainer.DivergenceError as error:
            trial.set_user_attr("failure", str(error))
            print(f"trial {trial.number} failed: {error}")
            study.tell(trial, state=TrialState.FAIL)
            continue
        except (KeyboardInterrupt, Terminated) as error:
            name = signal_name(error)
            trial.set_user_attr("failure", f"interrupted by {name}")
            study.tell(trial, state=TrialState.FAIL)
            queued = retry(study, trial)
            raise Interrupted(name, interrupted_message(name, study, trial.number, values, queued)) from None
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value, skip_if_finished=True)  # failed as stale by another worker: its retry is queued
        print(f"trial {trial.number}: {base.train.valid_metric} {value:.4f} with {values}")


def interrupted_message(name: str, study: optuna.Study, number: int, values: dict[str, Any], queued: bool) -> str:
    """What a signal during trial ``number`` stopped, what the study keeps and how to resume."""
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    finished = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
    again = ("its parameters are queued, so the resumed study retries them first" if queued
             else "it was a retry already, so it is not queued again")
    return (f"interrupted by {name} during trial {number} ({values}) of study '{study.study_name}'; the trial is "
            f"marked failed and {again}. The study keeps its {finished} finished trial(s). Run the same command "
            "again to resume: it adds --trials more trials to the study (each trial trains from its first epoch).")


def best_yaml(study: optuna.Study, name: str, url: str, base: RunConfig, user: dict[str, Any],
              cli: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The YAML text of the best trial for ``run --config`` and the config mapping it holds."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise TuneError(f"study '{name}' has no finished trial yet; run tune with --trials >= 1")
    best = study.best_trial
    config = with_params(user, base.scheme, best.params)
    config["run"] = {**(user.get("run") or {}), **cli}
    config = {key: value for key, value in config.items() if value}
    header = (f"# Best of optuna study '{name}' ({public_url(url)}): trial {best.number}, validation "
              f"{base.train.valid_metric} {best.value:.6f}, out of {len(completed)} finished trial(s).\n"
              f"# Test run: python -m benchmark run --identifiers {base.scheme} --datasets {base.dataset} "
              f"--profile {base.profile} --seed {base.seed} --config THIS_FILE\n")
    return header + yaml.safe_dump(config, sort_keys=True), config


def tune(base: RunConfig, user: dict[str, Any], cli: dict[str, Any], env: Environment,
         settings: TuneSettings) -> dict[str, Any]:
    """Add ``settings.trials`` trials to the study of ``base``, write the best parameters' YAML and (unless
    ``settings.final_run`` is off) run the best config on test; return what was done."""
    study, plan = open_study(base, settings, env.results_dir)
    name, url, output = plan.name, plan.url, plan.output
    run_trials(study, base, user, cli, env, settings.trials)
    text, config = best_yaml(study, name, url, base, user, cli)
    write_text(output, text)
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    best = study.best_trial
    tuned_from = {"study": name, "storage": public_url(url), "best_trial": best.number,
                  "best_valid": best.value, "valid_metric": base.train.valid_metric, "best_params": best.params,
                  "trials": {state.name.lower(): states.count(state) for state in set(states)},
                  "search_space": [asdict(dim) for dim in tunable_space(base.scheme)], "config_file": str(output)}
    done: dict[str, Any] = {"study": name, "storage": public_url(url), "best_config": str(output),
                            "tuned_from": tuned_from, "record": None}
    if settings.final_run:
        final = canonical(resolve(base.dataset, get_scheme(base.scheme), base.seed, base.profile, config, cli))
        data = {(final.dataset, final.k_core): cached_dataset(final.dataset, env.data_dir, final.k_core)}
        stale = [] if settings.force else records_on_other_data([final], env, data)
        if stale:
            raise TuneError(f"the best config's test record exists but was made on other data (the dataset's files "
                            f"changed, or another --data-dir): {stale[0]}. The study keeps its trials: run tune "
                            "again with --trials 0 and --force to run it again, or with another --results-dir")
        done["record"] = str(run_all([final], env, force=settings.force, annotate={"tuned_from": tuned_from})[0])
    return done
