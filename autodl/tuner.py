"""The orchestrator: turns a validated configuration into an Optuna study and runs it.

Order matters: every input is checked (arch, dataset, plugin dry build, search space,
storage URL) before the storage is opened, so bad input never writes anything.
The orchestrator holds no layer code: models come from plugins through the registry.
"""

from __future__ import annotations

import gc
import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from autodl import registry, storage
from autodl.checkpoint import CheckpointStore
from autodl.config import TRAINING_SPACE, Space, TuneConfig, describe_conditions
from autodl.datasets import Splits, load_dataset, make_splits
from autodl.errors import AutodlError, choose
from autodl.hyperparameters import declared_conditions, optuna_params
from autodl.lost_trials import LostTrials
from autodl.objectives import ACCURACY, OBJECTIVES
from autodl.pruners import PRUNERS
from autodl.runtime import freeze_long_lived_objects, quiet_libraries
from autodl.samplers import SAMPLERS
from autodl.storage import FailKind, TrialAttr
from autodl.trial import EpochListener, TrialRunner, dry_build
from autodl.workers import Workers

FAILURE_STREAK = 3
#: Trials between full garbage collections (each takes milliseconds once the process's
#: long-lived objects are frozen: :func:`autodl.runtime.freeze_long_lived_objects`).
GC_EVERY = 10


@dataclass(frozen=True)
class TrialResult:
    """One finished trial, as the progress display and summary show it."""

    number: int
    state: str
    value: float | None
    epochs: int
    seconds: float | None
    hyperparameters: dict[str, Any]
    #: Why it failed or was pruned; on a completed trial, why it stopped short.
    reason: str | None = None
    #: A failed trial's kind of failure (:attr:`TrialAttr.FAIL_KIND`).
    kind: str | None = None
    #: Its values of the study's other objectives, by metric name (e.g. ``latency_ms``).
    costs: dict[str, float | None] = field(default_factory=dict)
    #: Whether it is on the study's Pareto front (a study of several objectives).
    on_front: bool = False

    @classmethod
    def from_frozen(cls, trial: FrozenTrial, objectives: tuple[str, ...] = (ACCURACY,),
                    on_front: bool = False) -> TrialResult:
        """Read a trial of a study tuned for ``objectives`` back from the storage."""
        attrs = trial.user_attrs
        reason = attrs.get(TrialAttr.FAIL_REASON)
        if trial.state == TrialState.FAIL and reason is None:
            reason = "no heartbeat: the process running it stopped"
        if trial.state == TrialState.PRUNED:
            reason = attrs.get(TrialAttr.PRUNED_BECAUSE) or (
                f"pruned at epoch {attrs.get(TrialAttr.STOPPED_EPOCH, '?')}")
        if trial.state == TrialState.COMPLETE and attrs.get(TrialAttr.STOPPED_BY_BUDGET):
            reason = "stopped by the time budget"
        # A lost trial recorded no count: its reported (or recorded) epochs tell.
        reported = max(trial.intermediate_values, default=len(attrs.get(TrialAttr.HISTORY, [])))
        return cls(
            number=trial.number,
            state=trial.state.name,
            value=storage.objective_value(trial, ACCURACY),
            epochs=attrs.get(TrialAttr.STOPPED_EPOCH, reported),
            seconds=attrs.get(TrialAttr.TRAIN_SECONDS),
            hyperparameters=storage.hyperparameters(trial),
            reason=reason,
            kind=attrs.get(TrialAttr.FAIL_KIND) if trial.state == TrialState.FAIL else None,
            costs={OBJECTIVES[name].metric: storage.objective_value(trial, name)
                   for name in objectives[1:]},
            on_front=on_front,
        )


def finished_results(study: optuna.Study,
                     trial: FrozenTrial) -> tuple[TrialResult, TrialResult | None]:
    """A finished trial and the study's best, as the listener is told them."""
    objectives = tuple(storage.study_objectives(study))
    front = ({t.number for t in storage.pareto_front(study)} if len(objectives) > 1
             else set())
    best = storage.most_accurate_trial(study)
    return (TrialResult.from_frozen(trial, objectives, trial.number in front),
            best and TrialResult.from_frozen(best, objectives, best.number in front))


