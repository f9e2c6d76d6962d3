"""Study storage: the Optuna storage, what autodl records on studies and trials, and models.

Everything lives in Optuna's own machinery: an ``RDBStorage`` (SQLite by default,
PostgreSQL or MySQL by URL) for trials and study facts, and a
``FileSystemArtifactStore`` for model files, which optuna-dashboard can show.

Every command reads studies through this module: the names of what autodl records
(:data:`FACTS_KEY`, :data:`TEST_KEY`, :class:`TrialAttr`) are defined here and only here.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from autodl import __version__
from autodl.config import DEFAULT_STORAGE, TuneConfig
from autodl.datasets import Splits, load_dataset, make_splits
from autodl.errors import AutodlError
from autodl.objectives import ACCURACY, LATENCY, PARAMS, SIZE, directions, metric_names

if TYPE_CHECKING:
    import keras

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: The study attribute holding what the study was tuned with (see :func:`study_facts`).
FACTS_KEY = "autodl"
#: The study attribute holding the best model's test accuracy: ``{"trial", "accuracy"}``.
TEST_KEY = "test"
#: The study attribute holding the test accuracy of each Pareto-front model of a
#: multi-objective study: ``{"<trial number>": accuracy}``.
FRONT_TEST_KEY = "front_test"
#: The study facts that decide its data splits.
SPLIT_FACTS = ("dataset", "image_size", "val_split", "test_split", "max_samples", "split_seed")


class TrialAttr:
    """The names of what the trial runner records on each trial (Optuna user attributes)."""

    #: Every value the model was built with, fixed ones too.
    HYPERPARAMETERS = "hyperparameters"
    #: The model's parameter count.
    PARAMS_COUNT = "params_count"
    #: Bytes of the model exported as TFLite (:mod:`autodl.deployment`), before training.
    SIZE_BYTES = "size_bytes"
    #: Milliseconds per example at batch 1, measured before training.
    LATENCY_MS = "latency_ms"
    #: What ran the latency's timed calls, e.g. ``litert 2.3.0, 1 thread``.
    LATENCY_RUNTIME = "latency_runtime"
    #: The model's :func:`autodl.deployment.architecture_digest`.
    ARCHITECTURE = "architecture"
    #: The earlier trial of the same architecture whose size and latency it took.
    MEASURED_ON_TRIAL = "deployment_measured_on_trial"
    #: Forward-pass FLOPs of one example (:func:`autodl.cost.forward_flops`).
    FLOPS = "flops"
    #: Training FLOPs of one epoch, known before it trains; the default pruner's measure.
    EPOCH_FLOPS = "epoch_flops"
    #: Where it trained: ``CPU`` or ``GPU:N (name)``.
    DEVICE = "device"
    #: The process that runs it, ``host:pid:start`` (:func:`autodl.runtime.process_identity`).
    PROCESS = "process"
    #: Per epoch: loss, accuracy, val_loss, val_accuracy, learning_rate, seconds.
    HISTORY = "history"
    #: Seconds spent in ``fit``.
    TRAIN_SECONDS = "train_seconds"
    #: Epochs trained.
    STOPPED_EPOCH = "stopped_epoch"
    #: The epoch of the best validation accuracy (a completed trial's value).
    BEST_EPOCH = "best_epoch"
    #: On a completed trial the time budget stopped before its last epoch: ``True``.
    STOPPED_BY_BUDGET = "stopped_by_budget"
    #: Why a trial was pruned before training (e.g. too costly), in words.
    PRUNED_BECAUSE = "pruned_because"
    #: Why a failed trial failed, in words.
    FAIL_REASON = "fail_reason"
    #: The kind of failure: one of :class:`FailKind`, or an exception's name.
    FAIL_KIND = "fail_kind"
    #: The id of the trial's model in the artifact store.
    MODEL_ARTIFACT = "model_artifact_id"
    #: On a retried trial: the first trial of its series, whose checkpoint it continues.
    RESUMES = "resumes_trial"
    #: On a retried trial: the epoch its checkpoint had reached (0: started afresh).
    RESUMED_FROM_EPOCH = "resumed_from_epoch"


#: The trial attribute that holds each deployment objective's value.
OBJECTIVE_ATTRS = {PARAMS: TrialAttr.PARAMS_COUNT, SIZE: TrialAttr.SIZE_BYTES,
                   LATENCY: TrialAttr.LATENCY_MS}


class FailKind:
    """The kinds of failure recorded as ``TrialAttr.FAIL_KIND`` (besides exception names)."""

    #: The loss became NaN or infinite.
    DIVERGED = "diverged"
    #: A hypermodel's own ``fit`` trained no epoch that autodl saw.
    NO_EPOCHS = "no_epochs"
    #: Stopped by Ctrl-C: the next run resumes it.
    INTERRUPTED = "interrupted"
    #: Ran past ``--trial-timeout``.
    TIMEOUT = "timeout"
    #: Its worker process died.
    CRASHED = "crashed"


def hyperparameters(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Every value a trial's model was built with (its Optuna params if not recorded)."""
    return trial.user_attrs.get(TrialAttr.HYPERPARAMETERS, trial.params)
