"""Study configuration: the search space and the options of ``autodl tune``.

The search space is made of *specs*: an integer or float range, a list of choices, or a
fixed value. Plugins declare their hyperparameters in KerasTuner style (``hp.Int(...)``);
the core declares the training ones (``TRAINING_SPACE``). A study config file or ``--set``
narrows any of them; :meth:`Space.resolve` merges what was declared with what the user
asked for and refuses what the declaration cannot take.

A study config file is TOML with two optional tables::

    [tune]                       # any option of `autodl tune`, as on the command line
    arch = "cnn"
    epochs = 10

    [space]
    learning_rate = {low = 1e-4, high = 1e-2, log = true}
    batch_size = [32, 64]        # a list is a choice
    optimizer = "adam"           # a plain value is fixed
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodl.errors import AutodlError
from autodl.objectives import ACCURACY, OBJECTIVES, parse_objectives
from autodl.optimizers import OPTIMIZERS

Scalar = bool | int | float | str


def _same(a: Any, b: Any) -> bool:
    """Compare values the way a user means them: ``True`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class IntRange:
    """Integers ``low..high`` (inclusive) on a grid of ``step``, optionally log-uniform."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of this range's integers."""
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def describe(self) -> str:
        """One line for people, e.g. ``int 2..20 log``."""
        step = f" step {self.step}" if self.step != 1 else ""
        return f"int {self.low}..{self.high}{step}{' log' if self.log else ''}"


@dataclass(frozen=True)
class FloatRange:
    """Floats ``low..high``; ``zero`` adds 0 as an alternative (as for weight decay)."""

    low: float
    high: float
    step: float | None = None
    log: bool = False
    zero: bool = False

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this range (or is 0 when ``zero`` is set)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return (self.zero and value == 0) or self.low <= value <= self.high

    def describe(self) -> str:
        """One line for people, e.g. ``0, or float 1e-06..0.1 log``."""
        step = f" step {_fmt(self.step)}" if self.step else ""
        text = f"float {_fmt(self.low)}..{_fmt(self.high)}{step}{' log' if self.log else ''}"
        return f"0, or {text}" if self.zero else text


@dataclass(frozen=True)
class Choice:
    """One of a fixed list of values."""

    values: tuple[Scalar, ...]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of the choices."""
        return any(_same(value, choice) for choice in self.values)

    def describe(self) -> str:
        """One line for people, e.g. ``one of 16, 32, 64``."""
        return "one of " + ", ".join(_fmt(v) for v in self.values)


@dataclass(frozen=True)
class Fixed:
    """A value that is not searched."""

    value: Scalar

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is the fixed value."""
        return _same(value, self.value)

    def describe(self) -> str:
        """One line for people, e.g. ``fixed 'adam'``."""
        return f"fixed {_fmt(self.value)}"


Spec = IntRange | FloatRange | Choice | Fixed

LR_SCHEDULES = ("constant", "exponential", "step", "cosine", "cyclic")

#: The training hyperparameters the core owns and suggests for every trial, parents
#: before the hyperparameters that depend on them (``TRAINING_CONDITIONS``).
TRAINING_SPACE: dict[str, Spec] = {
    "learning_rate": FloatRange(1e-5, 1e-1, log=True),
    "batch_size": Choice((16, 32, 64, 128, 256)),
    "optimizer": Choice(tuple(OPTIMIZERS)),
    "weight_decay": FloatRange(1e-6, 1e-1, log=True, zero=True),
    "lr_schedule": Choice(LR_SCHEDULES),
    "lr_decay_rate": FloatRange(0.5, 0.99),  # per epoch
    "lr_warmup_fraction": FloatRange(0.02, 0.2, zero=True),  # of all training steps
    "lr_cycles": IntRange(2, 6),
    "lr_plateau": Choice((False, True)),
    "lr_plateau_factor": FloatRange(0.1, 0.5),
    "lr_plateau_patience": IntRange(1, 5),
}

#: The values of a study's first trial, where the space holds them: a setting that trains
#: well on most tasks, as KerasTuner's first trial trains the declared defaults. The
#: others start at their range's low end (or off).
TRAINING_DEFAULTS: dict[str, Scalar] = {
    "learning_rate": 1e-3,
    "batch_size": 64,
    "optimizer": "adam",
    "weight_decay": 0.0,
}

#: ``(parent, values)``: a hyperparameter is used only while ``parent`` has one of ``values``.
Condition = tuple[str, tuple[Scalar, ...]]

#: Training hyperparameters used only while another one has one of the given values;
#: they are not suggested otherwise.
TRAINING_CONDITIONS: dict[str, Condition] = {
    "lr_decay_rate": ("lr_schedule", ("exponential",)),
    "lr_warmup_fraction": ("lr_schedule", ("cosine",)),
    "lr_cycles": ("lr_schedule", ("cyclic",)),
    # Keras's ReduceLROnPlateau cannot change the learning rate of a schedule.
    "lr_plateau": ("lr_schedule", ("constant",)),
    "lr_plateau_factor": ("lr_plateau", (True,)),
    "lr_plateau_patience": ("lr_plateau", (True,)),
}

#: Documented defaults for hyperparameters that plugins share, and for training ones
#: that are off unless asked for. A declaration gets the overlap of its own range and
#: this one (see ``_overlap``); the user's settings replace it.
SHARED_DEFAULTS: dict[str, Spec] = {
    # Where Adam, RMSprop and SGD with momentum train in a few epochs: in the MNIST
    # benchmarks, trials outside it (and Adagrad's) stayed near chance and spent the
    # study's trials. Widen: --set 'learning_rate={low=1e-5, high=1e-1, log=true}'.
    "learning_rate": FloatRange(1e-4, 1e-2, log=True),
    "optimizer": Choice(("adam", "sgd", "rmsprop")),
    "depth": IntRange(2, 20),
    "dropout": FloatRange(0.0, 0.5),
    # Widen with --set 'lr_schedule=[constant,cosine]' or --set lr_plateau=true.
    "lr_schedule": Fixed("constant"),
    "lr_plateau": Fixed(False),
    # Off unless asked for (--set batch_norm=true, --set augment=[false,true]).
    "batch_norm": Fixed(False),
    "augment": Fixed(False),
    "flip": Fixed("none"),  # flipping changes a digit's meaning; photos may want it
    # 5x5 kernels make a cnn up to three times dearer (--set 'kernel_size=[3,5]').
    "kernel_size": Fixed(3),
}


#: The shared defaults of a study for deployment (a cost objective or a limit): its
#: front's fast end is the cheapest models, so ``depth`` starts at one layer or block
#: (in the MNIST benchmark one-block ``cnn`` models reached 96% at 0.024 ms).
DEPLOYMENT_DEFAULTS: dict[str, Spec] = {**SHARED_DEFAULTS, "depth": IntRange(1, 20)}


def is_active(name: str, values: dict[str, Any]) -> bool:
    """Whether a training hyperparameter is used, given the values of those before it."""
    if name not in TRAINING_CONDITIONS:
        return True
    parent, allowed = TRAINING_CONDITIONS[name]
    return parent in values and any(_same(values[parent], value) for value in allowed)


def describe_conditions(conditions: Sequence[Condition]) -> str:
    """The conditions for people, e.g. ``only when lr_schedule is 'cosine'``."""
    return "only when " + " and ".join(
        f"{parent} is {' or '.join(map(_fmt, allowed))}" for parent, allowed in conditions
    )


def describe_training() -> dict[str, str]:
    """The training hyperparameters as ``{name: one line}``, defaults and conditions too."""
    lines = {}
    for name, spec in TRAINING_SPACE.items():
        line = spec.describe()
        if name in SHARED_DEFAULTS:
            line += f"; default {SHARED_DEFAULTS[name].describe()}"
        if name in TRAINING_CONDITIONS:
            line += f" ({describe_conditions([TRAINING_CONDITIONS[name]])})"
        lines[name] = line
    return lines


def first_value(spec: Spec) -> Scalar:
    """The value a spec takes when nothing is searched (dry builds, listings)."""
    if isinstance(spec, Fixed):
        return spec.value
    if isinstance(spec, Choice):
        return spec.values[0]
    return 0.0 if isinstance(spec, FloatRange) and spec.zero else spec.low


def _overlap(declared: Spec, default: Spec) -> Spec:
    """The declared spec cut to a shared default, or the declared one if they miss.

    A range default cuts a declared range; a fixed or choice default (a feature that is
    off unless asked for) replaces a declaration that contains all of its values.
    """
    if isinstance(default, (Fixed, Choice)):
        values = (default.value,) if isinstance(default, Fixed) else default.values
        if all(declared.contains(value) for value in values):
            return _narrow("", declared, default)
        return declared
    if type(declared) is not type(default) or not isinstance(declared, (IntRange, FloatRange)):
        return declared
    low, high = max(declared.low, default.low), min(declared.high, default.high)
    return dataclasses.replace(declared, low=low, high=high) if low <= high else declared


def _conform(declared: Spec, value: Scalar) -> Scalar:
    """Return a value that ``declared`` contains in its own type (``128`` for ``128.0``)."""
    if isinstance(declared, (Choice, Fixed)):
        options = declared.values if isinstance(declared, Choice) else (declared.value,)
        return next(option for option in options if _same(option, value))
    if isinstance(declared, FloatRange) and isinstance(value, int):
        return float(value)
    return value


def _narrow(name: str, declared: Spec, wanted: Spec) -> Spec:
    """Apply the user's ``wanted`` spec to what the plugin or core ``declared``."""
    where = f"{name} takes {declared.describe()}"
    if isinstance(wanted, Fixed):
        if not declared.contains(wanted.value):
            raise AutodlError(f"{name}={_fmt(wanted.value)} is not allowed: {where}")
        return Fixed(_conform(declared, wanted.value))
    if isinstance(wanted, Choice):
        bad = [v for v in wanted.values if not declared.contains(v)]
        if bad:
            raise AutodlError(f"{name}: {', '.join(map(_fmt, bad))} not allowed: {where}")
        return Choice(tuple(_conform(declared, v) for v in wanted.values))
    if isinstance(declared, (Choice, Fixed)):
        raise AutodlError(f"{name} cannot be a range: {where}; give a list or a value")
    if isinstance(declared, IntRange) and isinstance(wanted, FloatRange):
        raise AutodlError(f"{name} needs whole numbers: {where}")
    if isinstance(declared, FloatRange) and isinstance(wanted, IntRange):
        wanted = FloatRange(float(wanted.low), float(wanted.high), log=wanted.log)
    zero_ok = not getattr(wanted, "zero", False) or getattr(declared, "zero", False)
    if wanted.low < declared.low or wanted.high > declared.high or not zero_ok:
        raise AutodlError(f"{name} range {wanted.describe()} is outside what it allows: {where}")
    return wanted


@dataclass(frozen=True)
class Space:
    """The user's changes to the search space, by hyperparameter name."""

    overrides: dict[str, Spec] = field(default_factory=dict)
    #: What a hyperparameter the user leaves alone is cut to (see ``resolve``).
    defaults: Mapping[str, Spec] = field(default_factory=lambda: SHARED_DEFAULTS)

    def resolve(self, name: str, declared: Spec) -> Spec:
        """The spec to search for ``name``, given what its owner declared.

        Raises:
            AutodlError: If the user's setting does not fit the declaration.
        """
        wanted = self.overrides.get(name)
        if wanted is not None:
            return _narrow(name, declared, wanted)
        default = self.defaults.get(name)
        return _overlap(declared, default) if default is not None else declared

    def check_known(self, known: set[str], arch: str) -> None:
        """Refuse overrides of names neither the core nor the plugin declares."""
        unknown = sorted(set(self.overrides) - known)
        if unknown:
            raise AutodlError(
                f"unknown hyperparameter {', '.join(unknown)} for arch {arch}; "
                f"known: {', '.join(sorted(known))}"
            )

    def check_conditions(
        self, conditions: Mapping[str, Sequence[Condition]], declared: Mapping[str, Spec]
    ) -> None:
        """Refuse a setting of a hyperparameter that its parent (or theirs) never lets be used.

        Args:
            conditions: Each conditional hyperparameter's conditions, by name.
            declared: What the parents were declared as, by name.

        Raises:
            AutodlError: E.g. for ``lr_decay_rate`` while ``lr_schedule`` is fixed "constant".
        """
        for name in sorted(self.overrides):
            pending = list(conditions.get(name, ()))
            while pending:
                parent, allowed = pending.pop()
                spec = self.resolve(parent, declared[parent])
                if not any(spec.contains(value) for value in allowed):
                    raise AutodlError(
                        f"{name} is used {describe_conditions([(parent, allowed)])}, but "
                        f"{parent} takes {spec.describe()}: set {parent} too"
                    )
                pending += conditions.get(parent, ())

    def describe(self) -> dict[str, str]:
        """The overrides as ``{name: description}``, for storing on the study."""
        return {name: spec.describe() for name, spec in sorted(self.overrides.items())}


_RANGE_KEYS = {"low", "high", "step", "log", "zero"}


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def parse_spec(name: str, raw: Any) -> Spec:
    """Turn a TOML value into a spec: a scalar is fixed, a list a choice, a table a range.

    Raises:
        AutodlError: If the value is not a valid spec.
    """
    if _is_scalar(raw):
        return Fixed(raw)
    if isinstance(raw, list):
        if not raw or not all(_is_scalar(v) for v in raw):
            raise AutodlError(f"{name}: a choice must be a non-empty list of plain values")
        return Choice(tuple(raw))
    if not isinstance(raw, dict):
        raise AutodlError(f"{name}: expected a value, a list or a table, got {raw!r}")
    if set(raw) == {"values"}:
        if not isinstance(raw["values"], list):
            raise AutodlError(f"{name}: values must be a list, got {raw['values']!r}")
        return parse_spec(name, raw["values"])
    extra = set(raw) - _RANGE_KEYS
    if extra or not {"low", "high"} <= set(raw):
        raise AutodlError(
            f"{name}: a range needs low and high (and may have step, log, zero); "
            f"got {', '.join(sorted(raw))}"
        )
    low, high, step = raw["low"], raw["high"], raw.get("step")
    log, zero = raw.get("log", False), raw.get("zero", False)
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
        raise AutodlError(f"{name}: low, high and step must be numbers")
    if not isinstance(log, bool) or not isinstance(zero, bool):
        raise AutodlError(f"{name}: log and zero must be true or false")
    if low > high:
        raise AutodlError(f"{name}: low ({_fmt(low)}) is greater than high ({_fmt(high)})")
    if log and low <= 0:
        raise AutodlError(f"{name}: a log range needs low > 0")
    if step is not None and step <= 0:
        raise AutodlError(f"{name}: step must be positive")
    if log and step is not None:
        raise AutodlError(f"{name}: a log range cannot have a step")
    if all(isinstance(v, int) for v in numbers) and not zero:
        return IntRange(low, high, step or 1, log)
    return FloatRange(float(low), float(high), None if step is None else float(step), log, zero)


_BARE_WORDS = re.compile(r"\[\s*[\w.+-]+(\s*,\s*[\w.+-]+)*\s*,?\s*\]")


def _toml_value(text: str) -> Any:
    return tomllib.loads(f"v = {text}")["v"]


def _word(text: str) -> Any:
    """A TOML value (``64``, ``true``), else the text itself (``relu``)."""
    try:
        return _toml_value(text)
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(text: str) -> tuple[str, Spec]:
    """Parse ``--set name=value``; the value is TOML (``0.1``, ``[32, 64]``) or a bare word.

    A list may hold bare words too: ``[constant, cosine]`` is ``["constant", "cosine"]``.

    Raises:
        AutodlError: If the text is not ``name=value``.
    """
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise AutodlError(f"--set expects name=value, got {text!r}")
    try:
        raw = _toml_value(value)
    except tomllib.TOMLDecodeError as error:
        if _BARE_WORDS.fullmatch(value):
            raw = [_word(word.strip()) for word in value[1:-1].split(",") if word.strip()]
        elif value[:1] in ("[", "{", '"', "'"):  # meant as TOML: say what is wrong
            raise AutodlError(f"--set {name}: {value} is not valid TOML: {error}") from None
        else:
            raw = value
    return name, parse_spec(name, raw)


DEFAULT_STORAGE = "sqlite:///studies/autodl.db"
_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s?)?")


def parse_duration(text: str, option: str) -> float:
    """Seconds in a duration such as ``90``, ``90s``, ``10m``, ``1.5h`` or ``1h30m``.

    Raises:
        AutodlError: If ``text`` is not such a duration, or is not above zero.
    """
    match = _DURATION.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise AutodlError(f"{option} needs a duration like 90s, 10m or 1h30m, got {text!r}")
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise AutodlError(f"{option} must be more than zero, got {text!r}")
    return total
_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([kmgt]i?b?|b)")
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def parse_size(text: str, option: str) -> int:
    """Bytes in a size such as ``6GiB``, ``6G`` (binary), ``500MB`` (decimal) or ``1.5TiB``.

    Raises:
        AutodlError: If ``text`` is not such a size, or is not above zero.
    """
    match = _SIZE.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if not match:
        raise AutodlError(f"{option} needs a size like 6GiB or 500MB, got {text!r}")
    number, unit = float(match[1]), match[2]
    if unit in _SIZE_UNITS:
        size = number * _SIZE_UNITS[unit]
    else:  # KiB, MiB, ... and the bare K, M, G, T
        size = number * 1024 ** (1 + "kmgt".index(unit[0]))
    if size < 1:
        raise AutodlError(f"{option} must be more than zero, got {text!r}")
    return int(size)


#: Finished trials a study holds when neither ``--trials`` nor ``--budget`` says.
DEFAULT_TRIALS = 20

#: Trials a worker process runs before a fresh one replaces it: starting one costs about
#: 10 s on a 2-core machine, and each trial leaves about 8 MiB behind in it
#: (benchmarks/RESULTS.md, "Supervised workers").
TRIALS_PER_WORKER = 20


def machine_memory() -> int:
    """This machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class TuneConfig:
    """Everything ``autodl tune`` runs with; built by :func:`load_config`."""

    arch: str
    dataset: str = "digits"
    trials: int | None = None  # see trial_limit
    epochs: int = 20
    patience: int = 3
    # Not hyperband: Optuna's TPE then learns only from the trial's own bracket, so on a
    # few dozen trials it stays random (benchmarks/RESULTS.md, search benchmark).
    pruner: str | None = None  # names in autodl.pruners.PRUNERS; see pruner_name
    sampler: str = "tpe"  # names in autodl.samplers.SAMPLERS
    storage: str = DEFAULT_STORAGE
    study: str | None = None
    seed: int | None = None
    timeout: float | None = None
    budget: str | None = None
    val_split: float = 0.1
    test_split: float = 0.2
    max_samples: int | None = None
    image_size: int = 96
    weights: str | None = None
    workers: int = 1
    trials_per_worker: int = TRIALS_PER_WORKER
    worker_memory: str | None = None
    trial_timeout: float | None = None
    checkpoint_every: int = 1
    heartbeat: int = 60
    artifacts: str | None = None
    tensorboard: str | None = None
    mixed_precision: bool = False
    objective: str = ACCURACY  # comma-separated names in autodl.objectives.OBJECTIVES
    max_params: float | None = None
    max_size: float | None = None  # MB
    max_latency: float | None = None  # ms
    space: Space = field(default_factory=Space)

    @property
    def objectives(self) -> tuple[str, ...]:
        """The objectives ``--objective`` names, accuracy first."""
        return parse_objectives([self.objective])

    @property
    def limits(self) -> dict[str, float]:
        """The caps on deployment objectives, by objective name, in the objective's units."""
        caps = {}
        for objective in OBJECTIVES.values():
            value = objective.limit and getattr(self, _option_field(objective.limit))
            if value is not None:
                caps[objective.name] = value * objective.per_unit
        return caps

    @property
    def for_deployment(self) -> bool:
        """Whether the study weighs what a model costs to deploy (a cost objective or a limit)."""
        return len(self.objectives) > 1 or bool(self.limits)

    @property
    def search_space(self) -> Space:
        """The space searched: the user's settings over the shared defaults.

        A study for deployment takes its defaults from ``DEPLOYMENT_DEFAULTS``.
        """
        if not self.for_deployment:
            return self.space
        return dataclasses.replace(self.space, defaults=DEPLOYMENT_DEFAULTS)

    @property
    def pruner_name(self) -> str:
        """``--pruner``; by default ``sha`` for one objective, ``pareto`` for several."""
        if self.pruner is not None:
            return self.pruner
        return "sha" if len(self.objectives) == 1 else "pareto"

    @property
    def trial_limit(self) -> int | None:
        """Finished trials the study should hold: ``--trials``, else :data:`DEFAULT_TRIALS`.

        ``None`` (no limit) with a ``--budget`` and no ``--trials``: a user who gives the
        run ten minutes wants the best model ten minutes allow, not 20 trials' worth.
        """
        if self.trials is not None:
            return self.trials
        return None if self.budget is not None else DEFAULT_TRIALS

    @property
    def budget_seconds(self) -> float | None:
        """``--budget`` in seconds (``None``: no budget)."""
        return None if self.budget is None else parse_duration(self.budget, "--budget")

    @property
    def worker_memory_bytes(self) -> int:
        """``--worker-memory`` in bytes; by default half the machine's, shared by the workers.

        Half: a worker is replaced only between trials, so the next trial's own peak
        must still fit.
        """
        if self.worker_memory is not None:
            return parse_size(self.worker_memory, "--worker-memory")
        return machine_memory() // (2 * max(self.workers, 1))

    @property
    def study_name(self) -> str:
        """The study's name: ``--study``, or ``<arch>-<dataset>``."""
        if self.study:
            return self.study
        arch = Path(self.arch.split(":")[0]).stem if self.arch.endswith(".py") else self.arch
        dataset = re.sub(r"[^A-Za-z0-9._-]+", "_", self.dataset.split(":")[0])
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{arch}-{dataset}")

    def validate(self) -> None:
        """Check every option before anything runs.

        Raises:
            AutodlError: Naming the first bad option and what it accepts.
        """
        for name in ("trials", "epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise AutodlError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("patience", "trials_per_worker", "heartbeat"):
            if getattr(self, name) < 1:
                option = name.replace("_", "-")
                raise AutodlError(f"--{option} must be at least 1, got {getattr(self, name)}")
        if self.seed is not None and self.seed < 0:
            raise AutodlError(f"--seed must be 0 or more, got {self.seed}")
        if self.checkpoint_every < 0:
            raise AutodlError(f"--checkpoint-every must be 0 (no checkpoints) or more, got "
                              f"{self.checkpoint_every}")
        if self.workers < 0:
            raise AutodlError(f"--workers must be 0 (no worker process) or more, got "
                              f"{self.workers}")
        parse_objectives([self.objective])
        for objective in OBJECTIVES.values():
            limit = objective.limit and getattr(self, _option_field(objective.limit))
            if limit is not None and not (limit > 0 and math.isfinite(limit)):
                raise AutodlError(f"{objective.limit} must be more than zero ({objective.unit}), "
                                  f"got {limit}")
        if self.budget is not None:
            parse_duration(self.budget, "--budget")
        if self.worker_memory is not None:
            parse_size(self.worker_memory, "--worker-memory")
        for name in ("val_split", "test_split"):
            if not 0 < getattr(self, name) < 1:
                raise AutodlError(f"--{name.replace('_', '-')} must be between 0 and 1")
        if self.max_samples is not None and self.max_samples < 10:
            raise AutodlError("--max-samples must be at least 10")
        for name in ("timeout", "trial_timeout"):
            seconds = getattr(self, name)
            if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
                option = name.replace("_", "-")
                raise AutodlError(f"--{option} must be a positive number of seconds, "
                                  f"got {seconds}")
        if self.image_size < 8:
            raise AutodlError("--image-size must be at least 8")
        if not _STUDY_NAME.fullmatch(self.study_name):
            raise AutodlError(
                f"bad study name {self.study_name!r}: use letters, digits, '.', '_' and '-' "
                "(starting with a letter or digit)"
            )
        if self.tensorboard is not None:
            _check_writable_folder("--tensorboard", self.tensorboard)
        self.space.check_conditions(
            {name: [condition] for name, condition in TRAINING_CONDITIONS.items()},
            TRAINING_SPACE,
        )


def _option_field(option: str) -> str:
    """The :class:`TuneConfig` field of an ``autodl tune`` option: ``max_size`` for --max-size."""
    return option.removeprefix("--").replace("-", "_")


def _check_writable_folder(option: str, path: str) -> None:
    """Refuse a folder that cannot be made: a file is there, or its parent is read-only."""
    folder = Path(path)
    if not path or (folder.exists() and not folder.is_dir()):
        raise AutodlError(f"{option} needs a folder, got {path!r}")
    existing = next(parent for parent in (folder, *folder.absolute().parents)
                    if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise AutodlError(f"{option} {path}: cannot write in {existing}")


_OPTIONS = {f.name: f for f in dataclasses.fields(TuneConfig) if f.name != "space"}


def _read_config_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a study config file into its ``[tune]`` and ``[space]`` tables."""
    file = Path(path)
    if not file.is_file():
        raise AutodlError(f"space file not found: {path}")
    try:
        document = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AutodlError(f"{path} is not valid TOML: {error}") from None
    extra = set(document) - {"tune", "space"}
    if extra:
        raise AutodlError(f"{path}: unknown table {', '.join(sorted(extra))}; use [tune], [space]")
    for table in ("tune", "space"):
        if not isinstance(document.get(table, {}), dict):
            raise AutodlError(f"{path}: {table} must be a table, [{table}]")
    tune, space = document.get("tune", {}), document.get("space", {})
    unknown = set(tune) - set(_OPTIONS)
    if unknown:
        raise AutodlError(
            f"{path}: unknown option {', '.join(sorted(unknown))} in [tune]; "
            f"known: {', '.join(sorted(_OPTIONS))}"
        )
    return tune, space


def _check_type(name: str, value: Any) -> Any:
    """Check a ``[tune]`` value against the option's type (CLI values are already typed)."""
    kind = _OPTIONS[name].type
    if name == "objective" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)  # objective = ["accuracy", "latency"]
    if "int" in kind and "float" not in kind and (isinstance(value, bool) or
                                                  not isinstance(value, int)):
        raise AutodlError(f"option {name} must be a whole number, got {value!r}")
    if "float" in kind and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise AutodlError(f"option {name} must be a number, got {value!r}")
    if kind.startswith("str") and not isinstance(value, str):
        raise AutodlError(f"option {name} must be text, got {value!r}")
    if kind == "bool" and not isinstance(value, bool):
        raise AutodlError(f"option {name} must be true or false, got {value!r}")
    return value


def load_config(
    options: dict[str, Any], space_file: str | None = None, assignments: list[str] = ()
) -> TuneConfig:
    """Combine command-line options, a study config file and ``--set`` assignments.

    Command-line options win over the file's ``[tune]`` table, which wins over defaults;
    ``--set`` wins over the file's ``[space]`` table.

    Args:
        options: Option values by name; ``None`` means "not given".
        space_file: Path of a TOML study config file, if any.
        assignments: ``name=value`` strings from ``--set``.

    Returns:
        The validated configuration.

    Raises:
        AutodlError: For a missing or malformed file, or any invalid value.
    """
    tune, raw_space = _read_config_file(space_file) if space_file else ({}, {})
    values = {name: _check_type(name, value) for name, value in tune.items()}
    values.update({k: v for k, v in options.items() if v is not None})
    overrides = {name: parse_spec(name, raw) for name, raw in raw_space.items()}
    overrides.update(parse_assignment(text) for text in assignments)
    if not values.get("arch"):
        raise AutodlError("--arch is required (see `autodl plugins` for the choices)")
    config = TuneConfig(**values, space=Space(overrides))
    config.validate()
    return config
