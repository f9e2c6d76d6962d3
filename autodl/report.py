"""The study report: one HTML page and its PNG figures, opened in a browser without a server.

:func:`write_report` reads a finished study and writes into one folder ``index.html``
(a summary of the study, then every figure) and the PNG files it shows, referenced by
relative paths only: no script, no stylesheet or font from the network. The figures:

- the optimization history, parameter importances and parallel coordinates, drawn by
  Optuna's own matplotlib visualizations;
- the validation accuracy of every trial per epoch, with pruned trials marked where they
  stopped;
- the best trial's training curves (loss and accuracy, training against validation);
- the confusion matrix of the best model on the test split, and a grid of test images
  with predicted and true labels, mistakes in red.

A study of several objectives (``--objective accuracy,latency``) has no single best
trial: its report adds, first, its Pareto front, and the figures of one model show the
most accurate trial of the front.

Everything is written to a hidden folder beside the destination, then renamed into
place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import functools
import html
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
import numpy as np
import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from autodl import __version__, browse, storage
from autodl.errors import AutodlError
from autodl.objectives import ACCURACY, LATENCY, metric_names
from autodl.runtime import quiet_libraries
from autodl.storage import TrialAttr
from autodl.trial import MONITOR

INDEX = "index.html"
#: Pixels per inch of every PNG: a figure's size in pixels is its size in inches times this.
DPI = 100
#: Marks a folder as written by this module, so that ``force`` only ever replaces a report.
GENERATOR = "autodl report"
#: The most test images the grid shows.
GRID_IMAGES = 40
TARGET = "Validation accuracy"
PARETO_FILE = "pareto_front.png"


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report.

    Attributes:
        file: The PNG's file name.
        title: Its heading on the page.
        caption: What it shows, in a sentence.
        size: Width and height in pixels.
    """

    file: str
    title: str
    caption: str
    size: tuple[int, int]


class _Skipped(Exception):
    """A figure that cannot be drawn for this study; the page says why instead."""


@dataclass
class _Context:
    """What the figures are drawn from.

    ``best`` is the best trial; of a multi-objective study, its most accurate front trial.
    """

    study: optuna.Study
    trials: list[FrozenTrial]
    best: FrozenTrial
    x_test: np.ndarray
    y_test: np.ndarray
    predicted: np.ndarray
    class_names: list[str]

    @property
    def test_accuracy(self) -> float:
        """The best model's accuracy on the test split."""
        return float(np.mean(self.predicted == self.y_test))

    @functools.cached_property
    def multi_objective(self) -> bool:
        """Whether the study tunes accuracy against deployment costs."""
        return storage.is_multi_objective(self.study)

    @property
    def best_label(self) -> str:
        """What ``best`` is, in words."""
        return "most accurate front trial" if self.multi_objective else "best trial"

    @functools.cached_property
    def figures(self) -> tuple[FigureSpec, ...]:
        """The report's figures: a multi-objective study's Pareto front first."""
        return (_pareto_spec(self.study), *FIGURES) if self.multi_objective else FIGURES

    def target(self) -> dict[str, Any]:
        """The arguments that make Optuna's visualizations show validation accuracy.

        Optuna plots a multi-objective study only for a ``target``: its first value.
        """
        if not self.multi_objective:
            return {"target_name": TARGET}
        return {"target": functools.partial(storage.objective_value, name=ACCURACY),
                "target_name": TARGET}


def _count(trials: list[FrozenTrial], state: TrialState) -> int:
    return sum(trial.state == state for trial in trials)


def _new_figure(spec: FigureSpec, **subplots: Any) -> tuple[Figure, Any]:
    figure = Figure(figsize=(spec.size[0] / DPI, spec.size[1] / DPI), dpi=DPI)
    return figure, figure.subplots(**subplots)


def _optuna_figure(axes: Any) -> Figure:
    """The figure an Optuna visualization drew on (it returns its main axes), laid out to fit."""
    axes.figure.set_layout_engine("tight")
    return axes.figure


