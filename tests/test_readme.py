"""The README's promises: its commands are CI's, its plugin example runs as shown."""

from __future__ import annotations

import re

import optuna
from conftest import REPO, tune_args

from autodl import registry
from autodl.cli import main

README = (REPO / "README.md").read_text()


def code_blocks(after_heading: str) -> list[str]:
    section = README.split(after_heading, 1)[1]
    return re.findall(r"```\w*\n(.*?)```", section, flags=re.S)


def test_ci_runs_the_readme_install_and_test_commands():
    install = code_blocks("## Install")[0].strip()
    test = code_blocks("## Test")[0].strip()
    ci = (REPO / ".ci" / "run").read_text()
    assert install == 'pip install -e ".[dev]"' and install in ci
    assert test == "python -m pytest" and test in ci
    assert "venv" in ci


def test_readme_mentions_every_plugin():
    for plugin in registry.available():
        assert f"`{plugin.name}`" in README, plugin.name


def test_write_a_plugin_example_lists_and_tunes(in_tmp, tiny_npz, capsys):
    example = code_blocks("### Write a plugin")[0]
    assert len(example.strip().splitlines()) <= 15
    (in_tmp / "my_model.py").write_text(example)

    assert main(["plugins", "my_model.py", "--input-shape", "8,8,1", "--classes", "3"]) == 0
    listing = capsys.readouterr().out
    assert "my_model" in listing and "file my_model.py" in listing
    assert "A small convnet with a searchable width" in listing
    assert re.search(r"width\s+int 16..64 step 16", listing)
    # batch_norm is off by default for every plugin (SHARED_DEFAULTS)
    assert re.search(r"batch_norm\s+fixed False", listing)

    assert main(tune_args(f"npz:{tiny_npz}", "--study", "mine", arch="my_model.py",
                          trials=2)) == 0
    study = optuna.load_study(study_name="mine", storage="sqlite:///studies/autodl.db")
    assert len(study.trials) == 2 and "width" in study.trials[0].params
