"""The ``autodl`` command line: one class per command, its arguments beside what it does.

As in ``optuna/cli.py``, each command is a :class:`Command` whose ``add_arguments``
declares its own options and whose ``take_action`` runs it; :data:`COMMANDS` lists them.
The options several commands share (``--debug``, ``--storage``, ``--csv``, ``--force``)
are declared once, in :func:`_shared_options`. Heavy libraries (TensorFlow, Keras,
Optuna) are imported inside the actions, so ``autodl --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import ClassVar, NoReturn

from autodl import __version__
from autodl._imports import native_stderr_hidden
from autodl.config import (
    DEFAULT_STORAGE,
    DEFAULT_TRIALS,
    TRIALS_PER_WORKER,
    TuneConfig,
    describe_training,
)
from autodl.datasets import DATASETS
from autodl.errors import AutodlError
from autodl.objectives import ACCURACY, OBJECTIVES
from autodl.progress import ProgressPrinter, format_value
from autodl.pruners import PRUNERS
from autodl.samplers import SAMPLERS


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line and exit code 2, like every other user error.

    Help texts that need a heavy import (the export formats, from a module that loads
    TensorFlow) come from ``late_help``, asked only when the help is shown.
    """

    late_help: Callable[[], dict[str, str]] | None = None

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def format_help(self) -> str:
        if self.late_help is not None:
            with native_stderr_hidden():
                late = self.late_help()
            for action in self._actions:
                action.help = late.get(action.dest, action.help)
        return super().format_help()


class Command:
    """One ``autodl`` command.

    A subclass declares its own arguments in :meth:`add_arguments` and runs in
    :meth:`take_action`; its class attributes name it and choose the shared options.

    Attributes:
        name: The command's word: ``autodl NAME``.
        help: One line for ``autodl --help``.
        description: What ``autodl NAME --help`` says first.
        storage: Whether it takes ``--storage URL``.
        csv: If it takes ``--csv FILE``, the option's help.
        force: If it takes ``--force``, the option's help: what it replaces.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str]
    storage: ClassVar[bool] = False
    csv: ClassVar[str | None] = None
    force: ClassVar[str | None] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's own arguments."""

    def take_action(self, args: argparse.Namespace) -> int:
        """Run the command.

        Returns:
            The exit code.
        """
        raise NotImplementedError

    def late_help(self) -> dict[str, str]:
        """Help texts that need a heavy import, by option ``dest``; asked only by ``--help``."""
        return {}