@dataclass
class TuneSummary:
    """What a tuning run ended with."""

    study_name: str
    storage: str
    artifact_dir: str
    #: Finished trials the run was to reach; ``None``: as many as the budget allowed.
    requested: int | None
    counts: dict[str, int]
    best: TrialResult | None = None
    test_accuracy: float | None = None
    model_path: str | None = None
    model_problem: str | None = None
    stop_reason: str | None = None
    params_count: int | None = None
    interrupted: bool = False
    #: What the study tunes for; with several, its best is the front's most accurate trial.
    objectives: tuple[str, ...] = (ACCURACY,)


class TuneListener(EpochListener, Protocol):
    """What the caller (the CLI) is told while a study runs."""

    def started(self, study_name: str, storage_url: str, data: str, finished: int,
                requested: int | None, budget_left: float | None = None) -> None:
        """The study is open; ``finished`` trials of ``requested`` already exist.

        ``requested`` is ``None`` where the run goes on until its time budget ends;
        ``budget_left`` is the seconds left of ``--budget``, if there is one.
        """

    def trial_started(self, trial_number: int) -> None:
        """A trial started."""

    def trial_finished(self, result: TrialResult, best: TrialResult | None) -> None:
        """A trial ended (complete, pruned or failed); ``best`` is the study's best."""


class _FailureStreak:
    """Says stop after several failures in a row of the same kind."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kinds: list[str] = []
        self.reason: str | None = None

    def add(self, result: TrialResult) -> None:
        """Count a finished trial."""
        if result.state != TrialState.FAIL.name:
            self.kinds.clear()
            return
        self.kinds.append(result.kind or "error")
        last = self.kinds[-self.limit:]
        if len(last) == self.limit and len(set(last)) == 1:
            self.reason = (f"stopped after {self.limit} failed trials in a row ({last[0]}); "
                           f"last: {result.reason or 'no reason recorded'}")


class _RunMonitor:
    """Passes the trials' progress on to the listener, wherever they run.

    It also keeps the failure streak, and fails the trials whose worker died: it is the
    :class:`autodl.workers.Supervision` of the worker processes.
    """

    def __init__(self, study: optuna.Study, study_storage: optuna.storages.BaseStorage,
                 listener: TuneListener, lost_trials: LostTrials,
                 requested: int | None) -> None:
        self.study = study
        self.requested = requested
        self.storage = study_storage
        self.listener = listener
        self.streak = _FailureStreak(FAILURE_STREAK)
        self.lost_trials = lost_trials

    def epoch_end(self, trial_number: int, epoch: int, record: dict[str, float]) -> None:
        self.listener.epoch_end(trial_number, epoch, record)

    def trial_started(self, trial_number: int) -> None:
        self.listener.trial_started(trial_number)

    def trial_resumed(self, trial_number: int, series: int, epoch: int) -> None:
        self.listener.trial_resumed(trial_number, series, epoch)

    def warning(self, text: str) -> None:
        self.listener.warning(text)

    def trial_finished(self, result: TrialResult, best: TrialResult | None) -> None:
        self.streak.add(result)
        self.listener.trial_finished(result, best)

    def trial_lost(self, trial_number: int, kind: str, reason: str, retry: bool) -> None:
        trial, failed_here = storage.fail_lost_trial(self.storage, self.study, trial_number,
                                                     kind, reason)
        if failed_here and retry:
            self.lost_trials(self.study, trial)
        elif failed_here and kind != FailKind.INTERRUPTED:  # the next run resumes those
            self.lost_trials.give_up(trial)
        self.trial_finished(*finished_results(self.study, trial))

    def stop_reason(self) -> str | None:
        return self.streak.reason

    def trials_to_start(self) -> float:
        if self.requested is None:  # until the budget ends
            return math.inf
        return self.requested - storage.counted_trials(self.study.get_trials(deepcopy=False))


def _collect_garbage(study: optuna.Study, trial: FrozenTrial) -> None:
    """Collect the garbage of finished trials' models, every ``GC_EVERY`` trials."""
    if trial.number % GC_EVERY == GC_EVERY - 1:
        gc.collect()