def _require_hyperparameters(context: _Context) -> None:
    if not context.best.params:
        raise _Skipped("The study searched no hyperparameter.")


def _optimization_history(context: _Context, spec: FigureSpec) -> Figure:
    from optuna.visualization.matplotlib import plot_optimization_history

    axes = plot_optimization_history(context.study, **context.target())
    if context.multi_objective:  # Optuna draws no best-so-far line for a target
        completed = sorted((t.number, t.values[0]) for t in context.trials
                           if t.state == TrialState.COMPLETE)
        numbers, values = zip(*completed, strict=True)
        axes.plot(numbers, np.maximum.accumulate(values), color="tab:red", label="Best Value")
        axes.legend()
    return _optuna_figure(axes)


def _param_importances(context: _Context, spec: FigureSpec) -> Figure:
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization.matplotlib import plot_param_importances

    _require_hyperparameters(context)
    if _count(context.trials, TrialState.COMPLETE) < 2:
        raise _Skipped("Importances need at least two completed trials.")
    # PED-ANOVA: about 0.03 s on 1,000 trials, where the default fANOVA takes 30 s.
    return _optuna_figure(plot_param_importances(
        context.study, evaluator=PedAnovaImportanceEvaluator(), **context.target()
    ))


def _parallel_coordinate(context: _Context, spec: FigureSpec) -> Figure:
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    _require_hyperparameters(context)
    # Matplotlib's plain style: ggplot's grid would repeat on every parameter's axis.
    with matplotlib.style.context("default"), matplotlib.rc_context({"ytick.labelsize": 8}):
        return _optuna_figure(plot_parallel_coordinate(context.study, **context.target()))


def _epoch_values(trial: FrozenTrial) -> list[tuple[int, float]]:
    """A trial's validation accuracy per epoch: the values it reported, else its history.

    A multi-objective trial reports none (Optuna's pruning takes one objective).
    """
    if trial.intermediate_values:
        return sorted(trial.intermediate_values.items())
    return [(record["epoch"], record[MONITOR])
            for record in trial.user_attrs.get(TrialAttr.HISTORY) or [] if MONITOR in record]


def _intermediate_values(context: _Context, spec: FigureSpec) -> Figure:
    """Every trial's validation accuracy per epoch; pruned ones end in a cross.

    Optuna's own version gives every trial a legend entry and no sign of pruning.
    """
    from matplotlib.collections import LineCollection

    figure, ax = _new_figure(spec)
    drawn = 0
    for state, color, label in ((TrialState.COMPLETE, "tab:blue", "complete"),
                                (TrialState.PRUNED, "tab:red", "pruned (× where stopped)")):
        curves = [curve for t in context.trials
                  if t.state == state and (curve := _epoch_values(t))]
        if not curves:
            continue
        drawn += len(curves)
        alpha = max(0.15, min(0.8, 20 / len(curves)))
        ax.add_collection(LineCollection([np.asarray(c) for c in curves], colors=color,
                                         alpha=alpha, linewidths=1))
        ends = np.asarray([c[-1] for c in curves])
        ax.scatter(ends[:, 0], ends[:, 1], color=color, alpha=alpha, s=16,
                   marker="x" if state == TrialState.PRUNED else ".")
        ax.plot([], [], color=color, label=f"{label}: {len(curves)}")
    if not drawn:
        raise _Skipped("No trial reported a value per epoch.")
    best = _epoch_values(context.best)
    if best:
        ax.plot(*zip(*best, strict=True), color="black", linewidth=2.5, marker="o",
                markersize=4, label=f"{context.best_label} #{context.best.number}")
    ax.autoscale_view()
    ax.set_xlabel("Epoch")
    ax.set_ylabel(TARGET)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower right")
    ax.set_title("Intermediate values")
    figure.tight_layout()
    return figure