_BACKENDS = ("sqlite", "postgresql", "mysql")


def _parse_url(url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is None or parsed.get_backend_name() not in _BACKENDS:
        raise AutodlError(
            f"malformed storage URL {url!r}; use sqlite:///path/to/file.db, "
            "postgresql://user@host/db or mysql://user@host/db"
        )
    return parsed


def _sqlite_file(url: str) -> Path | None:
    parsed = _parse_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


def check_storage_url(url: str) -> None:
    """Check a storage URL's form, without connecting or writing anything.

    Raises:
        AutodlError: If the URL is malformed, or names a SQLite file in a missing folder
            (other than the default one, which is created).
    """
    db_file = _sqlite_file(url)
    if db_file is not None and url != DEFAULT_STORAGE and not db_file.parent.is_dir():
        raise AutodlError(f"storage folder does not exist: {db_file.parent}")


def open_storage(
    url: str, heartbeat: int | None = None,
    lost_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.RDBStorage:
    """Open (creating if needed) the Optuna storage at ``url``.

    Args:
        url: An SQLAlchemy database URL.
        heartbeat: Seconds between a running trial's heartbeats. A trial silent for twice
            that (its process was killed) is marked FAIL, then handed to ``lost_trial``.
        lost_trial: Decides whether such a trial runs again (Optuna's
            ``heartbeat_stale_trial_callback``); by default its parameters are tried
            once more.

    Raises:
        AutodlError: If the database cannot be reached or is not an Optuna database.
    """
    check_storage_url(url)
    db_file = _sqlite_file(url)
    engine_kwargs: dict[str, Any] = {}
    # An existing file is only read until it proves to be an Optuna database of a
    # compatible version: creating tables would modify someone else's database.
    existing = db_file is not None and db_file.is_file() and db_file.stat().st_size > 0
    if db_file is not None:
        try:
            db_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise AutodlError(f"cannot open storage {url}: {error.strerror}: "
                              f"{db_file.parent}") from None
        # SQLite writes its journal beside the file, even to read it.
        if not os.access(db_file.parent, os.W_OK):
            raise AutodlError(f"cannot open storage {url}: the folder {db_file.parent} is "
                              "read-only (autodl writes beside the database file)")
        # Wait for a busy database (another worker, the dashboard) instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 60}
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            storage = _RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                skip_table_creation=existing,
                heartbeat_interval=heartbeat,
                heartbeat_stale_trial_callback=heartbeat and (
                    lost_trial or optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
                ),
            )
            break
        except Exception as error:  # SQLAlchemy and driver errors: unreachable, not Optuna's
            # Workers started together on an empty server database race to create the
            # tables; the losers see the winner's half-made schema and try again.
            if attempt + 1 < _SCHEMA_ATTEMPTS and _lost_schema_race(error):
                time.sleep(0.5 * (attempt + 1))
                continue
            reason = write_failure(error) or str(error).splitlines()[0]
            raise AutodlError(f"cannot open storage {url}: {reason}") from None
    if db_file is not None:
        _use_write_ahead_log(storage.engine)
    return storage


_SCHEMA_ATTEMPTS = 5


class _RDBStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage`` whose heartbeat outlives a failed write.

    Optuna records a running trial's heartbeat from a thread of its own; a write that
    fails there (a full disk, a locked database) ended the thread with a traceback on
    the user's terminal, and a trial whose heartbeat stops is later taken for lost. The
    trial's own next write meets the same failure and stops the study with one line.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        """Record the trial's heartbeat; a failed write is left to the next beat."""
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:  # SQLAlchemy and driver errors
            if write_failure(error) is None:
                raise


def _lost_schema_race(error: Exception) -> bool:
    """Whether creating Optuna's tables failed because another process was creating them."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    text = str(error).lower()
    # PostgreSQL and MySQL say "already exists" or "duplicate"; SQLite, that a table or
    # the schema version row another process just wrote is there.
    return isinstance(error, (IntegrityError, OperationalError, ProgrammingError)) and (
        "already exists" in text or "duplicate" in text
        or "unique constraint failed: alembic_version" in text
    )


def _use_write_ahead_log(engine: Any) -> None:
    """Switch a proven Optuna SQLite file to write-ahead logging.

    Readers (the dashboard, other workers) then never block the writer, and commits
    wait for no disk sync (synchronous=NORMAL is crash-safe with WAL): a trial makes
    some twenty small commits.
    """
    from sqlalchemy import event

    def tune_connection(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(engine, "connect", tune_connection)
    engine.dispose()  # pooled connections predate the listener
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")


def write_failure(error: BaseException) -> str | None:
    """Why a storage write failed (disk full, read-only, database gone), else None.

    Looks through the errors ``error`` was raised from or during: Optuna can mask a
    failed write with an error of its own.
    """
    from sqlalchemy.exc import SQLAlchemyError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, SQLAlchemyError) and getattr(seen, "orig", None) is not None:
            return str(seen.orig).strip().splitlines()[0]
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES,
                                                         errno.EDQUOT):
            return seen.strerror or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def artifact_dir(url: str, artifacts: str | None = None) -> Path:
    """Where model files go: ``artifacts``, else beside a SQLite file, else studies/artifacts."""
    if artifacts:
        return Path(artifacts)
    db_file = _sqlite_file(url)
    return (db_file.parent if db_file is not None else Path("studies")) / "artifacts"