_DOWNLOAD_FAILURE = re.compile(r"URL fetch failure on (\S+):")


def build_problem(error: Exception) -> str:
    """One line on why a plugin could not be set up; a failed download says what to fetch."""
    if isinstance(error, AutodlError):
        return str(error)
    message = str(error).splitlines()[0] if str(error) else ""
    download = _DOWNLOAD_FAILURE.search(message)
    if download:
        return (
            f"it needs {download[1]}, which could not be downloaded (offline?); put that "
            "file in Keras's cache, ~/.keras/models"
        )
    return f"{type(error).__name__}: {message}"


def make_hypermodel(config: TuneConfig, splits: Splits) -> Any:
    """The plugin's hypermodel for the task the splits hold."""
    return registry.instantiate(
        registry.find(config.arch), splits.input_shape, splits.num_classes,
        weights=config.weights,
    )


def prepare_task(config: TuneConfig) -> tuple[Any, Splits]:
    """Load the data once for this process and make the plugin's hypermodel for it."""
    splits = make_splits(
        load_dataset(config.dataset, config.image_size),
        val_split=config.val_split,
        test_split=config.test_split,
        max_samples=config.max_samples,
        seed=config.seed or 0,  # recorded on the study as split_seed
    )
    return make_hypermodel(config, splits), splits


def _check_and_prepare(config: TuneConfig) -> tuple[Any, Splits, list[dict[str, Any]]]:
    """Validate everything that can be checked without touching the storage.

    Returns:
        The hypermodel, the data splits, and the Optuna parameters of a new study's
        first trials: the defaults; in a study for deployment, the space's low end too.
    """
    make_sampler(config, 0)  # a missing optional dependency (gp: torch) is said now
    storage.check_storage_url(config.storage)
    hypermodel, splits = prepare_task(config)
    make_pruner(config, splits)
    space = config.search_space
    try:
        hp = dry_build(hypermodel, space)
    except AutodlError:
        raise
    except Exception as error:
        raise AutodlError(
            f"arch {config.arch} cannot build a model for input {splits.input_shape}: "
            f"{build_problem(error)}"
        ) from None
    conditions, declared = declared_conditions(hp)
    space.check_known(set(declared) | set(hp.specs) | set(TRAINING_SPACE), config.arch)
    space.check_conditions(conditions, declared)
    for name in space.overrides.keys() & declared.keys():  # a bad value is refused now
        space.resolve(name, declared[name])
    first_trials = [optuna_params(hp)]
    if config.for_deployment:
        # The front's fast end from the second trial on: the built-in plugins' ranges
        # start at their smallest model, which TPE may never draw (in the MNIST
        # benchmark one seed's front lacked the 0.04 ms one-block CNN for 40 trials).
        first_trials.append(optuna_params(dry_build(hypermodel, space, low_end=True)))
    return hypermodel, splits, first_trials


def _load_model(store: storage.ModelStore, trial: FrozenTrial, path: Path) -> keras.Model:
    """Download a trial's stored model to ``path`` and load it.

    Raises:
        AutodlError: If the model is not in this machine's artifact folder.
    """
    try:
        store.download(trial, path)
    except ArtifactNotFound:
        raise AutodlError(
            f"the model of trial #{trial.number} is not in {store.directory}: the worker that "
            "ran it saved it elsewhere (give every worker the same shared --artifacts folder)"
        ) from None
    return keras.models.load_model(path, safe_mode=True)  # no code from model files


def _test_accuracy(model: keras.Model, splits: Splits) -> float:
    probabilities = model.predict(splits.x_test, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=-1) == splits.y_test))