def _front_axis(study: optuna.Study) -> int:
    """The index of the study's value the Pareto figure puts across.

    Latency when it is an objective (what a deployment is most often bound by), else the
    first deployment objective.
    """
    deployment = storage.study_objectives(study)[1:]
    return 1 + deployment.index(LATENCY if LATENCY in deployment else deployment[0])


def _value_names(study: optuna.Study) -> list[str]:
    """The names of the study's values, as optuna-dashboard shows them."""
    return study.metric_names or metric_names(storage.study_objectives(study))


#: Front trials the Pareto figure labels with their numbers; more would overlap.
_LABELLED_FRONT = 20


def _pareto_spec(study: optuna.Study) -> FigureSpec:
    """The Pareto figure of this study: its caption names the value across."""
    across = _value_names(study)[_front_axis(study)]
    caption = (f"Every completed trial's validation accuracy against its {across}; the "
               "Pareto front (the trials no other trial beats on every objective) in red, "
               "joined, with each front trial's number.")
    if len(study.directions) > 2:
        caption += (" The front is judged on every objective, so in this view a front "
                    "trial may look beaten.")
    return FigureSpec(PARETO_FILE, "Pareto front", caption, (900, 560))


def _pareto_figure(context: _Context, spec: FigureSpec) -> Figure:
    """Validation accuracy against one deployment cost: every completed trial, and the front."""
    study = context.study
    axis = _front_axis(study)
    names = _value_names(study)
    completed = [t for t in context.trials if t.state == TrialState.COMPLETE]
    front = sorted(storage.pareto_front(study), key=lambda t: t.values[axis])
    figure, ax = _new_figure(spec)
    xs = [t.values[axis] for t in completed]
    ax.scatter(xs, [t.values[0] for t in completed], color="tab:blue", alpha=0.5, s=20,
               label=f"completed trials: {len(completed)}")
    across, up = [t.values[axis] for t in front], [t.values[0] for t in front]
    ax.plot(across, up, color="tab:red", marker="o", markersize=6, linewidth=1.5,
            label=f"Pareto front: {len(front)} trials")
    if len(front) <= _LABELLED_FRONT:
        for trial, x, y in zip(front, across, up, strict=True):
            ax.annotate(f"#{trial.number}", (x, y), textcoords="offset points", xytext=(5, -11),
                        fontsize=8)
    if min(xs) > 0 and max(xs) >= 100 * min(xs):  # parameter counts span magnitudes
        ax.set_xscale("log")
    ax.set_xlabel(names[axis])
    ax.set_ylabel(names[0])
    ax.legend(loc="lower right")
    ax.set_title(f"{names[0]} against {names[axis]}")
    figure.tight_layout()
    return figure


def _training_curves(context: _Context, spec: FigureSpec) -> Figure:
    history = context.best.user_attrs.get(TrialAttr.HISTORY) or []
    if not history:
        raise _Skipped(f"Trial #{context.best.number} recorded no training history.")
    figure, axes = _new_figure(spec, ncols=2)
    epochs = [record["epoch"] for record in history]
    best_epoch = context.best.user_attrs.get(TrialAttr.BEST_EPOCH)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = [record.get(prefix + metric, math.nan) for record in history]
            ax.plot(epochs, values, marker="o", markersize=4, label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="gray", linestyle="--", linewidth=1,
                       label=f"best epoch ({best_epoch})")
        ax.set_xlabel("Epoch")
        ax.set_title(metric.capitalize())
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    figure.suptitle(f"Trial #{context.best.number}")
    figure.tight_layout()
    return figure


def _short(name: str, width: int = 10) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def _confusion_matrix(context: _Context, spec: FigureSpec) -> Figure:
    k = len(context.class_names)
    counts = np.bincount(context.y_test * k + context.predicted, minlength=k * k).reshape(k, k)
    figure, ax = _new_figure(spec)
    ax.grid(False)
    image = ax.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=ax, label="Test examples")
    if k <= 30:
        names = [_short(name) for name in context.class_names]
        ax.set_xticks(range(k), names, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), names)
    if k <= 20:
        for (true, predicted), count in np.ndenumerate(counts):
            ax.text(predicted, true, str(count), ha="center", va="center", fontsize=9,
                    color="white" if count > counts.max() / 2 else "black")
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(f"Test accuracy {context.test_accuracy:.4f} ({len(context.y_test)} examples)")
    figure.tight_layout()
    return figure


