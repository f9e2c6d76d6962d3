"""`autodl report`: a folder with an HTML page and its PNG figures, for a finished study."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from PIL import Image
from test_cli import assert_refused, run_main

from autodl import report, storage
from autodl.cli import main
from autodl.report import FIGURES, write_report

ALL_PNGS = {spec.file for spec in FIGURES}


@pytest.fixture(scope="module")
def tiny_report(tiny_study, tmp_path_factory):
    """The report of the tiny study, written once: ``(folder, printed output)``."""
    study_folder, storage, name = tiny_study
    out = tmp_path_factory.mktemp("report") / "tiny-report"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(study_folder)  # its dataset path, npz:tiny.npz, is relative to it
        written = write_report(storage, name, out)
    return out, written


def test_every_figure_is_a_png_of_its_size(tiny_report):
    out, written = tiny_report
    assert written == [out / "index.html", *(out / spec.file for spec in FIGURES)]
    assert {path.name for path in out.iterdir()} == {"index.html", *ALL_PNGS}
    for spec in FIGURES:
        with Image.open(out / spec.file) as image:
            assert image.format == "PNG" and image.size == spec.size, spec.file
            extrema = image.convert("RGB").getextrema()
            assert any(low < high for low, high in extrema), f"{spec.file} is blank"
    # Nothing left beside it: the hidden staging folder was renamed into place.
    assert [path.name for path in out.parent.iterdir()] == [out.name]


def test_page_references_every_png_and_nothing_remote(tiny_report):
    out, _ = tiny_report
    page = (out / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert set(sources) == ALL_PNGS
    links = re.findall(r'\b(?:src|href)="([^"]*)"', page)
    assert all("://" not in link and not link.startswith(("/", "//")) for link in links), links
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert "Study tiny" in page and "test accuracy" in page and "learning_rate" in page


def test_cli_prints_where_the_report_is_and_force_replaces_only_a_report(
        tiny_study, tmp_path, monkeypatch, capsys):
    study_folder, storage, name = tiny_study
    monkeypatch.chdir(study_folder)
    out = tmp_path / "r"
    args = ["report", name, "--storage", storage, "--out", str(out)]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == f"Report: {out / 'index.html'} (7 figures)"

    assert_refused(args, f"{out} already exists; pass --force to replace it", capsys)
    (out / "stale.png").write_bytes(b"from an earlier report")
    assert main([*args, "--force"]) == 0
    assert {path.name for path in out.iterdir()} == {"index.html", *ALL_PNGS}

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert_refused(["report", name, "--storage", storage, "--out", str(precious), "--force"],
                   f"{precious} is not an autodl report; refusing to replace it", capsys)
    assert [path.name for path in precious.iterdir()] == ["thesis.tex"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["precious", "r"]


def test_a_failure_leaves_nothing_half_written(tiny_study, tmp_path, monkeypatch):
    study_folder, storage, name = tiny_study
    monkeypatch.chdir(study_folder)

    def broken(context, spec):
        raise RuntimeError("drawing failed")

    monkeypatch.setitem(report._DRAW, "test_images.png", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        write_report(storage, name, tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def odd_storage(tmp_path_factory) -> str:
    """A storage with a study without trials, and one that autodl did not tune."""
    url = f"sqlite:///{tmp_path_factory.mktemp('odd')}/odd.db"
    optuna.create_study(study_name="empty", storage=url, direction="maximize")
    foreign = optuna.create_study(study_name="foreign", storage=url, direction="maximize")
    foreign.add_trial(optuna.create_trial(value=0.5))
    return url


@pytest.mark.parametrize(("study", "where", "message"), [
    ("nope", "tiny", "no study 'nope' in sqlite:///"),
    ("empty", "odd", "study 'empty' has no completed trial yet, so there is nothing to report"),
    ("foreign", "odd", "study 'foreign' does not record how its data was split"),
    ("tiny", "elsewhere", "cannot rebuild the data of study 'tiny': npz file not found: "
     "tiny.npz (npz:tiny.npz is relative to the folder `autodl tune` ran in)"),
    ("tiny", "no storage", "no study storage at sqlite:///"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
        tiny_study, odd_storage, tmp_path, monkeypatch, capsys, study, where, message):
    study_folder, storage, _ = tiny_study
    storage = {"odd": odd_storage, "no storage": f"sqlite:///{tmp_path}/none.db"}.get(where,
                                                                                    storage)
    monkeypatch.chdir(tmp_path if where == "elsewhere" else study_folder)
    out = tmp_path / "r"
    assert_refused(["report", study, "--storage", storage, "--out", str(out)], message, capsys)
    assert not out.exists() and not list(tmp_path.glob(".r.*"))


def test_out_that_is_a_file_is_refused_even_with_force(tiny_study, tmp_path, capsys):
    _, storage, name = tiny_study
    out = tmp_path / "file"
    out.write_text("x")
    assert_refused(["report", name, "--storage", storage, "--out", str(out), "--force"],
                   f"{out} exists and is not a folder", capsys)
    assert out.read_text() == "x"


def test_out_is_required(capsys):
    assert run_main(["report", "tiny"]) == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


def _context(x: np.ndarray, predicted: np.ndarray) -> report._Context:
    """A one-trial study over made-up test data, without any model."""
    study = optuna.create_study(direction="maximize")
    history = [{"epoch": e, "loss": 1 / e, "accuracy": 0.5 + e / 10, "val_loss": 1.2 / e,
                "val_accuracy": 0.4 + e / 10} for e in (1, 2, 3)]
    study.add_trial(optuna.create_trial(
        value=0.7, params={"learning_rate": 0.01},
        distributions={"learning_rate": FloatDistribution(1e-4, 1e-1, log=True)},
        intermediate_values={e["epoch"]: e["val_accuracy"] for e in history},
        user_attrs={"history": history, "best_epoch": 3, "params_count": 123},
    ))
    y = np.arange(len(x)) % 2
    return report._Context(study, study.trials, study.best_trial, x, y, predicted,
                           ["cat", "dog"])


def _pixels(folder: Path) -> np.ndarray:
    with Image.open(folder / "test_images.png") as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_rgb_images_keep_their_colours_and_grayscale_stays_gray(tmp_path):
    green = np.zeros((6, 4, 4, 3), "float32")
    green[..., 1] = 1.0
    context = _context(green, np.arange(6) % 2)  # all right: no red frames
    (tmp_path / "rgb").mkdir()
    report._draw(context, tmp_path / "rgb")
    pixels = _pixels(tmp_path / "rgb")
    assert np.sum((pixels[..., 1] > 200) & (pixels[..., 0] < 50) & (pixels[..., 2] < 50)) > 1000

    gray = np.linspace(0, 1, 6 * 4 * 4, dtype="float32").reshape(6, 4, 4, 1)
    (tmp_path / "gray").mkdir()
    report._draw(_context(gray, np.arange(6) % 2), tmp_path / "gray")
    pixels = _pixels(tmp_path / "gray")
    assert np.all(pixels.max(axis=-1) - pixels.min(axis=-1) <= 2)  # no colour map, no red


def test_tabular_data_gets_a_note_instead_of_the_image_grid(tmp_path):
    context = _context(np.zeros((6, 20), "float32"), np.zeros(6, "int64"))
    skipped = report._draw(context, tmp_path)
    assert set(skipped) == {"test_images.png", "param_importances.png"}  # one trial only
    assert {path.name for path in tmp_path.iterdir()} == ALL_PNGS - set(skipped)
    page = report._page(context, "sqlite:///x.db", skipped)
    assert "The examples are not images (shape (20,))" in page
    assert 'src="test_images.png"' not in page and 'src="confusion_matrix.png"' in page


def test_storage_password_is_not_written_into_the_page(tmp_path):
    context = _context(np.zeros((6, 20), "float32"), np.zeros(6, "int64"))
    page = report._page(context, "postgresql://ann:s3cret@db.example/autodl", {})
    assert "s3cret" not in page and "postgresql://ann:***@db.example/autodl" in page



def test_multi_objective_report_shows_the_pareto_front(front_study, tmp_path, capsys):
    storage, name = front_study
    out = tmp_path / "r"
    assert main(["report", name, "--storage", storage, "--out", str(out)]) == 0
    figures = len(FIGURES) + 1  # every figure, the Pareto front first
    assert capsys.readouterr().out.strip() == f"Report: {out / 'index.html'} ({figures} figures)"
    assert {path.name for path in out.iterdir()} == {"index.html", report.PARETO_FILE, *ALL_PNGS}
    with Image.open(out / report.PARETO_FILE) as image:
        assert image.size == (900, 560)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    red = (abs(pixels[..., 0] - 214) < 20) & (pixels[..., 1] < 70) & (pixels[..., 2] < 70)
    assert red.sum() > 200  # the front, in tab:red
    study = optuna.load_study(study_name=name, storage=storage)
    front = sorted(study.best_trials, key=lambda t: (-t.values[0], t.number))
    page = (out / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources == [report.PARETO_FILE, *(spec.file for spec in FIGURES)]
    assert "<th>objectives</th><td>accuracy, latency</td>" in page
    assert f"<th>most accurate front trial</th><td>#{front[0].number}</td>" in page
    assert "<th>TFLite size</th><td>1.69 MB</td>" in page
    assert f"Hyperparameters of trial #{front[0].number}" in page
    table = page.split("<h2>Pareto front</h2>")[1].split("</table>")[0]
    cells = re.findall(r"<td>([^<]*)</td>", table)
    assert cells[:6] == [str(front[0].number), f"{front[0].values[0]:.4f}", "0.8750",
                         str(front[0].user_attrs["params_count"]), "1.69 MB",
                         f"{front[0].values[1]:.4g}"]
    assert cells[6::6] == [str(t.number) for t in front[1:]]
    assert "<script" not in page and "://" not in page.split("<h2>Pareto front</h2>")[1]


def _front_context(study: optuna.Study) -> report._Context:
    """A multi-objective study's figures' context, over made-up test data."""
    best = study.best_trials[0]
    x, predicted = np.zeros((4, 20), "float32"), np.zeros(4, "int64")
    return report._Context(study, study.trials, best, x, predicted, predicted, ["a", "b"])


def _deployment_study(objectives: list[str]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize"] + ["minimize"] * (len(objectives) - 1))
    study.set_user_attr(storage.FACTS_KEY, {"objectives": objectives})
    for values in ([0.9, 30, 3.0], [0.8, 20, 1.0], [0.7, 40, 2.0], [0.6, 10, 5.0]):
        study.add_trial(optuna.create_trial(values=values[:len(objectives)]))
    return study


@pytest.mark.parametrize(("objectives", "axis", "across"), [
    (["accuracy", "latency"], 1, "latency_ms"),
    (["accuracy", "params", "latency"], 2, "latency_ms"),
    (["accuracy", "size", "params"], 1, "size_bytes"),
])
def test_pareto_figure_puts_latency_across_else_the_first_cost(objectives, axis, across):
    study = _deployment_study(objectives)
    context = _front_context(study)
    spec = context.figures[0]
    figure = report._DRAW[spec.file](context, spec)
    ax = figure.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == (across, "val_accuracy")
    front = sorted(study.best_trials, key=lambda t: t.values[axis])
    (line,) = ax.get_lines()  # the front, joined in order across
    np.testing.assert_allclose(line.get_xydata(), [[t.values[axis], t.values[0]] for t in front])
    (points,) = ax.collections  # every completed trial
    assert len(points.get_offsets()) == len(study.trials)
    assert ("may look beaten" in spec.caption) == (len(objectives) > 2)