def checkpoint_dir(url: str, artifacts: str | None, study_name: str) -> Path:
    """Where a study's trial checkpoints go: beside its models, so any worker can resume."""
    return artifact_dir(url, artifacts) / "checkpoints" / study_name


def study_artifact_dir(study: optuna.Study, url: str) -> Path:
    """Where a study's models are: the folder it recorded, if this machine has it."""
    recorded = recorded_facts(study).get("artifacts")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return artifact_dir(url)


def best_model_path(url: str, study_name: str) -> Path:
    """The stable path of a study's final best model file."""
    return artifact_dir(url).parent / "models" / f"{study_name}.keras"


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    facts: dict[str, Any],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Continue the study called ``name``, or create it and record ``facts`` on it.

    Its directions and metric names come from ``facts["objectives"]``.

    Raises:
        AutodlError: If the existing study was run with another arch, dataset or
            objectives.
    """
    objectives = facts["objectives"]
    # load_if_exists: workers started together race to create the study; one wins.
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions(objectives), sampler=sampler,
        pruner=pruner, load_if_exists=True,
    )
    recorded = study.user_attrs.get(FACTS_KEY)
    if recorded is None:
        study.set_user_attr(FACTS_KEY, facts)
        study.set_metric_names(metric_names(objectives))
        return study
    for key in ("arch", "dataset"):
        if recorded.get(key) != facts[key]:
            raise AutodlError(
                f"study {name!r} was run with {key} {recorded.get(key)!r}, not "
                f"{facts[key]!r}; continue it with that {key}, or pass --study NEW_NAME"
            )
    tuned_for = study_objectives(study)
    if tuned_for != list(objectives):
        raise AutodlError(
            f"study {name!r} was tuned for --objective {','.join(tuned_for)}, not "
            f"{','.join(objectives)}; continue it with those, or pass --study NEW_NAME"
        )
    if study.metric_names is None:  # a study of an autodl that named no metric
        study.set_metric_names(metric_names(objectives))
    return study


def study_objectives(study: optuna.Study) -> list[str]:
    """What a study tunes for (:data:`autodl.objectives.OBJECTIVES` names), accuracy first."""
    return list(recorded_facts(study).get("objectives", [ACCURACY]))


def is_multi_objective(study: optuna.Study) -> bool:
    """Whether the study tunes accuracy against deployment costs."""
    return len(study.directions) > 1


def objective_value(trial: optuna.trial.FrozenTrial, name: str) -> float | None:
    """A trial's value of one objective: accuracy is its first value, the others recorded."""
    if name == ACCURACY:
        return trial.values[0] if trial.values else None
    return trial.user_attrs.get(OBJECTIVE_ATTRS[name])