def _is_image_shape(shape: tuple[int, ...]) -> bool:
    """Whether examples of this shape are images: height, width and 1 or 3 channels."""
    return len(shape) == 3 and shape[-1] in (1, 3)


def _grid_examples(context: _Context) -> np.ndarray:
    """Indices of the test examples to show: mistakes first (up to half the grid), then others."""
    wrong = np.flatnonzero(context.predicted != context.y_test)
    right = np.flatnonzero(context.predicted == context.y_test)
    size = min(GRID_IMAGES, len(context.y_test))
    shown_wrong = wrong[: max(size // 2, size - len(right))]
    return np.concatenate([shown_wrong, right[: size - len(shown_wrong)]])


def _test_images(context: _Context, spec: FigureSpec) -> Figure:
    shape = context.x_test.shape[1:]
    if not _is_image_shape(shape):
        raise _Skipped(f"The examples are not images (shape {tuple(shape)}), so there is no "
                       "grid of test images.")
    shown = _grid_examples(context)
    width, height = spec.size
    # Cells a little taller than wide (room for the label), filling the figure.
    columns = min(len(shown), math.ceil(math.sqrt(len(shown) * 1.3 * width / height)))
    rows = math.ceil(len(shown) / columns)
    columns = math.ceil(len(shown) / rows)  # the same rows, as few empty cells as can be
    figure, axes = _new_figure(spec, nrows=rows, ncols=columns, squeeze=False)
    names = context.class_names
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, index in zip(axes.flat, shown, strict=False):
        image = np.clip(context.x_test[index], 0.0, 1.0)
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(image)
        true, predicted = context.y_test[index], context.predicted[index]
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if predicted == true:
            ax.set_title(_short(names[predicted]), fontsize=8)
            continue
        ax.set_title(f"{_short(names[predicted])}\ntrue {_short(names[true])}", fontsize=8,
                     color="red")
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor("red")
            spine.set_linewidth(3)
    wrong = int(np.sum(context.predicted != context.y_test))
    figure.suptitle(f"{len(shown)} of {len(context.y_test)} test images, mistakes first "
                    f"({wrong} in all): predicted label, and the true one in red where wrong",
                    fontsize=10)
    figure.tight_layout()
    return figure


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("optimization_history.png", "Optimization history",
               "Each completed trial's validation accuracy, and the best so far.", (900, 500)),
    FigureSpec("param_importances.png", "Hyperparameter importances",
               "How much each hyperparameter explains of the validation accuracy "
               "(PED-ANOVA, over the completed trials).", (900, 500)),
    FigureSpec("parallel_coordinate.png", "Parallel coordinates",
               "Every completed trial as a line through its hyperparameters, coloured by "
               "validation accuracy.", (1200, 600)),
    FigureSpec("intermediate_values.png", "Intermediate values",
               "Validation accuracy after each epoch, for every complete and pruned trial; "
               "a cross marks where the pruner stopped a trial.", (900, 500)),
    FigureSpec("training_curves.png", "Training curves of the best trial",
               "Loss and accuracy per epoch, on the training and the validation data; the "
               "model kept is the one of the best epoch.", (1000, 420)),
    FigureSpec("confusion_matrix.png", "Confusion matrix",
               "The best model's predictions on the test split, which no trial saw.",
               (720, 620)),
    FigureSpec("test_images.png", "Test images",
               "Test images with the best model's predicted label: its mistakes first, in "
               "red with the true label, then images it got right.", (1000, 760)),
)

_DRAW: dict[str, Callable[[_Context, FigureSpec], Figure]] = {
    PARETO_FILE: _pareto_figure,
    "optimization_history.png": _optimization_history,
    "param_importances.png": _param_importances,
    "parallel_coordinate.png": _parallel_coordinate,
    "intermediate_values.png": _intermediate_values,
    "training_curves.png": _training_curves,
    "confusion_matrix.png": _confusion_matrix,
    "test_images.png": _test_images,
}


def _draw(context: _Context, folder: Path) -> dict[str, str]:
    """Write every figure that can be drawn into ``folder``.

    Returns:
        For each figure that could not be drawn, why not, by file name.
    """
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # Optuna's visualizations draw on pyplot figures

    skipped = {}
    # Optuna's style for every figure, restored afterwards. Its warnings (experimental
    # functions, importances from few trials) would only clutter the command's output.
    with plt.style.context("ggplot"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for spec in context.figures:
            try:
                figure = _DRAW[spec.file](context, spec)
            except _Skipped as reason:
                skipped[spec.file] = str(reason)
                continue
            try:
                figure.set_size_inches(spec.size[0] / DPI, spec.size[1] / DPI)
                figure.savefig(folder / spec.file, dpi=DPI, format="png")
            finally:
                plt.close(figure)
    return skipped


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(_fmt(value))}</td></tr>"
                    for name, value in rows)
    return f"<table>{cells}</table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1240px;
       padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1rem; }
