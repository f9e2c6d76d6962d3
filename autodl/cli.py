"""The ``autodl`` command line: parses arguments, calls the orchestrator, prints.

Heavy libraries (TensorFlow, Keras, Optuna) are imported inside the commands, so
``autodl --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from autodl import __version__
from autodl._imports import native_stderr_hidden
from autodl.config import DEFAULT_STORAGE, PRUNERS, SAMPLERS, TuneConfig, describe_training
from autodl.datasets import DATASETS
from autodl.errors import AutodlError


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line and exit code 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _params(hyperparameters: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in hyperparameters.items())


class ProgressPrinter:
    """Prints one line per finished trial; on a terminal also a live line per epoch."""

    def __init__(self) -> None:
        self.out = sys.stdout
        self.live = sys.stderr if sys.stderr.isatty() else None

    def _clear_live(self) -> None:
        if self.live:
            self.live.write("\r\033[K")
            self.live.flush()

    def started(self, study_name: str, storage_url: str, data: str, finished: int,
                requested: int) -> None:
        """Announce the study and its data."""
        todo = max(requested - finished, 0)
        action = f"running {todo} more" if todo else "nothing left to run"
        print(f"Study {study_name} ({storage_url}): {finished} of {requested} trials finished, "
              f"{action}", file=self.out)
        print(f"Data: {data}", file=self.out, flush=True)

    def epoch_end(self, trial_number: int, epoch: int, record: dict[str, float]) -> None:
        """Update the live line."""
        if self.live:
            self.live.write(f"\r\033[K  trial {trial_number} epoch {epoch}: "
                            f"val_accuracy {record.get('val_accuracy', float('nan')):.4f}")
            self.live.flush()

    def trial_finished(self, result, best) -> None:
        """Print the trial's line, marking a new best with '*'."""
        self._clear_live()
        value = f"{result.value:.4f}" if result.value is not None else "  -   "
        mark = "*" if best is not None and best.number == result.number else " "
        seconds = f"{result.seconds:6.1f}s" if result.seconds is not None else "      -"
        detail = result.reason if result.state != "COMPLETE" else _params(result.hyperparameters)
        print(f"trial {result.number:4d} {result.state:<8} val_acc {value}{mark} "
              f"epochs {result.epochs:3d} {seconds}  {detail}", file=self.out, flush=True)


def _print_summary(summary) -> None:
    counts = summary.counts
    finished = counts["COMPLETE"] + counts["PRUNED"]
    print()
    print(f"{finished} of {summary.requested} trials finished: {counts['COMPLETE']} complete, "
          f"{counts['PRUNED']} pruned ({counts['FAIL']} failed)")
    if summary.stop_reason:
        print(f"Stopped early: {summary.stop_reason}")
    if summary.best is None:
        print("No trial completed, so there is no best model yet.")
    else:
        best = summary.best
        rows = [("best trial", f"#{best.number}"), ("validation accuracy", f"{best.value:.4f}")]
        if summary.test_accuracy is not None:
            rows += [("test accuracy", f"{summary.test_accuracy:.4f}"),
                     ("parameters", f"{summary.params_count:,}")]
        rows.append(("epochs trained", str(best.epochs)))
        rows += [(f"  {name}", _fmt(value)) for name, value in best.hyperparameters.items()]
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


def _load_backend(debug: bool) -> None:
    with native_stderr_hidden(not debug):
        from autodl.runtime import setup_devices

        setup_devices()


def _tune(args: argparse.Namespace) -> int:
    from autodl.config import load_config

    options = {name: getattr(args, name) for name in TuneConfig.__dataclass_fields__
               if name != "space"}
    config = load_config(options, args.space, args.set or [])
    _load_backend(args.debug)
    from autodl.tuner import tune

    summary = tune(config, ProgressPrinter())
    _print_summary(summary)
    return 130 if summary.interrupted else 0


def _plugins(args: argparse.Namespace) -> int:
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


def _studies(args: argparse.Namespace) -> int:
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


def _show(args: argparse.Namespace) -> int:
    from autodl import browse

    detail = browse.show_study(args.storage, args.study, args.top)
    if args.csv:
        _write_csv(args.csv, detail.trials, args.force)
    print(browse.render_detail(detail))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
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