def validation_loss(trial: optuna.trial.FrozenTrial) -> float | None:
    """The validation loss of a completed trial's model: at its best epoch, if it was logged."""
    history = trial.user_attrs.get(TrialAttr.HISTORY) or []
    epoch = trial.user_attrs.get(TrialAttr.BEST_EPOCH)
    if not epoch or epoch > len(history):
        return None
    return history[epoch - 1].get("val_loss")


def accuracy_rank(trial: optuna.trial.FrozenTrial) -> tuple[float, float, int]:
    """Sort key of completed trials: the most accurate first, ties by validation loss.

    On a few hundred validation images, one image is a step of accuracy and trials often
    tie; the first of them to finish is not the better model. The validation loss, a
    finer measure on the same images, tells them apart: on the MNIST benchmark's seed 2,
    two trials tied at 98.87% validation accuracy and tested 97.55% (validation loss
    0.051) and 98.75% (0.036).
    """
    loss = validation_loss(trial)
    return -trial.values[0], math.inf if loss is None else loss, trial.number


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials no other trial beats on every objective, most accurate first."""
    return sorted(study.best_trials, key=accuracy_rank)


def study_facts(config: TuneConfig, splits: Splits) -> dict[str, Any]:
    """What a study records it was tuned with: enough to rebuild its data and models."""
    return {
        "arch": config.arch,
        "dataset": config.dataset,
        "objectives": list(config.objectives),
        "limits": config.limits,
        "space": config.space.describe(),
        "epochs": config.epochs,
        "autodl_version": __version__,
        "val_split": config.val_split,
        "test_split": config.test_split,
        "max_samples": config.max_samples,
        "image_size": config.image_size,
        "split_seed": config.seed or 0,
        "weights": config.weights,
        "artifacts": str(artifact_dir(config.storage, config.artifacts).resolve()),
        "input_shape": list(splits.input_shape),
        "class_names": splits.class_names,
        "mixed_precision": config.mixed_precision,
        "tensorboard": config.tensorboard and str(Path(config.tensorboard).resolve()),
    }


def recorded_facts(study: optuna.Study, needed: tuple[str, ...] = (),
                   what: str | None = None) -> dict[str, Any]:
    """The facts a study recorded (:func:`study_facts`).

    Args:
        study: The study.
        needed: Facts the caller cannot do without.
        what: What those facts tell, for the message (e.g. "how its data was split").

    Raises:
        AutodlError: If one of ``needed`` is not recorded (the study was tuned by an
            older autodl, or not by autodl).
    """
    facts = study.user_attrs.get(FACTS_KEY) or {}
    missing = [key for key in needed if key not in facts]
    if missing:
        told = f"{what} (no {', '.join(missing)})" if what else ", ".join(missing)
        raise AutodlError(
            f"study {study.study_name!r} does not record {told}: it was tuned by an older "
            "autodl, or not by autodl; tune a new study"
        )
    return facts


def study_splits(study: optuna.Study) -> Splits:
    """Rebuild the exact data splits a study was tuned on, from the facts it recorded.

    Raises:
        AutodlError: If the study does not record them, or its dataset cannot be loaded.
    """
    facts = recorded_facts(study, SPLIT_FACTS, "how its data was split")
    try:
        dataset = load_dataset(facts["dataset"], facts["image_size"])
    except AutodlError as error:
        kind, colon, path = facts["dataset"].partition(":")
        hint = (f" ({kind}:{path} is relative to the folder `autodl tune` ran in)"
                if colon and not Path(path).is_absolute() else "")
        raise AutodlError(f"cannot rebuild the data of study {study.study_name!r}: "
                          f"{error}{hint}") from None
    return make_splits(
        dataset,
        val_split=facts["val_split"],
        test_split=facts["test_split"],
        max_samples=facts["max_samples"],
        seed=facts["split_seed"],
    )


def record_test_accuracy(study: optuna.Study, trial_number: int, accuracy: float) -> None:
    """Record the best model's accuracy on the test split."""
    study.set_user_attr(TEST_KEY, {"trial": trial_number, "accuracy": accuracy})


