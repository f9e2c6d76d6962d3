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


@dataclass(frozen=True)
class StudyOverview:
    """One study as ``autodl studies`` lists it."""

    name: str
    arch: str | None
    dataset: str | None
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


def _best_value(study: optuna.Study) -> float | None:
    if len(study.directions) != 1:  # a multi-objective study (not autodl's) has no best value
        return None
    try:
        return study.best_value
    except ValueError:  # no completed trial
        return None


def _test_accuracy(study: optuna.Study) -> float | None:
    test = storage.recorded_test(study)
    return test.get("accuracy") if isinstance(test, dict) else None


def _overview(study: optuna.Study) -> StudyOverview:
    trials = study.get_trials(deepcopy=False)
    counts = dict.fromkeys(STATE_COLUMNS.values(), 0)
    for trial in trials:
        if trial.state in STATE_COLUMNS:
            counts[STATE_COLUMNS[trial.state]] += 1
    starts = [t.datetime_start for t in trials if t.datetime_start]
    moments = starts + [t.datetime_complete for t in trials if t.datetime_complete]
    facts = storage.recorded_facts(study)
    return StudyOverview(
        name=study.study_name,
        arch=facts.get("arch"),
        dataset=facts.get("dataset"),
        **counts,
        best_val_accuracy=_best_value(study),
        test_accuracy=_test_accuracy(study),
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
            "val_accuracy": trial.value,
            "epochs": attrs.get(TrialAttr.STOPPED_EPOCH),
            "train_seconds": attrs.get(TrialAttr.TRAIN_SECONDS),
            "params_count": attrs.get(TrialAttr.PARAMS_COUNT),
            "started": trial.datetime_start,
            "completed": trial.datetime_complete,
            "fail_reason": attrs.get(TrialAttr.FAIL_REASON),
            # A retry of a lost trial: the trial it continues, and from which epoch.
            "resumes_trial": attrs.get(TrialAttr.RESUMES),
            "resumed_from_epoch": attrs.get(TrialAttr.RESUMED_FROM_EPOCH),
        }
        row.update({HP_PREFIX + k: v for k, v in storage.hyperparameters(trial).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    # Whole numbers, also with missing values.
    for column in ("epochs", "params_count", "resumes_trial", "resumed_from_epoch"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


@dataclass
class StudyDetail:
    """One study as ``autodl show`` shows it.

    Attributes:
        overview: The study's line of the studies listing.
        best: The best completed trial.
        best_test_accuracy: The test accuracy of the best trial's model, if it was measured.
        history: The best trial's per-epoch record, one row per epoch.
        top: The best completed trials, best first.
        trials: Every trial.
    """

    overview: StudyOverview
    best: FrozenTrial
    best_test_accuracy: float | None
    history: pd.DataFrame
    top: pd.DataFrame
    trials: pd.DataFrame

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """Every hyperparameter of the best trial."""
        return storage.hyperparameters(self.best)


def show_study(url: str, name: str, top: int = 10) -> StudyDetail:
    """Read a study's best trial in full, its top trials and all its trials.

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
    best = study.best_trial
    test = storage.recorded_test(study)
    measured = isinstance(test, dict) and test.get("trial") == best.number
    trials = trials_frame(study)
    ranked = trials[trials["state"] == TrialState.COMPLETE.name].sort_values(
        ["val_accuracy", "number"], ascending=[False, True]
    )
    return StudyDetail(
        overview=overview,
        best=best,
        best_test_accuracy=test.get("accuracy") if measured else None,
        history=pd.DataFrame(best.user_attrs.get(TrialAttr.HISTORY, [])),
        top=ranked.head(top).reset_index(drop=True),
        trials=trials,
    )


def _fmt(value: Any, accuracy: bool = False) -> str:
    if pd.api.types.is_scalar(value) and pd.isna(value):  # None, NaN, NaT, NA
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if accuracy else f"{value:.4g}"
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def render_table(frame: pd.DataFrame) -> str:
    """A table for people: short numbers, ``-`` for missing values, no index."""
    if frame.empty:
        return "(none)"
    shown = frame.astype(object)
    for column in shown.columns:
        accuracy = "acc" in column
        shown[column] = shown[column].map(lambda value, a=accuracy: _fmt(value, a))
    shown.columns = [c.removeprefix(HP_PREFIX) for c in frame.columns]
    return shown.to_string(index=False)


def render_studies(overviews: list[StudyOverview]) -> str:
    """The studies listing for people."""
    frame = studies_frame(overviews).rename(
        columns={"best_val_accuracy": "best_val_acc", "test_accuracy": "test_acc"}
    )
    return render_table(frame)


def render_detail(detail: StudyDetail) -> str:
    """``autodl show``'s text: the study, its best trial in full, its top trials."""
    o, best = detail.overview, detail.best
    attrs = best.user_attrs
    facts = [
        ("arch", o.arch), ("dataset", o.dataset),
        ("trials", f"{o.complete} complete, {o.pruned} pruned, {o.failed} failed, "
                   f"{o.running} running"),
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
    lines += ["", f"Per-epoch history of trial #{best.number}", render_table(detail.history)]
    top = detail.top
    # Hyperparameters that differ between the ranked trials; the others are listed above.
    same = [c for c in top.columns if c.startswith(HP_PREFIX)
            and top[c].astype(str).nunique() <= 1]
    hidden = {"state", "started", "completed", "fail_reason", *same}
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
