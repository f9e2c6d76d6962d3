"""The wheel: installed into a fresh virtual environment, it is the whole of autodl.

The built-in plugins must install as ``autodl.plugins`` (never as a top-level ``plugins``)
and register through the ``autodl.plugins`` entry-point group. The fresh environment
borrows this environment's dependencies (TensorFlow and the rest) through a ``.pth``
file, which adds their folders to ``sys.path`` without running the ``.pth`` files in
them, so this checkout's editable install cannot shadow the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

import autodl

REPO = Path(__file__).resolve().parents[1]
BUILT_INS = {"mlp": "autodl.plugins.mlp:MLP", "cnn": "autodl.plugins.cnn:CNN",
             "mobilenetv2": "autodl.plugins.mobilenetv2:MobileNetV2"}
# Not part of a build from a clean checkout.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", "studies", "tests", "benchmarks",
)
# Without network access, so that no plugin downloads weights while it is listed.
NO_NETWORK = {name: "http://127.0.0.1:9" for name in
              ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}

pytestmark = pytest.mark.slow


def run(command: list, cwd: Path, env: dict | None = None, timeout: int = 300):
    return subprocess.run([str(part) for part in command], cwd=cwd, env=env, timeout=timeout,
                          capture_output=True, text=True)


def build_wheel(source: Path, out: Path) -> Path:
    """Build like ``pip wheel .`` does (isolated); without an index, try this environment."""
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
            "--wheel-dir", out, source]
    result = run(base, cwd=out)
    if result.returncode != 0:
        offline = run([*base, "--no-build-isolation"], cwd=out)
        if offline.returncode != 0:
            if re.search(r"(Could not find a version|No matching distribution|"
                         r"Failed to establish|NewConnectionError)", result.stdout + result.stderr):
                pytest.skip("no package index to fetch the build backend from")
            pytest.fail(f"building the wheel failed:\n{result.stdout}\n{result.stderr}")
    wheels = list(out.glob("autodl-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def dependency_folders() -> list[str]:
    """Where this environment's dependencies live (not this checkout)."""
    paths = sysconfig.get_paths()
    folders = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(f for f in folders if Path(f).is_dir()))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(wheel, venv_python, venv_bin, run_elsewhere)`` for a fresh venv holding the wheel."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    (tmp / "dist").mkdir()
    wheel = build_wheel(source, tmp / "dist")

    venv = tmp / "venv"
    result = run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    assert result.returncode == 0, result.stderr
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    result = run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                  "--no-index", "--disable-pip-version-check", wheel], cwd=tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  cwd=tmp).stdout.strip()
    (Path(purelib) / "_autodl_test_dependencies.pth").write_text(
        "\n".join(dependency_folders()) + "\n", encoding="utf-8"
    )

    elsewhere = tmp / "elsewhere"  # not the checkout: no autodl/ or plugins/ beside it
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", *NO_NETWORK)}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1",
               TF_CPP_MIN_LOG_LEVEL="3", KERAS_HOME=str(tmp / "keras"))

    def run_elsewhere(command: list, offline: bool = False):
        return run(command, cwd=elsewhere, env={**env, **NO_NETWORK} if offline else env)

    return wheel, python, bin_dir, run_elsewhere


def test_the_wheel_holds_autodl_only(installed):
    wheel = installed[0]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = archive.read(info).decode()
    assert {name.split("/")[0] for name in names} == {"autodl", f"autodl-{autodl.__version__}"
                                                      ".dist-info"}
    for module in ("mlp", "cnn", "mobilenetv2"):
        assert f"autodl/plugins/{module}.py" in names
    assert not any(name.startswith(("plugins/", "tests/")) for name in names)
    for name, value in BUILT_INS.items():
        assert f"{name} = {value}" in entry_points
    assert "autodl = autodl.cli:main" in entry_points


def test_the_installed_package_imports_from_the_venv(installed):
    _, python, _, run_elsewhere = installed
    venv = python.parent.parent
    probe = textwrap.dedent("""
        import importlib.metadata, importlib.util, json
        import autodl, autodl.plugins.cnn
        from autodl import registry
        eps = importlib.metadata.entry_points(group="autodl.plugins")
        print(json.dumps({
            "autodl": autodl.__file__,
            "version": autodl.__version__,
            "cnn": autodl.plugins.cnn.__file__,
            "plugins": importlib.util.find_spec("plugins") is not None,
            "entry_points": {ep.name: ep.value for ep in eps},
            "dist": str(importlib.metadata.distribution("autodl").locate_file("")),
            "sources": {p.name: p.source for p in registry.available()},
        }))
    """)
    result = run_elsewhere([python, "-c", probe])
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(found["autodl"]).is_relative_to(venv)
    assert Path(found["cnn"]).is_relative_to(venv)
    assert Path(found["cnn"]).parent == Path(found["autodl"]).parent / "plugins"
    assert Path(found["dist"]).is_relative_to(venv)
    assert found["version"] == autodl.__version__
    assert found["plugins"] is False  # no top-level `plugins` package
    assert {k: v for k, v in found["entry_points"].items() if k in BUILT_INS} == BUILT_INS
    for name in BUILT_INS:
        assert found["sources"][name] == "built-in"

    result = run_elsewhere([python, "-c", "import plugins"])
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'plugins'" in result.stderr


def test_the_console_script(installed):
    _, _, bin_dir, run_elsewhere = installed
    result = run_elsewhere([bin_dir / "autodl", "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"autodl {autodl.__version__}"
    result = run_elsewhere([bin_dir / "autodl", "plugins", "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: autodl plugins")


def test_plugins_lists_the_built_ins_with_their_hyperparameters(installed):
    _, _, bin_dir, run_elsewhere = installed
    result = run_elsewhere([bin_dir / "autodl", "plugins"], offline=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # A plugin's line, then its hyperparameters indented; Keras may print other lines.
    blocks: dict[str, list[str]] = {}
    name = None
    for line in result.stdout.splitlines():
        header = re.match(r"(\S+) +(built-in|keras-tuner|package|file)\b", line)
        if header:
            name = header[1]
            blocks[name] = [header[2]]
        elif line.startswith("    ") and name:
            blocks[name].append(line.strip())
        else:
            name = None
    assert list(blocks)[:3] == sorted(BUILT_INS)
    assert {name: lines[0] for name, lines in blocks.items() if name in BUILT_INS} == {
        name: "built-in" for name in BUILT_INS
    }
    assert "kt:HyperResNet" in blocks
    hyperparameters = {name: [line.split()[0] for line in lines[1:]]
                       for name, lines in blocks.items()}
    assert hyperparameters["mlp"] == ["depth", "units", "activation", "dropout", "batch_norm"]
    assert hyperparameters["cnn"] == ["depth", "filters", "kernel_size", "head", "units",
                                      "dropout", "batch_norm", "augment", "flip", "rotation",
                                      "zoom", "translation", "contrast"]
    assert "depth int 2..6" in [" ".join(line.split()) for line in blocks["mlp"]]
    assert "dropout float 0..0.5" in [" ".join(line.split()) for line in blocks["cnn"]]