def recorded_test(study: optuna.Study) -> dict[str, Any] | None:
    """The recorded ``{"trial", "accuracy"}`` of the best model on the test split, if any."""
    return study.user_attrs.get(TEST_KEY)


def record_front_test(study: optuna.Study, accuracies: dict[int, float]) -> None:
    """Record the test accuracy of Pareto-front models, beside those recorded before."""
    recorded = dict(study.user_attrs.get(FRONT_TEST_KEY) or {})
    recorded.update({str(number): accuracy for number, accuracy in accuracies.items()})
    study.set_user_attr(FRONT_TEST_KEY, recorded)


def recorded_test_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> float | None:
    """The recorded test accuracy of a trial's model: the best's, or a Pareto-front one's."""
    if is_multi_objective(study):
        return recorded_front_test(study).get(trial.number)
    test = recorded_test(study)
    return test.get("accuracy") if isinstance(test, dict) and test.get(
        "trial") == trial.number else None


def recorded_front_test(study: optuna.Study) -> dict[int, float]:
    """The recorded test accuracy of each Pareto-front model, by trial number."""
    return {int(number): accuracy
            for number, accuracy in (study.user_attrs.get(FRONT_TEST_KEY) or {}).items()}


def open_existing_storage(url: str) -> optuna.storages.RDBStorage:
    """Open a storage for reading, refusing to create a missing SQLite file.

    Raises:
        AutodlError: If the URL is malformed, the SQLite file does not exist, or the
            database cannot be opened as an Optuna storage.
    """
    db_file = _sqlite_file(url)
    if db_file is not None and not db_file.is_file():
        raise AutodlError(f"no study storage at {url} (run `autodl tune` first)")
    return open_storage(url)


def load_existing(url: str, name: str) -> optuna.Study:
    """Load a study for reading (browse, report, export), never creating anything.

    Raises:
        AutodlError: If the storage does not exist, or has no study of that name (the
            message lists the ones it has).
    """
    storage = open_existing_storage(url)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        known = ", ".join(sorted(names)) or "none yet"
        raise AutodlError(f"no study {name!r} in {url}; studies: {known}")
    return optuna.load_study(study_name=name, storage=storage)