def _export(args: argparse.Namespace) -> int:
    _load_backend(args.debug)
    from autodl.export import export_study

    result = export_study(args.study, args.out, args.format, args.storage, args.retrain,
                          args.force, quiet=not args.debug)
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
    print(f"Manifest: {result.folder / 'manifest.json'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    _load_backend(args.debug)
    from autodl.predict import predict_files

    for prediction in predict_files(args.model, args.files, quiet=not args.debug):
        print(f"{prediction.source}\t{prediction.class_name}\t{prediction.probability:.4f}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    _load_backend(args.debug)
    from autodl.report import write_report

    written = write_report(args.storage, args.study, Path(args.out), args.force)
    print(f"Report: {written[0]} ({len(written) - 1} figures)")
    return 0


def _input_shape(text: str) -> str:
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected sizes like 28,28,1, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = _Parser(prog="autodl", description="Tune Keras models with Optuna, using "
                     "KerasTuner-style architecture plugins.")
    parser.add_argument("--version", action="version", version=f"autodl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tune = commands.add_parser(
        "tune", help="run or continue a study",
        description="Tune an architecture's hyperparameters with Optuna. Running the same "
        "command again continues the study up to --trials finished trials.",
    )
    tune.add_argument("--arch", help="plugin name (see `autodl plugins`), kt:HyperResNet, "
                      "or path/to/model.py[:NAME]")
    tune.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default: digits)")
    tune.add_argument("--trials", type=int, help="finished trials the study should hold "
                      "(default: 20)")
    tune.add_argument("--epochs", type=int, help="most epochs per trial (default: 20)")
    tune.add_argument("--patience", type=int,
                      help="early-stopping patience in epochs (default: 3)")
    tune.add_argument("--pruner", help=f"{'|'.join(PRUNERS)} (default: sha)")
    tune.add_argument("--sampler", help=f"{'|'.join(SAMPLERS)} (default: tpe)")
    tune.add_argument("--space", metavar="FILE", help="study config file (TOML), "
                      "e.g. studies/example.toml")
    tune.add_argument("--set", action="append", metavar="NAME=VALUE",
                      help="fix or narrow a hyperparameter, e.g. --set optimizer=adam "
                      "--set 'batch_size=[32,64]' (repeatable)")
    tune.add_argument("--storage", help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    tune.add_argument("--study", help="study name (default: <arch>-<dataset>)")
    tune.add_argument("--seed", type=int, help="seed for the sampler, data splits, NumPy, Keras")
    tune.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tune.add_argument("--val-split", dest="val_split", type=float,
                      help="validation fraction of the training data (default: 0.1)")
    tune.add_argument("--test-split", dest="test_split", type=float,
                      help="test fraction held out when the dataset has no test split "
                      "(default: 0.2)")
    tune.add_argument("--max-samples", dest="max_samples", type=int,
                      help="use at most this many training (and test) examples")
    tune.add_argument("--image-size", dest="image_size", type=int,
                      help="side in pixels that images:DIR photos are resized to (default: 96)")
    tune.add_argument("--workers", type=int, help="worker processes on this machine, each "
                      "running trials of the study (default: 1)")
    tune.add_argument("--heartbeat", type=int, metavar="SEC",
                      help="seconds between a running trial's heartbeats; a trial silent for "
                      "twice that (its process died) is marked FAIL and retried once "
                      "(default: 60)")
    tune.add_argument("--weights", help="for mobilenetv2: imagenet (default), none, or a "
                      "local no-top weights file PATH.h5")
    tune.add_argument("--artifacts", metavar="DIR",
                      help="folder for model files, shared by every worker of the study "
                      "(default: beside a SQLite file, else studies/artifacts)")
    tune.add_argument("--tensorboard", metavar="DIR",
                      help="write TensorBoard logs, one run per trial in DIR/<study>/trial-N "
                      "(per-epoch metrics, learning rate, hyperparameters)")
    tune.add_argument("--mixed-precision", dest="mixed_precision", action="store_true",
                      default=None, help="compute in float16 (mixed_float16), outputs kept "
                      "float32: faster on recent GPUs, slower on CPUs")
    tune.set_defaults(handler=_tune)

    plugins = commands.add_parser(
        "plugins", help="list architecture plugins and their hyperparameters",
        description="List plugins, with the hyperparameters a dry build declares.",
    )
    plugins.add_argument("name", nargs="?", help="show one plugin (a name or a file path.py)")
    plugins.add_argument("--input-shape", type=_input_shape, default="32,32,3",
                         help="sample input shape for the dry build (default: 32,32,3)")
    plugins.add_argument("--classes", type=int, default=10, help="sample class count")
    plugins.set_defaults(handler=_plugins)

    storage_help = f"Optuna storage URL (default: {DEFAULT_STORAGE})"
    studies = commands.add_parser(
        "studies", help="list the studies in a storage",
        description="List every study: arch, dataset, trials by state, best validation "
        "accuracy, test accuracy of the best model, created and last-updated time.",
    )
    studies.add_argument("--storage", default=DEFAULT_STORAGE, help=storage_help)
    studies.add_argument("--json", action="store_true", help="print JSON instead of a table")
    studies.add_argument("--csv", metavar="FILE", help="also write the listing as CSV")
    studies.add_argument("--force", action="store_true", help="replace an existing --csv FILE")
    studies.set_defaults(handler=_studies)

    show = commands.add_parser(
        "show", help="show a study's best trial and top trials",
        description="Show a study's best trial in full (hyperparameters, per-epoch history, "
        "parameter count, training time) and its top completed trials.",
    )
    show.add_argument("study", help="study name (see `autodl studies`)")
    show.add_argument("--storage", default=DEFAULT_STORAGE, help=storage_help)
    show.add_argument("--top", type=int, default=10, metavar="K",
                      help="how many of the best completed trials to list (default: 10)")
    show.add_argument("--csv", metavar="FILE", help="write every trial as CSV")
    show.add_argument("--force", action="store_true", help="replace an existing --csv FILE")
    show.set_defaults(handler=_show)

    dashboard = commands.add_parser(
        "dashboard", help="browse the studies in optuna-dashboard",
        description="Serve optuna-dashboard on the storage, with the stored models as trial "
        "artifacts, until Ctrl-C. It has no authentication: keep the default host.",
    )
    dashboard.add_argument("--storage", default=DEFAULT_STORAGE, help=storage_help)
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default: 127.0.0.1, this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    dashboard.add_argument("--artifacts", metavar="DIR",
                           help="the model folder `autodl tune --artifacts` used, if any")
    dashboard.set_defaults(handler=_dashboard)
    export = commands.add_parser(
        "export", help="export a study's best model (keras, savedmodel, tflite, onnx)",
        description="Write a study's best model and a manifest.json into a new folder, then "
        "load it back with its format's runtime and check it predicts the test split as "
        "the stored model does.",
    )
    export.add_argument("study", help="study name")
    export.add_argument("--out", required=True, metavar="PATH", help="folder to create")
    export.add_argument("--format", default="keras",
                        help="keras (default), savedmodel, tflite (pip install "
                        "'autodl[tflite]') or onnx (pip install 'autodl[onnx]')")
    export.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    export.add_argument("--retrain", action="store_true",
                        help="train the best configuration again on training + validation "
                        "data, for the best trial's epoch count")
    export.add_argument("--force", action="store_true",
                        help="replace PATH if it is an earlier export")
    export.set_defaults(handler=_export)

    predict = commands.add_parser(
        "predict", help="classify image files or arrays with an exported model",
        description="Print each input's most probable class and its probability. Images "
        "are converted, resized and scaled as the export's manifest says.",
    )
    predict.add_argument("model", help="an export folder (made by `autodl export`)")
    predict.add_argument("files", nargs="+", metavar="FILE",
                         help="image files (PNG, JPEG, ...), or .npz files of an array x")
    predict.set_defaults(handler=_predict)

    report = commands.add_parser(
        "report", help="write a study's HTML report with its figures",
        description="Write a folder holding index.html and PNG figures (optimization "
        "history, parameter importances, parallel coordinates, per-epoch values of every "
        "trial, the best trial's training curves, its confusion matrix and test images), "
        "to open in a browser without a server.",
    )
    report.add_argument("study", help="study name (see `autodl studies`)")
    report.add_argument("--out", required=True, metavar="DIR", help="folder to create")
    report.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    report.add_argument("--force", action="store_true",
                        help="replace DIR if it holds an earlier report")
    report.set_defaults(handler=_report)
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
