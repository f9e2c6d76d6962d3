"""`autodl dashboard`: the real server, opened in headless Chromium, stopped with Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from conftest import ctrl_c_reaches_it
from test_cli import assert_refused

import autodl.dashboard
from autodl.cli import main
from autodl.storage import artifact_dir

IN_CI = os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on the port (as the dashboard's would)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the dashboard exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the dashboard did not listen on port {port} within {timeout} s")


def missing(reason: str) -> None:
    """Skip locally; in CI the browser test must run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the dashboard test must not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromium-driver, and selenium: ``(browser, driver)`` paths."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing("selenium is not installed (pip install -e '.[dev]')")
    paths = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(paths):
        missing("chromium and chromedriver are not installed "
                "(apt-get install chromium chromium-driver)")
    return paths


@pytest.fixture
def browser(chromium):
    """Headless Chromium driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager never goes looking on the network.
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield session
    session.quit()


def page_text(browser, *expected: str, timeout: float = 30) -> str:
    """The page's text once it shows every expected string (the dashboard renders in JS)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(driver):
        text = driver.find_element(By.TAG_NAME, "body").text
        return text if all(e in text for e in expected) else False

    return WebDriverWait(browser, timeout).until(shown)


def test_dashboard_in_a_real_browser(chromium, tiny_study, browser, tmp_path):
    # chromium first: a missing browser skips before the study is trained
    from selenium.webdriver.common.by import By

    folder, storage, name = tiny_study
    best = optuna.load_study(study_name=name, storage=storage).best_trial
    port = free_port()
    stderr = (tmp_path / "stderr.txt").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "autodl", "dashboard", "--storage", storage, "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr, text=True,
        preexec_fn=ctrl_c_reaches_it,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        assert process.stdout.readline() == f"Dashboard for {storage}: {url}  (Ctrl-C to stop)\n"
        wait_for_port(port, process)

        browser.get(url)
        page_text(browser, name)
        browser.find_element(By.PARTIAL_LINK_TEXT, name).click()  # the study's card
        page_text(browser, "Intermediate values", "Best Trial")
        assert "/dashboard/studies/" in browser.current_url
        browser.find_element(By.CSS_SELECTOR, "a[href$='/trials']").click()
        text = page_text(browser, "3 Trials", "Trial 0", "Trial 1", "Trial 2", "Best Trial")
        assert "Intermediate Values" in text  # autodl's per-epoch reports
        # The value is named as autodl names it (study.set_metric_names), not "Objective 0".
        assert "val_accuracy" in text and "Objective 0" not in text
        browser.get(f"{browser.current_url}?numbers={best.number}")
        # The best model is an artifact of its trial, from the same artifact store.
        page_text(browser, f"Trial {best.number} (", "Intermediate Values",
                  f"trial-{best.number}.keras")
        href = browser.find_element(By.CSS_SELECTOR, "a[href*='/artifacts/']").get_attribute(
            "href")
        assert href.endswith(best.user_attrs["model_artifact_id"])
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    stderr.seek(0)
    err = stderr.read()
    assert process.returncode in (0, 130), err
    assert "Traceback" not in err
    assert out == "Dashboard stopped.\n"
    assert port_is_free(port)
    assert (folder / "studies" / "artifacts").is_dir()


@pytest.fixture
def no_server(monkeypatch):
    """Record run_server's arguments instead of serving (so a test never blocks)."""
    calls = []
    monkeypatch.setattr(autodl.dashboard.optuna_dashboard, "run_server",
                        lambda storage, **kwargs: calls.append((storage, kwargs)))
    return calls


def test_the_storage_and_artifact_store_reach_the_dashboard(tiny_study, no_server, capsys):
    _, storage, name = tiny_study
    port = free_port()
    assert main(["dashboard", "--storage", storage, "--port", str(port)]) == 0
    (rdb, kwargs), = no_server
    assert optuna.get_all_study_names(rdb) == [name]
    assert (kwargs["host"], kwargs["port"]) == ("127.0.0.1", port)
    artifact_id = optuna.load_study(study_name=name, storage=storage).best_trial.user_attrs[
        "model_artifact_id"]
    with kwargs["artifact_store"].open_reader(artifact_id) as model:
        assert model.read() == (artifact_dir(storage) / artifact_id).read_bytes()
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == (
        f"Dashboard for {storage}: http://127.0.0.1:{port}/  (Ctrl-C to stop)")
    assert captured.err == ""


def test_another_host_than_this_machine_is_warned_about(tiny_study, no_server, capsys):
    _, storage, _ = tiny_study
    assert main(["dashboard", "--storage", storage, "--host", "0.0.0.0",
                 "--port", str(free_port())]) == 0
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith("autodl: warning: the dashboard has no authentication")


def test_bad_input_is_one_line_exit_2(tiny_study, no_server, tmp_path, capsys):
    _, storage, _ = tiny_study
    missing_db = f"sqlite:///{tmp_path}/missing.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_refused(["dashboard", "--storage", storage, "--port", str(port)],
                       f"cannot serve the dashboard on 127.0.0.1:{port}: the port is in use",
                       capsys)
    for args, message in [
        (["--storage", missing_db], f"no study storage at {missing_db}"),
        (["--storage", storage, "--port", "0"], "--port must be between 1 and 65535, got 0"),
        (["--storage", storage, "--port", "70000"], "--port must be between 1 and 65535"),
    ]:
        assert_refused(["dashboard", *args], message, capsys)
    assert no_server == [] and list(tmp_path.iterdir()) == []