def most_accurate_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best trial; of a multi-objective study, its most accurate front trial.

    Of trials tied in accuracy, the one of lowest validation loss (:func:`accuracy_rank`).

    Returns:
        The trial, or None while no trial has completed.
    """
    if is_multi_objective(study):
        return next(iter(pareto_front(study)), None)
    try:
        best_value = study.best_value  # in the study's direction: it may be a foreign one
    except ValueError:  # no completed trial
        return None
    tied = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if trial.value == best_value]
    return min(tied, key=accuracy_rank)


def best_trial(study: optuna.Study, purpose: str) -> optuna.trial.FrozenTrial:
    """The study's best trial (:func:`most_accurate_trial`), for ``purpose`` (e.g. "report").

    Raises:
        AutodlError: If no trial has completed yet.
    """
    trial = most_accurate_trial(study)
    if trial is None:
        raise AutodlError(
            f"study {study.study_name!r} has no completed trial yet, so there is nothing to "
            f"{purpose}; run `autodl tune` on it first"
        )
    return trial


def load_trial_model(study: optuna.Study, trial: optuna.trial.FrozenTrial,
                     url: str) -> keras.Model:
    """Load a trial's stored model, in Keras's safe mode (no code from model files).

    Raises:
        AutodlError: If the trial has no stored model, or it is not in the study's
            artifact folder on this machine.
    """
    import keras

    store = ModelStore(study_artifact_dir(study, url))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = store.download(trial, Path(tmp) / f"trial-{trial.number}.keras")
        except ArtifactNotFound:
            raise AutodlError(f"the model of trial #{trial.number} is missing from "
                              f"{store.directory}") from None
        return keras.models.load_model(path, safe_mode=True)


def failure_attrs(kind: str, reason: str) -> dict[str, str]:
    """The trial attributes that say why a trial failed."""
    return {TrialAttr.FAIL_REASON: f"{kind}: {reason}"[:1000], TrialAttr.FAIL_KIND: kind}


def fail_lost_trial(
    storage: optuna.storages.BaseStorage, study: optuna.Study, number: int, kind: str,
    reason: str,
) -> tuple[optuna.trial.FrozenTrial, bool]:
    """Fail a trial whose process is gone, saying why, unless it had finished already.

    Args:
        storage: The study's storage.
        study: The study.
        number: The trial's number.
        kind: The kind of failure (see :attr:`TrialAttr.FAIL_KIND`).
        reason: Why, in words.

    Returns:
        The trial as stored now, and whether it was failed here.
    """
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number)
    if storage.get_trial(trial_id).state != TrialState.RUNNING:
        return storage.get_trial(trial_id), False
    for key, value in failure_attrs(kind, reason).items():
        storage.set_trial_user_attr(trial_id, key, value)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)
    return storage.get_trial(trial_id), True


def counted_trials(trials: list[optuna.trial.FrozenTrial]) -> int:
    """How many of a study's ``trials`` count towards ``--trials``: finished and running ones."""
    return sum(trial.state in (*FINISHED, TrialState.RUNNING) for trial in trials)