th, td { text-align: left; padding: 0.2rem 1rem 0.2rem 0; border-bottom: 1px solid #ddd; }
th { font-weight: 600; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
nav a { margin-right: 1rem; }
.note { background: #fff6d5; padding: 0.5rem 1rem; }
"""


def _page(context: _Context, storage_url: str, skipped: dict[str, str]) -> str:
    """The report's HTML: the study's summary, then each figure or why it is missing."""
    study, best, trials = context.study, context.best, context.trials
    facts = storage.recorded_facts(study)
    states = ", ".join(f"{_count(trials, state)} {word}" for state, word in (
        (TrialState.COMPLETE, "complete"), (TrialState.PRUNED, "pruned"),
        (TrialState.FAIL, "failed")))
    attrs = best.user_attrs
    summary = [
        ("storage", make_url(storage_url).render_as_string(hide_password=True)),
        ("architecture", facts.get("arch", "?")),
        ("dataset", facts.get("dataset", "?")),
        ("trials", f"{len(trials)}: {states}"),
        (context.best_label, f"#{best.number}"),
        ("validation accuracy", f"{best.values[0]:.4f}"),
        ("test accuracy", f"{context.test_accuracy:.4f} ({len(context.y_test)} examples)"),
        ("parameters", f"{attrs[TrialAttr.PARAMS_COUNT]:,}"
         if TrialAttr.PARAMS_COUNT in attrs else "?"),
        ("epochs trained", attrs.get(TrialAttr.STOPPED_EPOCH, "?")),
    ]
    if TrialAttr.SIZE_BYTES in attrs:
        summary.append(("TFLite size", browse.readable_size(attrs[TrialAttr.SIZE_BYTES])))
    if TrialAttr.LATENCY_MS in attrs:
        summary.append(("latency", f"{attrs[TrialAttr.LATENCY_MS]:.4g} ms per example "
                                   f"({attrs.get(TrialAttr.LATENCY_RUNTIME, '?')})"))
    front = ""
    if context.multi_objective:
        summary.insert(3, ("objectives", ", ".join(storage.study_objectives(study))))
        table = browse.formatted(browse.front_frame(study)).to_html(index=False, border=0)
        front = (f"<h2>Pareto front</h2>\n<p>The trials no other trial beats on every "
                 f"objective, most accurate first, with the test accuracy measured at the end "
                 f"of <code>autodl tune</code>. The figures of one model show trial "
                 f"#{best.number}.</p>\n{table}")
    hyperparameters = storage.hyperparameters(best)
    hyperparameters_title = (f"Hyperparameters of trial #{best.number}"
                             if context.multi_objective else "Best hyperparameters")
    sections = []
    for spec in context.figures:
        anchor = spec.file.removesuffix(".png")
        body = (f'<p class="note">{html.escape(skipped[spec.file])}</p>'
                if spec.file in skipped else
                f'<img src="{spec.file}" alt="{html.escape(spec.title)}" '
                f'width="{spec.size[0]}" height="{spec.size[1]}">')
        sections.append(f'<section id="{anchor}"><h2>{html.escape(spec.title)}</h2>\n'
                        f"<p>{html.escape(spec.caption)}</p>\n{body}</section>")
    links = " ".join(f'<a href="#{spec.file.removesuffix(".png")}">{html.escape(spec.title)}</a>'
                     for spec in context.figures)
    name = html.escape(study.study_name)
    generated = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<title>Study {name}: autodl report</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Study {name}</h1>
{_table(summary)}
{front}
<h2>{hyperparameters_title}</h2>
{_table(list(hyperparameters.items()))}
<nav>{links}</nav>
{chr(10).join(sections)}
<p><small>Written by autodl {html.escape(__version__)} on {generated}.</small></p>
</body>
</html>
"""


def _predict(study: optuna.Study, best: FrozenTrial, storage_url: str) -> tuple[Any, np.ndarray]:
    """The study's test split, and the best model's predicted class for each example."""
    splits = storage.study_splits(study)
    model = storage.load_trial_model(study, best, storage_url)
    probabilities = model.predict(splits.x_test, batch_size=256, verbose=0)
    return splits, np.argmax(probabilities, axis=-1)


def _is_report(folder: Path) -> bool:
    """Whether ``folder`` holds a report written here (so ``force`` may replace it)."""
    try:
        with open(folder / INDEX, encoding="utf-8") as page:
            return f'<meta name="generator" content="{GENERATOR}">' in page.read(1000)
    except (OSError, UnicodeDecodeError):
        return False


def _check_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise AutodlError(f"{out} exists and is not a folder")
    if not out.exists():
        return
    if not force:
        raise AutodlError(f"{out} already exists; pass --force to replace it")
    if any(out.iterdir()) and not _is_report(out):
        raise AutodlError(f"{out} is not an autodl report; refusing to replace it even with "
                          "--force (choose another --out)")


def _move_into_place(folder: Path, out: Path, force: bool) -> None:
    """Rename the finished ``folder`` to ``out``, replacing an old report there if ``force``."""
    _check_destination(out, force)  # again: something may have appeared meanwhile
    if not out.exists():
        os.rename(folder, out)
        return
    old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
    os.rename(out, old)
    try:
        os.rename(folder, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_report(
    storage_url: str, study_name: str, out: Path, force: bool = False
) -> list[Path]:
    """Write the HTML report of a study, with its figures, into the folder ``out``.

    Draws with matplotlib's Agg backend (no display needed).

    Args:
        storage_url: The study's Optuna storage URL.
        study_name: The study's name.
        out: The folder to create; it must not exist, unless ``force``.
        force: Replace ``out`` if it holds an earlier report (or nothing).

    Returns:
        The written files: ``out/index.html`` first, then the PNG figures.

    Raises:
        AutodlError: If the study does not exist or has no completed trial, its data or
            best model cannot be loaded, or ``out`` exists (without ``force``, or holding
            something other than a report).
    """
    quiet_libraries()
    out = Path(out)
    _check_destination(out, force)
    study = storage.load_existing(storage_url, study_name)
    best = storage.best_trial(study, "report")
    splits, predicted = _predict(study, best, storage_url)
    context = _Context(study, study.get_trials(deepcopy=False), best, splits.x_test,
                       splits.y_test, predicted, splits.class_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    folder.mkdir()  # beside out, so that the final rename stays on one file system
    try:
        skipped = _draw(context, folder)
        (folder / INDEX).write_text(_page(context, storage_url, skipped), encoding="utf-8")
        written = [INDEX, *(spec.file for spec in context.figures if spec.file not in skipped)]
        _move_into_place(folder, out, force)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return [out / name for name in written]
