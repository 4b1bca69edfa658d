"""`pressroom dashboard` on a finished search, looked at in a real (headless) Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from search.driver.run import run_search
from search.results.dashboard import FigurePublisher, spec_note
from search.results.figures import HISTORY_PNG, PROFILE_PNG, SENSITIVITY_PNG
from search.spec.config import load_spec, load_spec_text
from search.storage.study import SearchStudy, connect
from tests.conftest import free_port
from tests.search.conftest import PRESSROOM, tiny_search

REPO = Path(__file__).resolve().parents[3]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PNG = b"\x89PNG\r\n\x1a\n"


def _browser(profile: Path) -> Any:
    """Debian's headless Chromium through its own chromedriver (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1600,1200",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def dashboard(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`pressroom dashboard` serving the test database with an artifact folder: (URL, folder)."""
    artifacts, port = tmp_path / "artifacts", free_port()
    log = (tmp_path / "dashboard.log").open("w")
    cmd = [PRESSROOM, "dashboard", "--storage", postgres_url, "--port", str(port), "--artifacts", str(artifacts)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, artifacts
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _wait_until_up(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/studies", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _keep(screenshot: Path) -> None:
    """Copy a screenshot where a person looks at it: $PRESSROOM_SCREENSHOTS (docs/images refreshes
    the ones docs/results.md shows), else artifacts/ (git-ignored)."""
    kept = Path(os.environ.get("PRESSROOM_SCREENSHOTS") or REPO / "artifacts")
    kept.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, kept / screenshot.name)


@pytest.mark.ray
@pytest.mark.postgres
@pytest.mark.slow
def test_the_dashboard_shows_a_finished_search(write_spec, postgres_url, ray_head, ray_session, dashboard, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, artifacts = dashboard
    path = write_spec("dashboard.yaml", artifacts=str(artifacts))
    overrides = {"storage": postgres_url, "study": "dashboard-search", "workers.ray_address": ray_head.address}
    run_search(load_spec(path, overrides))

    study = optuna.load_study(study_name="dashboard-search", storage=postgres_url)
    listed = get_all_artifact_meta(study)
    figures = [HISTORY_PNG, PROFILE_PNG, SENSITIVITY_PNG]
    assert sorted(m.filename for m in listed) == sorted(figures)  # one each, however often redrawn
    metas = {meta.filename: meta for meta in listed}
    for meta in metas.values():
        assert (artifacts / meta.artifact_id).read_bytes().startswith(PNG)
    assert study.metric_names == ["fitness"]
    params = list(study.trials[0].params)
    assert 0 < len(params) <= 12 and all(t.params.keys() == set(params) for t in study.trials)
    complete = next(t for t in study.trials if t.state == TrialState.COMPLETE)

    _wait_until_up(url)
    browser = _browser(tmp_path / "chromium-profile")
    wait = WebDriverWait(browser, 90)
    text = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    shots = []

    def shot(name: str) -> None:
        browser.save_screenshot(str(tmp_path / name))
        shots.append(name)

    def image_shown(filename: str) -> Any:
        figure = f"/artifacts/{study._study_id}/{metas[filename].artifact_id}"

        def shown(_: Any) -> Any:
            images = [i for i in browser.find_elements(By.TAG_NAME, "img") if figure in (i.get_attribute("src") or "")]
            loaded = images and browser.execute_script("return arguments[0].naturalWidth", images[0]) > 0
            return images[0] if loaded else None

        return wait.until(shown)

    try:
        browser.get(f"{url}/dashboard")
        wait.until(lambda _: "dashboard-search" in text())  # the study is listed

        browser.set_window_size(1600, 2600)
        study_page = f"{url}/dashboard/studies/{study._study_id}"
        browser.get(study_page)
        image = image_shown(PROFILE_PNG)  # the best profile's figure, loaded from the artifact store
        image_shown(SENSITIVITY_PNG)
        wait.until(lambda _: "Study Artifacts" in text() and "Intermediate" in text())
        wait.until(lambda _: "Hyperparameter Importance" in text() and params[0] in text())  # the summary's
        shown = text()
        assert "internal server error" not in shown and '"rng"' not in shown
        assert "state after" in shown or "pressroom.checkpoint" not in shown  # described, never dumped
        shot("dashboard-study.png")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
        shot("dashboard-figures.png")

        browser.get(f"{study_page}/analytics")  # slice and contour plots over the summary parameters
        wait.until(lambda _: "Slice" in text() and "Contour" in text() and params[1] in text())
        assert "internal server error" not in text()
        shot("dashboard-analytics.png")

        browser.get(f"{study_page}/trialTable")  # 0.21 moved the trial table to Smart Selection
        wait.until(lambda _: browser.current_url.endswith("/smartSelection") and "Parallel Coordinate" in text())
        wait.until(lambda _: "Complete" in text() and params[0] in text())
        shot("dashboard-trial-table.png")

        browser.get(f"{study_page}/trials?numbers={complete.number}")  # its profile per named layer
        wait.until(lambda _: "Profile: sparsity per layer" in text() and "q_proj" in text())
        shot("dashboard-trial-profile.png")

        browser.get(f"{study_page}/trials")
        wait.until(lambda _: "User Attributes" in text())
        shown = text()
        assert "Pruned" in shown and "Complete" in shown
        for attr in ("generation", "member", "algorithm evopress", "worker", "stage", "levels"):
            assert attr in shown, attr
        shot("dashboard-trials.png")

        browser.get(f"{study_page}/note")
        wait.until(lambda _: "compression: sparsity to target 0.5 with magnitude" in text())
    finally:
        browser.quit()
    for name in shots:
        assert (tmp_path / name).read_bytes().startswith(PNG)
        _keep(tmp_path / name)


@pytest.mark.postgres
def test_figures_are_replaced_not_piled_up(postgres_url, tmp_path, make_evaluator):
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression={"compressor": "magnitude"})
    space = evaluator.space
    storage = connect(postgres_url)
    study = SearchStudy.open(storage, "figures-replaced", fingerprint="test", attrs={}).study
    publisher = FigurePublisher(study, space, tmp_path / "art", interval_s=0.0)
    rng = np.random.default_rng(0)
    history = [{"generation": g, "fitness": 1.0 / (g + 1), "best_fitness": 1.0 / (g + 1)} for g in range(3)]
    publisher.publish((space.sample(rng), 0.5), history[:1])
    first = {m.filename: (tmp_path / "art" / m.artifact_id).read_bytes() for m in get_all_artifact_meta(study)}
    publisher.publish((space.sample(rng), 0.25), history)
    publisher.close()
    metas = get_all_artifact_meta(study)
    assert sorted(m.filename for m in metas) == sorted([HISTORY_PNG, PROFILE_PNG])
    assert len(list((tmp_path / "art").iterdir())) == 2  # no partial or stale files left behind
    for meta in metas:
        assert (tmp_path / "art" / meta.artifact_id).read_bytes() != first[meta.filename]


def test_the_note_summarises_the_spec_without_secrets(make_evaluator, cache_dir, monkeypatch):
    monkeypatch.setenv("PRESSROOM_TEST_PW", "s3cret-pw")
    raw = tiny_search(cache_dir, storage="postgresql+psycopg://me:${PRESSROOM_TEST_PW}@db:5432/p")
    spec = load_spec_text(yaml.safe_dump(raw))
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression={"compressor": "magnitude"})
    note = spec_note(spec, evaluator.space)
    assert note.startswith(f"## {spec.study_name}")
    assert "postgresql+psycopg://me:***@db:5432/p" in note and "s3cret" not in note
    assert "evopress" in note and "generations=4" in note


def test_the_dashboard_command_reports_a_busy_port(run_cli, tmp_path):
    with tempfile.TemporaryDirectory() as folder, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        storage = f"sqlite:///{folder}/x.db"
        result = run_cli("dashboard", "--storage", storage, "--port", str(port), "--artifacts", str(tmp_path))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