def _evaluate_best(
    study: optuna.Study, best: FrozenTrial, store: storage.ModelStore, splits: Splits,
    config: TuneConfig,
) -> tuple[float, str, int]:
    """Evaluate the best trial's stored model on the test split and keep it as a file.

    Raises:
        AutodlError: If the model is not in this machine's artifact folder.
    """
    path = storage.best_model_path(config.storage, study.study_name)
    model = _load_model(store, best, path)
    accuracy = _test_accuracy(model, splits)
    storage.record_test_accuracy(study, best.number, accuracy)
    return accuracy, str(path), int(model.count_params())


def _evaluate_front(study: optuna.Study, store: storage.ModelStore, splits: Splits) -> None:
    """Evaluate on the test split each Pareto-front model not evaluated before.

    Raises:
        AutodlError: If a model is not in this machine's artifact folder.
    """
    measured = storage.recorded_front_test(study)
    accuracies = {}
    for trial in storage.pareto_front(study):
        if trial.number not in measured:
            with tempfile.TemporaryDirectory() as folder:
                model = _load_model(store, trial, Path(folder) / "model.keras")
            accuracies[trial.number] = _test_accuracy(model, splits)
    storage.record_front_test(study, accuracies)


def make_pruner(config: TuneConfig, splits: Splits) -> optuna.pruners.BasePruner:
    """The ``--pruner``, for the study's trials (``--epochs`` at most) validated on ``splits``."""
    return choose(PRUNERS, config.pruner_name, "pruner")(
        config.epochs, config.objectives, splits.y_val, config.trial_limit)


def make_sampler(config: TuneConfig, trial_number: int) -> optuna.samplers.BaseSampler:
    """The ``--sampler`` that suggests trial ``trial_number``'s values.

    Seeded by the trial's number, so that what a trial is given depends on the seed and
    the study, not on which worker process asks, or how many trials that one ran before.
    The seed is mixed with the number (not added to it): studies seeded 1 and 2 then
    draw unrelated values, not the same ones one trial apart.
    """
    seed = None if config.seed is None else int(
        np.random.SeedSequence([config.seed, trial_number]).generate_state(1)[0])
    return choose(SAMPLERS, config.sampler, "sampler")(seed, config.objectives)


def run_trials(
    study: optuna.Study, hypermodel: Any, splits: Splits, config: TuneConfig,
    listener: TuneListener, started: float | None = None,
    spent: Callable[[], bool] | None = None,
) -> str | None:
    """Run trials in this process until the study holds enough of them.

    ``--trials`` is the study-wide total: trials other workers are running count too,
    and counting and starting a trial happen under the study's admission lock, so
    workers finishing at the same moment do not each start one more.

    Args:
        study: The study, opened.
        hypermodel: The plugin's hypermodel for the study's task.
        splits: The study's data.
        config: The validated configuration.
        listener: Told about progress.
        started: ``time.monotonic()`` when the run began, where ``--budget`` and
            ``--timeout`` count from (default: now).
        spent: Asked before each trial; ``True`` stops the loop (a worker due to be
            replaced, a streak of failures).

    Returns:
        Why it stopped before the study was complete, if it did (the budget).
    """
    store = storage.ModelStore(storage.artifact_dir(config.storage, config.artifacts))
    lock = storage.AdmissionLock(config.storage, study.study_name)

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        listener.trial_finished(*finished_results(study, trial))

    started = time.monotonic() if started is None else started
    budget, timeout = config.budget_seconds, config.timeout
    budget_end = None if budget is None else started + budget
    # No trial starts after --timeout or the budget's end.
    deadline = min((end for end in (budget_end, timeout and started + timeout) if end),
                   default=None)
    runner = TrialRunner(hypermodel, splits, config.search_space, config.epochs,
                         config.patience, config.seed, listener, store.save,
                         tensorboard=config.tensorboard,
                         mixed_precision=config.mixed_precision,
                         deadline=budget_end, checkpoints=checkpoint_store(config),
                         checkpoint_every=config.checkpoint_every,
                         objectives=config.objectives, limits=config.limits)

    def admitted(trial: optuna.Trial) -> float:
        lock.release()  # the trial exists now, so the next worker's count includes it
        listener.trial_started(trial.number)
        return runner(trial)

    limit = config.trial_limit  # None: until the budget ends
    freeze_long_lived_objects()
    try:
        while deadline is None or time.monotonic() < deadline:
            lock.acquire()
            try:
                # A killed worker's trial would otherwise count as in flight forever.
                optuna.storages.fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                # Complete first: a worker due for replacement at the study's end is not.
                if ((limit is not None and storage.counted_trials(trials) >= limit)
                        or (spent and spent())):
                    break
                study.sampler = make_sampler(config, len(trials))
                study.optimize(admitted, n_trials=1, catch=(Exception,),
                               callbacks=[report, _collect_garbage])
            finally:
                lock.release()
    except Exception as error:
        problem = storage.write_failure(error)
        if problem is None:
            raise
        raise AutodlError(
            f"cannot write to storage {config.storage}: {problem}; every trial finished "
            "before is kept: fix that, then run the same command again"
        ) from None
    finally:
        lock.close()
    if budget_end is not None and time.monotonic() >= budget_end:
        return f"the time budget ({config.budget}) ran out"
    return None