def finished_trials(study: optuna.Study) -> int:
    """How many trials count towards ``--trials``: complete and pruned ones."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class ModelStore:
    """Keeps models in Optuna's artifact store, attached to their trials.

    Args:
        directory: The artifact folder (created if missing).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.store = FileSystemArtifactStore(str(directory))

    def save(self, trial: optuna.Trial, model: keras.Model) -> None:
        """Upload ``model`` as an artifact of ``trial`` and note its id on the trial."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial-{trial.number}.keras"
            model.save(path)
            artifact_id = upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial
            )
        trial.set_user_attr(TrialAttr.MODEL_ARTIFACT, artifact_id)

    def download(self, trial: optuna.trial.FrozenTrial, path: Path) -> Path:
        """Write the trial's model to ``path`` (a ``.keras`` file), atomically.

        Raises:
            AutodlError: If the trial has no stored model.
        """
        artifact_id = trial.user_attrs.get(TrialAttr.MODEL_ARTIFACT)
        if artifact_id is None:
            raise AutodlError(f"trial {trial.number} has no stored model")
        path.parent.mkdir(parents=True, exist_ok=True)
        # A staging folder of its own: several workers may download the same model at once.
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as staging:
            partial = Path(staging) / path.name
            download_artifact(
                artifact_store=self.store, artifact_id=artifact_id, file_path=str(partial)
            )
            os.replace(partial, path)
        return path


class AdmissionLock:
    """Makes "count the study's trials, then start one" atomic across workers.

    Without it, workers that finish trials at the same moment each see room for one
    more and together overshoot ``--trials``. The lock is held from the count until the
    new trial exists in the storage (the trial runner releases it first thing), so the
    next worker's count includes it. It is the database's own lock on a server
    (PostgreSQL advisory lock, MySQL ``GET_LOCK``) and a file lock beside a SQLite
    file, whose workers all run on one machine.

    Args:
        url: The study's storage URL.
        study_name: The study; workers on other studies are not held up.
    """

    def __init__(self, url: str, study_name: str) -> None:
        self.url = url
        digest = hashlib.sha256(f"autodl:{study_name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self.name = f"autodl-{digest[:16].hex()}"
        self.db_file = _sqlite_file(url)
        self._connection: Any = None
        self._file: Any = None
        self.held = False

    def acquire(self) -> None:
        """Wait for the lock."""
        if self.db_file is not None:
            if self._file is None:
                lock_file = self.db_file.with_name(f".{self.db_file.name}.lock")
                self._file = open(lock_file, "a")  # noqa: SIM115 (kept open for the worker's life)
            fcntl.flock(self._file, fcntl.LOCK_EX)
        else:
            from sqlalchemy import create_engine, text
            from sqlalchemy.pool import NullPool

            if self._connection is None:
                self._connection = create_engine(self.url, poolclass=NullPool).connect()
                self._connection = self._connection.execution_options(
                    isolation_level="AUTOCOMMIT"
                )
            statement = ("SELECT pg_advisory_lock(:key)" if self._on_postgresql()
                         else "SELECT GET_LOCK(:name, -1)")
            self._connection.execute(text(statement), {"key": self.key, "name": self.name})
        self.held = True

    def release(self) -> None:
        """Let the next worker count; does nothing if not held."""
        if not self.held:
            return
        self.held = False
        if self.db_file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            return
        from sqlalchemy import text

        statement = ("SELECT pg_advisory_unlock(:key)" if self._on_postgresql()
                     else "SELECT RELEASE_LOCK(:name)")
        self._connection.execute(text(statement), {"key": self.key, "name": self.name})

    def _on_postgresql(self) -> bool:
        return self._connection.dialect.name == "postgresql"

    def close(self) -> None:
        """Release the lock and its connection or file."""
        self.release()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._file is not None:
            self._file.close()
            self._file = None


#: The trial attributes that say what its model costs where it is deployed.
DEPLOYMENT_ATTRS = (TrialAttr.PARAMS_COUNT, TrialAttr.SIZE_BYTES, TrialAttr.LATENCY_MS,
                    TrialAttr.LATENCY_RUNTIME)


def deployment_figures(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The deployment costs a trial recorded (:data:`DEPLOYMENT_ATTRS`), by attribute name."""
    return {attr: trial.user_attrs[attr] for attr in DEPLOYMENT_ATTRS if attr in trial.user_attrs}


def trial_with_model(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """Trial ``number`` of the study, which must have a stored model.

    Raises:
        AutodlError: If the study has no such trial, or it kept no model: only a trial
            that was the best, or on the Pareto front, when it completed keeps one.
    """
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    trial = trials.get(number)
    if trial is None:
        have = f"#0 to #{max(trials)}" if trials else "none yet"
        raise AutodlError(f"study {study.study_name!r} has no trial #{number} (its trials: "
                          f"{have})")
    if TrialAttr.MODEL_ARTIFACT not in trial.user_attrs:
        kept_by = "on the Pareto front" if is_multi_objective(study) else "the best"
        why = (f"it is {trial.state.name}" if trial.state != TrialState.COMPLETE else
               f"it was not {kept_by} when it completed")
        kept = ", ".join(str(t.number) for t in trials.values()
                         if TrialAttr.MODEL_ARTIFACT in t.user_attrs) or "none"
        raise AutodlError(f"trial #{number} of study {study.study_name!r} has no stored model "
                          f"({why}); trials with one: {kept}")
    return trial