def _shared_options(command: Command | None) -> argparse.ArgumentParser:
    """A parent parser of the options that several commands share, each declared only here.

    It is made afresh for every parser: argparse gives a parent's actions to its children
    as they are, so a default one command changes (tune's ``--storage``) would change
    every other command's.

    Args:
        command: The command the options are for; ``None`` for ``autodl`` itself.
    """
    parent = argparse.ArgumentParser(add_help=False)
    # After the command, an absent --debug must leave alone the value given before it.
    parent.add_argument("--debug", action="store_true",
                        default=False if command is None else argparse.SUPPRESS,
                        help="show tracebacks and library logs")
    if command is not None and command.storage:
        parent.add_argument("--storage", default=DEFAULT_STORAGE,
                            help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    if command is not None and command.csv:
        parent.add_argument("--csv", metavar="FILE", help=command.csv)
    if command is not None and command.force:
        parent.add_argument("--force", action="store_true", help=command.force)
    return parent


def _load_backend(debug: bool) -> None:
    with native_stderr_hidden(not debug):
        from autodl.runtime import setup_devices

        setup_devices()


def _print_summary(summary) -> None:
    counts = summary.counts
    finished = counts["COMPLETE"] + counts["PRUNED"]
    print()
    of = "" if summary.requested is None else f" of {summary.requested}"
    print(f"{finished}{of} trials finished: {counts['COMPLETE']} complete, "
          f"{counts['PRUNED']} pruned ({counts['FAIL']} failed)")
    if summary.stop_reason:
        # With no count asked for, the run stops when the budget ends: not early.
        stopped = "Stopped" if summary.requested is None else "Stopped early"
        print(f"{stopped}: {summary.stop_reason}")
    if summary.best is None:
        print("No trial completed, so there is no best model yet.")
    elif len(summary.objectives) > 1:
        _print_front(summary)
    else:
        best = summary.best
        rows = [("best trial", f"#{best.number}"), ("validation accuracy", f"{best.value:.4f}")]
        if summary.test_accuracy is not None:
            rows += [("test accuracy", f"{summary.test_accuracy:.4f}"),
                     ("parameters", f"{summary.params_count:,}")]
        rows.append(("epochs trained", str(best.epochs)))
        rows += [(f"  {name}", format_value(value))
                 for name, value in best.hyperparameters.items()]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
        if summary.model_path:
            print(f"Model:  {summary.model_path}")
        if summary.model_problem:
            print(f"Model:  not evaluated: {summary.model_problem}")
    print(f"Study:  {summary.study_name} in {summary.storage}")
    if summary.interrupted:
        print("Run the same command again to continue the study.")
    storage = "" if summary.storage == DEFAULT_STORAGE else f" --storage {summary.storage}"
    print(f"Browse: autodl dashboard{storage}   (or: autodl report {summary.study_name} "
          f"--out DIR{storage})")


def _print_front(summary) -> None:
    """The Pareto front of a study of several objectives, and how to export a model of it."""
    from autodl import browse, storage

    study = storage.load_existing(summary.storage, summary.study_name)
    front = browse.front_frame(study)
    trials = "1 trial, with its model" if len(front) == 1 else (
        f"{len(front)} trials, each with its model")
    print(f"Pareto front of {' against '.join(summary.objectives)}: {trials}")
    print(browse.render_table(front))
    if summary.model_problem:
        print(f"Models: not evaluated: {summary.model_problem}")
    storage_option = "" if summary.storage == DEFAULT_STORAGE else f" --storage {summary.storage}"
    print(f"Export: autodl export {summary.study_name} --trial N --out model.tflite"
          f"{storage_option}")


def _choices(table: Mapping[str, object]) -> str:
    """A name-to-factory table's names for help, and its default: the first."""
    return f"{'|'.join(table)} (default: {next(iter(table))})"


class Tune(Command):
    """``autodl tune``: run or continue a study."""

    name = "tune"
    help = "run or continue a study"
    description = ("Tune an architecture's hyperparameters with Optuna. Running the same "
                   "command again continues the study up to --trials finished trials.")
    storage = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the options of :class:`autodl.config.TuneConfig`."""
        # Every default is None, "not given": the --space file's value, else TuneConfig's.
        parser.set_defaults(storage=None)
        parser.add_argument("--arch", help="plugin name (see `autodl plugins`), kt:HyperResNet, "
                            "or path/to/model.py[:NAME]")
        parser.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default: digits)")
        parser.add_argument("--trials", type=int, help="finished trials the study should hold "
                            f"(default: {DEFAULT_TRIALS}; with --budget, as many as it "
                            "allows)")
        parser.add_argument("--epochs", type=int, help="most epochs per trial (default: 20)")
        parser.add_argument("--patience", type=int,
                            help="early-stopping patience in epochs (default: 3)")
        parser.add_argument("--objective", action="append", metavar="NAMES",
                            help="what to tune for, comma-separated or repeated: "
                            f"{', '.join(OBJECTIVES)} (default: {ACCURACY}). Several make a "
                            "multi-objective study, whose result is a Pareto front: "
                            + "; ".join(f"{o.name}: {o.description}"
                                        for o in OBJECTIVES.values()))
        for objective in OBJECTIVES.values():
            if objective.limit:
                parser.add_argument(objective.limit, type=float, metavar=objective.unit.upper(),
                                    help=f"{objective.limit_help} a model may have: a "
                                    "configuration over it is pruned before it trains")
        parser.add_argument("--pruner", help=f"{_choices(PRUNERS)}; pareto for several "
                            "objectives, which sha, sha-epochs, hyperband and median cannot "
                            "judge")
        parser.add_argument("--sampler", help=_choices(SAMPLERS))
        parser.add_argument("--space", metavar="FILE", help="study config file (TOML), "
                            "e.g. examples/example.toml")
        parser.add_argument("--set", action="append", metavar="NAME=VALUE",
                            help="fix or narrow a hyperparameter, e.g. --set optimizer=adam "
                            "--set 'batch_size=[32,64]' (repeatable)")
        parser.add_argument("--study", help="study name (default: <arch>-<dataset>)")
        parser.add_argument("--seed", type=int,
                            help="seed for the sampler, data splits, NumPy, Keras")
        parser.add_argument("--timeout", type=float,
                            help="stop starting trials after this many seconds")
        parser.add_argument("--budget", metavar="DURATION",
                            help="time for the whole run, e.g. 90s, 10m or 1h30m: no trial "
                            "starts after it, and a running trial ends with its best epoch "
                            "rather than overrun it; without --trials, trials go on until it "
                            "ends, those after the 20th pruned in Hyperband-like brackets")
        parser.add_argument("--val-split", dest="val_split", type=float,
                            help="validation fraction of the training data (default: 0.1)")
        parser.add_argument("--test-split", dest="test_split", type=float,
                            help="test fraction held out when the dataset has no test split "
                            "(default: 0.2)")
        parser.add_argument("--max-samples", dest="max_samples", type=int,
                            help="use at most this many training (and test) examples")
        parser.add_argument("--image-size", dest="image_size", type=int,
                            help="side in pixels that images:DIR photos are resized to "
                            "(default: 96)")
        parser.add_argument("--workers", type=int, help="worker processes on this machine, each "
                            "running trials of the study; 0 runs them in this process, "
                            "unsupervised, e.g. to debug a plugin (default: 1)")
        parser.add_argument("--trials-per-worker", dest="trials_per_worker", type=int,
                            metavar="N", help="replace a worker process by a fresh one after "
                            f"N trials, to free what TensorFlow keeps (default: "
                            f"{TRIALS_PER_WORKER})")
        parser.add_argument("--worker-memory", dest="worker_memory", metavar="SIZE",
                            help="replace a worker process, between trials, once its memory "
                            "passes SIZE, e.g. 6GiB (default: half the machine's memory, "
                            "shared by the workers)")
        parser.add_argument("--trial-timeout", dest="trial_timeout", type=float, metavar="SEC",
                            help="fail a trial still running after SEC seconds (its worker is "
                            "killed and replaced)")
        parser.add_argument("--checkpoint-every", dest="checkpoint_every", type=int,
                            metavar="N", help="write a running trial's checkpoint every N "
                            "epochs, so that a trial whose process is lost (killed, "
                            "preempted, Ctrl-C) resumes where it was; 0 writes none "
                            "(default: 1)")
        parser.add_argument("--heartbeat", type=int, metavar="SEC",
                            help="seconds between a running trial's heartbeats; a trial silent "
                            "for twice that (its process died) is marked FAIL and retried "
                            "from its checkpoint (default: 60)")
        parser.add_argument("--weights", help="for mobilenetv2: imagenet (default), none, or a "
                            "local no-top weights file PATH.h5")
        parser.add_argument("--artifacts", metavar="DIR",
                            help="folder for model files, shared by every worker of the study "
                            "(default: beside a SQLite file, else studies/artifacts)")
        parser.add_argument("--tensorboard", metavar="DIR",
                            help="write TensorBoard logs, one run per trial in "
                            "DIR/<study>/trial-N (per-epoch metrics, learning rate, "
                            "hyperparameters)")
        parser.add_argument("--mixed-precision", dest="mixed_precision", action="store_true",
                            default=None, help="compute in float16 (mixed_float16), outputs "
                            "kept float32: faster on recent GPUs, slower on CPUs")

    def take_action(self, args: argparse.Namespace) -> int:
        """Tune, showing progress, then print the summary; 130 if interrupted."""
        from autodl.config import load_config

        options = {name: getattr(args, name) for name in TuneConfig.__dataclass_fields__
                   if name != "space"}
        if args.objective:
            options["objective"] = ",".join(args.objective)
        config = load_config(options, args.space, args.set or [])
        from autodl.workers import Workers

        # The fork server starts now, importing TensorFlow beside this process's own import.
        with Workers(config) as workers:
            _load_backend(args.debug)
            from autodl.tuner import tune

            with ProgressPrinter(config.epochs) as progress:
                summary = tune(config, progress, workers)
        _print_summary(summary)
        return 130 if summary.interrupted else 0


def _input_shape(text: str) -> str:
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected sizes like 28,28,1, got {text!r}")
    return text


class Plugins(Command):
    """``autodl plugins``: the architecture plugins and their hyperparameters."""

    name = "plugins"
    help = "list architecture plugins and their hyperparameters"
    description = "List plugins, with the hyperparameters a dry build declares."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the plugin to show and the sample input of its dry build."""
        parser.add_argument("name", nargs="?",
                            help="show one plugin (a name or a file path.py)")
        parser.add_argument("--input-shape", type=_input_shape, default="32,32,3",
                            help="sample input shape for the dry build (default: 32,32,3)")
        parser.add_argument("--classes", type=int, default=10, help="sample class count")

    def take_action(self, args: argparse.Namespace) -> int:
        """Print each plugin with the hyperparameters its dry build declares."""
        _load_backend(args.debug)
        from autodl.tuner import describe_plugins

        shape = tuple(int(d) for d in args.input_shape.split(","))
        infos = describe_plugins([args.name] if args.name else None, shape, args.classes)
        for info in infos:
            print(f"{info.name:<20} {info.source:<12} {info.description}")
            if info.problem:
                print(f"    (hyperparameters unavailable: {info.problem})")
            for name, description in info.hyperparameters.items():
                print(f"    {name:<20} {description}")
        if args.name:
            print("\nTraining hyperparameters searched by autodl for every plugin "
                  "(unless it compiles its own models):")
            for name, description in describe_training().items():
                print(f"    {name:<20} {description}")
        return 0


def _write_csv(path: str, frame, force: bool) -> None:
    from autodl.browse import write_new_file

    write_new_file(path, frame.to_csv(index=False), force)
    print(f"Wrote {len(frame)} rows to {path}", file=sys.stderr)


class Studies(Command):
    """``autodl studies``: every study in a storage."""

    name = "studies"
    help = "list the studies in a storage"
    description = ("List every study: arch, dataset, objectives, trials by state, best "
                   "validation accuracy, test accuracy of the best model (of a study of "
                   "several objectives: of its most accurate model), created and last-updated "
                   "time.")
    storage = True
    csv = "also write the listing as CSV"
    force = "replace an existing --csv FILE"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare ``--json``."""
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def take_action(self, args: argparse.Namespace) -> int:
        """Print the studies as a table or JSON."""
        import json

        from autodl import browse

        overviews = browse.list_studies(args.storage)
        if args.csv:
            _write_csv(args.csv, browse.studies_frame(overviews), args.force)
        if args.json:
            print(json.dumps([overview.to_json() for overview in overviews], indent=2))
        elif overviews:
            print(browse.render_studies(overviews))
        else:
            print(f"No studies in {args.storage}.")
        return 0


class Show(Command):
    """``autodl show``: one study's best trial and top trials."""

    name = "show"
    help = "show a study's best trial and top trials"
    description = ("Show a study's best trial in full (hyperparameters, per-epoch history, "
                   "parameter count, training time) and its top completed trials. A study of "
                   "several objectives shows its Pareto front instead of a best trial: each "
                   "front trial's accuracies, parameters, size and latency, and "
                   "hyperparameters.")
    storage = True
    csv = "write every trial as CSV"
    force = "replace an existing --csv FILE"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the study and how many top trials to list."""
        parser.add_argument("study", help="study name (see `autodl studies`)")
        parser.add_argument("--top", type=int, default=10, metavar="K",
                            help="how many of the best completed trials to list (default: 10)")

    def take_action(self, args: argparse.Namespace) -> int:
        """Print the study's detail."""
        from autodl import browse

        detail = browse.show_study(args.storage, args.study, args.top)
        if args.csv:
            _write_csv(args.csv, detail.trials, args.force)
        print(browse.render_detail(detail))
        return 0


class Dashboard(Command):
    """``autodl dashboard``: optuna-dashboard on the storage."""

    name = "dashboard"
    help = "browse the studies in optuna-dashboard"
    description = ("Serve optuna-dashboard on the storage, with the stored models as trial "
                   "artifacts, until Ctrl-C. It has no authentication: keep the default host.")
    storage = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare where to listen and the model folder."""
        parser.add_argument("--host", default="127.0.0.1",
                            help="address to listen on (default: 127.0.0.1, this machine only)")
        parser.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
        parser.add_argument("--artifacts", metavar="DIR",
                            help="the model folder `autodl tune --artifacts` used, if any")

    def take_action(self, args: argparse.Namespace) -> int:
        """Serve until Ctrl-C."""
        from autodl.dashboard import is_loopback, serve

        def ready(url: str) -> None:
            if not is_loopback(args.host):
                print(f"autodl: warning: the dashboard has no authentication; anyone who can "
                      f"reach {args.host}:{args.port} can read and change your studies",
                      file=sys.stderr)
            print(f"Dashboard for {args.storage}: {url}  (Ctrl-C to stop)", flush=True)

        serve(args.storage, args.host, args.port, on_ready=ready, artifacts=args.artifacts)
        print("Dashboard stopped.")
        return 0


class Export(Command):
    """``autodl export``: a study's best model, or one trial's, verified, with its manifest."""

    name = "export"
    help = "export a study's best model for serving (see its --format)"
    description = ("Write a study's best model (or, with --trial, a chosen trial's) and its "
                   "manifest (what the model is, what it takes, how inputs are prepared), then "
                   "load it back with its format's runtime and check it predicts the test split "
                   "as the stored model does.")
    storage = True
    force = "replace --out if it is an earlier export"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the study, the destination, the format and retraining."""
        parser.add_argument("study", help="study name")
        # The full help of --out and --format lists the formats: see late_help.
        parser.add_argument("--out", required=True, metavar="PATH",
                            help="the folder, or the model file, to create")
        parser.add_argument("--format", help="the model's format")
        parser.add_argument("--trial", type=int, metavar="N",
                            help="export trial N's model instead of the best one: any trial "
                            "that kept one (see `autodl show`); needed for a study of several "
                            "objectives, which has a Pareto front and no best trial")
        parser.add_argument("--retrain", action="store_true",
                            help="train the exported trial's configuration again on training "
                            "+ validation data, for its best epoch count")

    def late_help(self) -> dict[str, str]:
        """``--out`` and ``--format``, from :data:`autodl.export.FORMATS`."""
        from autodl.export import DEFAULT_FORMAT, FORMATS, MANIFEST, MANIFEST_SUFFIX

        suffixes = ", ".join(f.suffix for f in FORMATS.values() if f.suffix)
        formats = ", ".join(
            name + (f" (pip install 'autodl[{f.extra}]')" if f.extra else "")
            for name, f in FORMATS.items()
        )
        return {
            "out": f"a new folder, which gets the model file and {MANIFEST}; or, for a name "
                   f"ending in the format's suffix ({suffixes}), the model file itself, with "
                   f"its manifest beside it as PATH{MANIFEST_SUFFIX}",
            "format": f"one of {formats} (default: the format whose suffix PATH ends in, "
                      f"else {DEFAULT_FORMAT})",
        }

    def take_action(self, args: argparse.Namespace) -> int:
        """Export, then say what was written and how well it agrees."""
        _load_backend(args.debug)
        from autodl.export import export_study

        result = export_study(args.study, args.out, args.format, args.storage, args.retrain,
                              args.force, quiet=not args.debug, trial_number=args.trial)
        manifest, check = result.manifest, result.manifest["verification"]
        retrained = manifest["retrained"]
        how = (f"retrained for {retrained['epochs']} epochs on {retrained['examples']} examples"
               if retrained else "its stored model")
        print(f"Exported trial #{manifest['trial']} of {manifest['study']} ({how}) as "
              f"{manifest['format']}: {result.model_file}")
        print(f"test accuracy {manifest['test_accuracy']:.4f} on {manifest['test_examples']} "
              f"examples (validation accuracy in tuning {manifest['validation_accuracy']:.4f})")
        print(f"verified with {check['runtime']}: probabilities within "
              f"{check['max_abs_difference']:.2g} of the Keras model's (tolerance "
              f"{check['tolerance']:g})")
        print(f"Manifest: {result.manifest_file}")
        return 0


class Predict(Command):
    """``autodl predict``: classify files with an exported model."""

    name = "predict"
    help = "classify image files or arrays with an exported model"
    description = ("Print each input's most probable class and its probability. Images "
                   "are converted, resized and scaled as the export's manifest says.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the export and the input files."""
        parser.add_argument("model", help="an export made by `autodl export`: its folder, or "
                            "its model file (in the folder, or written with its manifest "
                            "beside it)")
        parser.add_argument("files", nargs="+", metavar="FILE",
                            help="image files (PNG, JPEG, ...), or .npz files of an array x")

    def take_action(self, args: argparse.Namespace) -> int:
        """Print one tab-separated line per input: source, class, probability."""
        _load_backend(args.debug)
        from autodl.predict import predict_files

        for prediction in predict_files(args.model, args.files, quiet=not args.debug):
            print(f"{prediction.source}\t{prediction.class_name}\t"
                  f"{prediction.probability:.4f}")
        return 0


class Report(Command):
    """``autodl report``: a study's HTML report."""

    name = "report"
    help = "write a study's HTML report with its figures"
    description = ("Write a folder holding index.html and PNG figures (optimization "
                   "history, parameter importances, parallel coordinates, per-epoch values of "
                   "every trial, the best trial's training curves, its confusion matrix and "
                   "test images), to open in a browser without a server. A study of several "
                   "objectives adds its Pareto front, and its most accurate front trial "
                   "stands for the best.")
    storage = True
    force = "replace DIR if it holds an earlier report"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the study and the folder."""
        parser.add_argument("study", help="study name (see `autodl studies`)")
        parser.add_argument("--out", required=True, metavar="DIR", help="folder to create")

    def take_action(self, args: argparse.Namespace) -> int:
        """Write the report."""
        from pathlib import Path

        _load_backend(args.debug)
        from autodl.report import write_report

        written = write_report(args.storage, args.study, Path(args.out), args.force)
        print(f"Report: {written[0]} ({len(written) - 1} figures)")
        return 0


#: Every command, in the order ``autodl --help`` lists them.
COMMANDS: tuple[type[Command], ...] = (Tune, Plugins, Studies, Show, Dashboard, Export,
                                       Predict, Report)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = _Parser(prog="autodl", description="Tune Keras models with Optuna, using "
                     "KerasTuner-style architecture plugins.", parents=[_shared_options(None)])
    parser.add_argument("--version", action="version", version=f"autodl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command_class in COMMANDS:
        command = command_class()
        sub = commands.add_parser(command.name, help=command.help,
                                  description=command.description,
                                  parents=[_shared_options(command)])
        sub.late_help = command.late_help
        command.add_arguments(sub)
        sub.set_defaults(handler=command.take_action)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``autodl`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    if not args.debug:
        # Before TensorFlow loads: keep its C++ start-up logging off the user's screen.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.handler(args)
    except AutodlError as error:
        if args.debug:
            raise
        print(f"autodl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nautodl: interrupted", file=sys.stderr)
        return 130