def checkpoint_store(config: TuneConfig) -> CheckpointStore:
    """The study's trial checkpoints."""
    return CheckpointStore(storage.checkpoint_dir(config.storage, config.artifacts,
                                                  config.study_name))


def work(config: TuneConfig, listener: TuneListener, spent: Callable[[], bool],
         started: float, ready: Callable[[], None]) -> str | None:
    """A worker process's trials, on a study that ``tune`` has checked and opened.

    Args:
        config: The validated configuration.
        listener: Told about progress.
        spent: Asked before each trial; ``True`` ends the worker.
        started: When the run began (``time.time()``).
        ready: Called once the study and its data are loaded; returns when the worker
            may train (a successor waits for its predecessor's end).
    """
    quiet_libraries()
    study = optuna.load_study(
        study_name=config.study_name,
        storage=storage.open_storage(config.storage, config.heartbeat,
                                     LostTrials(checkpoint_store(config))),
    )
    splits = storage.study_splits(study)
    study.pruner = make_pruner(config, splits)
    hypermodel = make_hypermodel(config, splits)
    ready()
    began = time.monotonic() - (time.time() - started)  # the same instant, in this clock
    return run_trials(study, hypermodel, splits, config, listener, began, spent)


def tune(config: TuneConfig, listener: TuneListener,
         workers: Workers | None = None) -> TuneSummary:
    """Run (or continue) the study until it holds enough finished trials or time is up.

    Enough is :attr:`TuneConfig.trial_limit`; time is ``--budget`` or ``--timeout``.

    Args:
        config: The validated configuration.
        listener: Told about progress.
        workers: The run's worker processes, already starting (default: started when
            the study is open; none with ``--workers 0``).

    Returns:
        The summary: best trial, its test accuracy and where things are stored.

    Raises:
        AutodlError: For any bad input; nothing has been written to the storage then.
    """
    started, started_at = time.monotonic(), time.time()
    quiet_libraries()
    hypermodel, splits, first_trials = _check_and_prepare(config)
    facts = storage.study_facts(config, splits)
    lost_trials = LostTrials(checkpoint_store(config))
    study_storage = storage.open_storage(config.storage, config.heartbeat, lost_trials)
    study = storage.open_study(
        study_storage,
        config.study_name,
        facts,
        make_sampler(config, 0),
        make_pruner(config, splits),
    )
    recorded = study.user_attrs[storage.FACTS_KEY]
    # Joining a study (another machine, a later run): its trials must all see the same
    # data, so the study's recorded split wins over this command's options.
    if any(recorded.get(key) != facts[key] for key in storage.SPLIT_FACTS):
        splits = storage.study_splits(study)
        hypermodel = make_hypermodel(config, splits)
        study.pruner = make_pruner(config, splits)
    if not study.get_trials(deepcopy=False):
        # The first trial trains the defaults, as KerasTuner's does: a good model in
        # the first minute, and a yardstick for the pruner. (For deployment, the low
        # end follows.)
        for params in first_trials:
            study.enqueue_trial(params, skip_if_exists=True)
    lock = storage.AdmissionLock(config.storage, study.study_name)
    try:  # not twice, when several machines start at once
        lock.acquire()
        found_lost = lost_trials.take_up(study, study_storage)
    finally:
        lock.close()
    finished = storage.finished_trials(study)
    limit = config.trial_limit
    budget = config.budget_seconds
    listener.started(study.study_name, config.storage, splits.describe(), finished, limit,
                     None if budget is None else started + budget - time.monotonic())
    for trial in found_lost:
        listener.trial_finished(finished_results(study, trial)[0], None)
    if config.seed is not None:
        np.random.seed(config.seed)
    stop_reason, interrupted = None, False
    monitor = _RunMonitor(study, study_storage, listener, lost_trials, limit)
    if limit is None or finished < limit:
        try:
            if config.workers:
                stop_reason = (workers or Workers(config)).run(monitor, started_at)
            else:
                stop_reason = run_trials(study, hypermodel, splits, config, monitor, started,
                                         lambda: monitor.stop_reason() is not None)
        except KeyboardInterrupt:  # the running trials are already marked FAIL, "interrupted"
            interrupted = True
        stop_reason = monitor.stop_reason() or stop_reason

    counts = {state.name: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED,
                                          TrialState.FAIL)}
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name in counts:
            counts[trial.state.name] += 1
    store = storage.ModelStore(storage.artifact_dir(config.storage, config.artifacts))
    summary = TuneSummary(
        study_name=study.study_name,
        storage=config.storage,
        artifact_dir=str(store.directory),
        requested=limit,
        counts=counts,
        stop_reason="interrupted" if interrupted else stop_reason,
        interrupted=interrupted,
        objectives=config.objectives,
    )
    best = storage.most_accurate_trial(study)
    if best is not None:
        summary.best = TrialResult.from_frozen(best, config.objectives)
    if best is not None and not interrupted:
        try:
            if storage.is_multi_objective(study):
                _evaluate_front(study, store, splits)
            else:
                summary.test_accuracy, summary.model_path, summary.params_count = (
                    _evaluate_best(study, best, store, splits, config))
        except AutodlError as error:  # the study itself is fine: say so, do not fail
            summary.model_problem = str(error)
    return summary


