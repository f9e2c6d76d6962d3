"""What a study tunes for (``--objective``), and the deployment limits (``--max-*``).

``accuracy`` is measured by training. ``params``, ``size`` and ``latency`` belong to the
model's architecture, not its weights: they are measured on the built model before it
trains (:mod:`autodl.deployment`), so a configuration over a limit is pruned untrained,
and the multi-objective pruner can compare a trial with the trials no dearer than it
from its first epoch. One objective makes a single-objective Optuna study, several a
multi-objective one, its directions set per objective; accuracy always comes first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from autodl.errors import AutodlError, choose

ACCURACY = "accuracy"
PARAMS = "params"
SIZE = "size"
LATENCY = "latency"


@dataclass(frozen=True)
class Objective:
    """One thing a study can tune for.

    Attributes:
        name: What ``--objective`` calls it.
        metric: The study's name for its values: optuna-dashboard's axis, table columns.
        direction: ``maximize`` or ``minimize``, as Optuna takes it.
        description: What it is, for ``--help``.
        limit: The ``autodl tune`` option that caps it, if any.
        unit: The limit's unit, for messages.
        per_unit: The objective's value in one unit of the limit (bytes in a MB).
        limit_help: What the limit caps, for ``--help``.
    """

    name: str
    metric: str
    direction: str
    description: str
    limit: str | None = None
    unit: str = ""
    per_unit: float = 1.0
    limit_help: str = ""


#: ``--objective`` NAME: the objective. The first is the default, and always tuned.
OBJECTIVES: dict[str, Objective] = {
    ACCURACY: Objective(ACCURACY, "val_accuracy", "maximize",
                        "validation accuracy of the trial's best epoch"),
    PARAMS: Objective(PARAMS, "params", "minimize", "the model's parameter count",
                      "--max-params", "parameters", limit_help="the most parameters"),
    SIZE: Objective(SIZE, "size_bytes", "minimize",
                    "bytes of the model exported as TFLite (float32)", "--max-size", "MB",
                    1e6, "the largest TFLite file, in MB (10^6 bytes)"),
    LATENCY: Objective(LATENCY, "latency_ms", "minimize",
                       "milliseconds per example at batch 1: the median of timed calls of "
                       "the TFLite model by the LiteRT interpreter on one thread of this "
                       "machine (by Keras when LiteRT is not installed)", "--max-latency",
                       "ms", limit_help="the longest latency at batch 1, in milliseconds"),
}
#: The objectives measured on the built model, before it trains.
DEPLOYMENT = tuple(name for name in OBJECTIVES if name != ACCURACY)


def parse_objectives(texts: Iterable[str]) -> tuple[str, ...]:
    """The objectives ``--objective`` names: comma-separated or repeated, accuracy first.

    Raises:
        AutodlError: For an unknown name, a name given twice, or no accuracy: the other
            objectives are known before training, so they alone would train nothing.
    """
    names = [name.strip() for text in texts for name in text.split(",")]
    for name in names:
        choose(OBJECTIVES, name, "objective")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise AutodlError(f"--objective names {', '.join(twice)} twice")
    if ACCURACY not in names:
        raise AutodlError(f"--objective {','.join(names)} leaves out accuracy: the others are "
                          "known before a model trains, so they are tuned against it, e.g. "
                          f"--objective accuracy,{names[0]}")
    return (ACCURACY, *(name for name in names if name != ACCURACY))


def directions(objectives: Iterable[str]) -> list[str]:
    """The Optuna study directions of the objectives, in order."""
    return [OBJECTIVES[name].direction for name in objectives]


def metric_names(objectives: Iterable[str]) -> list[str]:
    """The study's names for its values (``study.set_metric_names``), in order."""
    return [OBJECTIVES[name].metric for name in objectives]


def dominates(a: list[float], b: list[float], maximize: list[bool]) -> bool:
    """Whether values ``a`` are no worse than ``b`` on every objective, and better on one."""
    pairs = [(x, y) if up else (-x, -y) for x, y, up in zip(a, b, maximize, strict=True)]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)
