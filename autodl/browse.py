"""Reading finished studies back: the ``studies`` and ``show`` commands' data.

Everything is read through Optuna's public API from the storage ``autodl tune`` wrote;
no study or trial is ever changed. Tables are pandas DataFrames, so the command line can
print them for people and write them as CSV for machines.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from autodl import storage
from autodl.errors import AutodlError
from autodl.objectives import ACCURACY, LATENCY, PARAMS, SIZE
from autodl.storage import TrialAttr

#: Trial states counted in the studies listing, as its column names.
STATE_COLUMNS = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
}
#: Prefix of the hyperparameter columns in trial tables.
HP_PREFIX = "hp_"
#: Trial-table columns shown in the top trials only when some trial has a value.
_SHOWN_IF_KNOWN = (TrialAttr.SIZE_BYTES, TrialAttr.LATENCY_MS, TrialAttr.RESUMES,
                   TrialAttr.RESUMED_FROM_EPOCH)


@dataclass(frozen=True)
class StudyOverview:
    """One study as ``autodl studies`` lists it."""

    name: str
    arch: str | None
    dataset: str | None
    objectives: str | None
    complete: int
    pruned: int
    failed: int
    running: int
    best_val_accuracy: float | None
    test_accuracy: float | None
    created: datetime.datetime | None
    updated: datetime.datetime | None

    def to_json(self) -> dict[str, Any]:
        """The overview as JSON-ready values; times in ISO 8601 (Optuna's local time)."""
        record = asdict(self)
        for key in ("created", "updated"):
            if record[key] is not None:
                record[key] = record[key].isoformat(timespec="seconds")
        return record


def _objectives(study: optuna.Study) -> list[str] | None:
    """What the study tunes for; None for a study of several values that autodl did not tune."""
    objectives = storage.study_objectives(study)
    return objectives if len(objectives) == len(study.directions) else None


def _overview(study: optuna.Study) -> StudyOverview:
    trials = study.get_trials(deepcopy=False)
    counts = dict.fromkeys(STATE_COLUMNS.values(), 0)
    for trial in trials:
        if trial.state in STATE_COLUMNS:
            counts[STATE_COLUMNS[trial.state]] += 1
    starts = [t.datetime_start for t in trials if t.datetime_start]
    moments = starts + [t.datetime_complete for t in trials if t.datetime_complete]
    facts = storage.recorded_facts(study)
    objectives = _objectives(study)
    # A foreign study's values are not known to be accuracies.
    lead = storage.most_accurate_trial(study) if objectives else None
    return StudyOverview(
        name=study.study_name,
        arch=facts.get("arch"),
        dataset=facts.get("dataset"),
        objectives=",".join(objectives) if objectives else None,
        **counts,
        best_val_accuracy=lead.values[0] if lead else None,
        test_accuracy=lead and storage.recorded_test_of(study, lead),
        created=min(starts, default=None),
        updated=max(moments, default=None),
    )


def list_studies(url: str) -> list[StudyOverview]:
    """Every study in the storage at ``url``, by name.

    Raises:
        AutodlError: If the storage does not exist or cannot be opened.
    """
    rdb = storage.open_existing_storage(url)
    return [
        _overview(optuna.load_study(study_name=name, storage=rdb))
        for name in sorted(optuna.get_all_study_names(rdb))
    ]


def studies_frame(overviews: list[StudyOverview]) -> pd.DataFrame:
    """The studies listing as a table, one row per study."""
    columns = list(StudyOverview.__dataclass_fields__)
    return pd.DataFrame([asdict(o) for o in overviews], columns=columns)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """All trials of a study, one row each, hyperparameters as ``hp_<name>`` columns."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        row = {
            "number": trial.number,
            "state": trial.state.name,
            "val_accuracy": storage.objective_value(trial, ACCURACY),
            "val_loss": (storage.validation_loss(trial)
                         if trial.state == TrialState.COMPLETE else None),
            "epochs": attrs.get(TrialAttr.STOPPED_EPOCH),
            "train_seconds": attrs.get(TrialAttr.TRAIN_SECONDS),
            **{attr: attrs.get(attr) for attr in storage.DEPLOYMENT_ATTRS},
            "started": trial.datetime_start,
            "completed": trial.datetime_complete,
            "fail_reason": attrs.get(TrialAttr.FAIL_REASON),
            TrialAttr.PRUNED_BECAUSE: attrs.get(TrialAttr.PRUNED_BECAUSE),
            # A retry of a lost trial: the trial it continues, and from which epoch.
            TrialAttr.RESUMES: attrs.get(TrialAttr.RESUMES),
            TrialAttr.RESUMED_FROM_EPOCH: attrs.get(TrialAttr.RESUMED_FROM_EPOCH),
        }
        row.update({HP_PREFIX + k: v for k, v in storage.hyperparameters(trial).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    # Whole numbers, also with missing values.
    for column in ("epochs", TrialAttr.PARAMS_COUNT, TrialAttr.SIZE_BYTES, TrialAttr.RESUMES,
                   TrialAttr.RESUMED_FROM_EPOCH):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


def readable_size(size_bytes: float | None) -> str | None:
    """Bytes for people, in decimal units as ``--max-size`` takes them: ``1.69 MB``, ``48.2 KB``."""
    if size_bytes is None or pd.isna(size_bytes):
        return None
    if size_bytes >= 1e6:
        return f"{size_bytes / 1e6:.2f} MB"
    return f"{size_bytes / 1e3:.1f} KB"


def front_frame(study: optuna.Study) -> pd.DataFrame:
    """The Pareto front of a multi-objective study as a table for people, most accurate first.

    Columns: ``trial``; ``val_accuracy``; ``test_accuracy``, as ``autodl tune`` recorded it
    at the end of its run (missing where not measured); ``params``; ``size``, of the TFLite
    file, readable (:func:`readable_size`); ``latency_ms``. A figure the study did not
    measure is missing. The exact bytes are in :func:`trials_frame`.
    """
    tested = storage.recorded_front_test(study)
    rows = [{
        "trial": trial.number,
        "val_accuracy": storage.objective_value(trial, ACCURACY),
        "test_accuracy": tested.get(trial.number),
        "params": storage.objective_value(trial, PARAMS),
        "size": readable_size(storage.objective_value(trial, SIZE)),
        "latency_ms": storage.objective_value(trial, LATENCY),
    } for trial in storage.pareto_front(study)]
    frame = pd.DataFrame(rows, columns=["trial", "val_accuracy", "test_accuracy", "params",
                                        "size", "latency_ms"])
    frame["params"] = frame["params"].astype("Int64")
    return frame


@dataclass
class StudyDetail:
    """One study as ``autodl show`` shows it.

    Attributes:
        overview: The study's line of the studies listing.
        best: The best completed trial; of a multi-objective study, the most accurate
            trial of its Pareto front.
        best_test_accuracy: The test accuracy of that trial's model, if it was measured.
        history: That trial's per-epoch record, one row per epoch.
        top: The most accurate completed trials, most accurate first.
        trials: Every trial.
        front: The Pareto front of a multi-objective study (:func:`front_frame`); None
            for a study of one objective.
    """

    overview: StudyOverview
    best: FrozenTrial
    best_test_accuracy: float | None
    history: pd.DataFrame
    top: pd.DataFrame
    trials: pd.DataFrame
    front: pd.DataFrame | None = None

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """Every hyperparameter of the best trial."""
        return storage.hyperparameters(self.best)


def show_study(url: str, name: str, top: int = 10) -> StudyDetail:
    """Read a study's best trial in full, its top trials and all its trials.

    A study of several objectives has no single best trial: its Pareto front is read, and
    its most accurate front trial stands for the best.

    Args:
        url: The storage URL.
        name: The study's name.
        top: How many of the best completed trials to rank.

    Raises:
        AutodlError: If the storage or the study does not exist, ``top`` is below 1, or
            no trial has completed yet.
    """
    if top < 1:
        raise AutodlError(f"--top must be at least 1, got {top}")
    study = storage.load_existing(url, name)
    overview = _overview(study)
    if overview.best_val_accuracy is None:
        raise AutodlError(
            f"study {name!r} has no completed trial yet ({overview.complete} complete, "
            f"{overview.pruned} pruned, {overview.failed} failed, {overview.running} running)"
        )
    best = storage.best_trial(study, "show")
    multi = storage.is_multi_objective(study)
    trials = trials_frame(study)
    # As storage.accuracy_rank ranks them: the first is the best trial.
    ranked = trials[trials["state"] == TrialState.COMPLETE.name].sort_values(
        ["val_accuracy", "val_loss", "number"], ascending=[False, True, True],
        na_position="last",
    )
    return StudyDetail(
        overview=overview,
        best=best,
        best_test_accuracy=storage.recorded_test_of(study, best),
        history=pd.DataFrame(best.user_attrs.get(TrialAttr.HISTORY, [])),
        top=ranked.head(top).reset_index(drop=True),
        trials=trials,
        front=front_frame(study) if multi else None,
    )


def _fmt(value: Any, accuracy: bool = False) -> str:
    if pd.api.types.is_scalar(value) and pd.isna(value):  # None, NaN, NaT, NA
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if accuracy else f"{value:.4g}"
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """A table's values as text for people.

    Numbers are short, missing values ``-``, and hyperparameter columns are named by the
    hyperparameters' own names.
    """
    shown = frame.astype(object)
    for column in shown.columns:
        accuracy = "acc" in column
        shown[column] = shown[column].map(lambda value, a=accuracy: _fmt(value, a))
    shown.columns = [c.removeprefix(HP_PREFIX) for c in frame.columns]
    return shown


def render_table(frame: pd.DataFrame) -> str:
    """A table for people (:func:`formatted`), without the index."""
    if frame.empty:
        return "(none)"
    return formatted(frame).to_string(index=False)


def render_studies(overviews: list[StudyOverview]) -> str:
    """The studies listing for people."""
    frame = studies_frame(overviews).rename(
        columns={"best_val_accuracy": "best_val_acc", "test_accuracy": "test_acc"}
    )
    return render_table(frame)


def _front_hyperparameters(detail: StudyDetail) -> pd.DataFrame:
    """Every hyperparameter of the front's trials: one row each, one column per trial."""
    numbers = list(detail.front["trial"])
    rows = detail.trials.set_index("number").loc[numbers]
    names = [c for c in rows.columns if c.startswith(HP_PREFIX) and rows[c].notna().any()]
    table = rows[names].T
    table.columns = [f"#{number}" for number in numbers]
    table.insert(0, "hyperparameter", [name.removeprefix(HP_PREFIX) for name in names])
    return table


def render_detail(detail: StudyDetail) -> str:
    """``autodl show``'s text: the study, its best trial in full, its top trials.

    A study of several objectives shows its Pareto front and the front's hyperparameters
    instead of the best trial.
    """
    o, best = detail.overview, detail.best
    attrs = best.user_attrs
    facts = [
        ("arch", o.arch), ("dataset", o.dataset),
        ("trials", f"{o.complete} complete, {o.pruned} pruned, {o.failed} failed, "
                   f"{o.running} running"),
    ]
    if detail.front is not None:
        facts.insert(2, ("objectives", o.objectives))
    else:
        facts += [
            ("best trial", f"#{best.number}"),
            ("validation accuracy", _fmt(best.value, accuracy=True)),
            ("test accuracy", _fmt(detail.best_test_accuracy, accuracy=True)),
            ("parameters", f"{attrs[TrialAttr.PARAMS_COUNT]:,}"
             if TrialAttr.PARAMS_COUNT in attrs else None),
            ("train seconds", attrs.get(TrialAttr.TRAIN_SECONDS)),
            ("epochs trained", attrs.get(TrialAttr.STOPPED_EPOCH)),
        ]
        facts += [(f"  {k}", v) for k, v in detail.hyperparameters.items()]
    width = max(len(k) for k, _ in facts)
    lines = [f"Study {o.name}"] + [f"{k:<{width}}  {_fmt(v)}" for k, v in facts]
    history = f"Per-epoch history of trial #{best.number}"
    if detail.front is not None:
        lines += ["", f"Pareto front: {len(detail.front)} trials, most accurate first",
                  render_table(detail.front), "", "Hyperparameters of the front's trials",
                  render_table(_front_hyperparameters(detail))]
        history += ", the front's most accurate"
    lines += ["", history, render_table(detail.history)]
    top = detail.top
    # Hyperparameters that differ between the ranked trials; the others are listed above.
    same = [c for c in top.columns if c.startswith(HP_PREFIX)
            and top[c].astype(str).nunique() <= 1]
    # Deployment costs a study did not measure, or retries where no trial was lost, would
    # be columns of dashes.
    unknown = [c for c in _SHOWN_IF_KNOWN if c in top and top[c].isna().all()]
    hidden = {"state", "started", "completed", "fail_reason", TrialAttr.PRUNED_BECAUSE,
              TrialAttr.LATENCY_RUNTIME, *same, *unknown}
    columns = [c for c in top.columns if c not in hidden]
    lines += ["", f"Top {len(top)} of {o.complete} completed trials",
              render_table(top[columns])]
    return "\n".join(lines)


def write_new_file(path: str, text: str, force: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then renamed.

    Args:
        path: The file to write.
        text: Its content.
        force: Replace the file if it exists.

    Raises:
        AutodlError: If the file exists (and ``force`` is off), is a folder, or its
            folder does not exist.
    """
    target = Path(path)
    if target.is_dir():
        raise AutodlError(f"{path} is a folder; give a file name")
    if target.exists() and not force:
        raise AutodlError(f"{path} already exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise AutodlError(f"folder does not exist: {target.parent}")
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                       suffix=".partial")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target