@dataclass(frozen=True)
class PluginInfo:
    """A plugin as ``autodl plugins`` shows it."""

    name: str
    source: str
    description: str
    hyperparameters: dict[str, str]
    problem: str | None = None


def describe_plugins(
    names: list[str] | None = None,
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_classes: int = 10,
) -> list[PluginInfo]:
    """Describe plugins and their hyperparameters, found by a dry build for a sample task.

    Args:
        names: The plugins to describe (names or file paths); all registered ones if None.
        input_shape: The sample task's input shape.
        num_classes: The sample task's class count.

    Raises:
        AutodlError: If a named plugin does not exist.
    """
    quiet_libraries()
    plugins = [registry.find(name) for name in names] if names else registry.available()
    described = []
    for plugin in plugins:
        description, hyperparameters, problem = "", {}, None
        try:
            description = plugin.description()
            hp = dry_build(registry.instantiate(plugin, input_shape, num_classes), Space())
            hyperparameters = {
                name: spec.describe() for name, spec in hp.specs.items()
                if name not in TRAINING_SPACE
            }
            conditions, declared = declared_conditions(hp)
            unused = [name for name in declared
                      if name not in hyperparameters and name not in TRAINING_SPACE]
            for name in unused:
                spec = hp.search_space.resolve(name, declared[name])
                hyperparameters[name] = (
                    f"{spec.describe()} ({describe_conditions(conditions.get(name, []))})"
                )
        except Exception as error:  # one broken plugin must not hide the others
            problem = build_problem(error)
        described.append(PluginInfo(plugin.name, plugin.source, description, hyperparameters,
                                    problem))
    return described
