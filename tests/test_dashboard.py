"""optuna-dashboard on a study: its study API names each objective as the study does."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

pytest.importorskip("optuna_dashboard")

from nas.dashboard import dashboard_app  # noqa: E402

DATA = Path(__file__).parent / "data"


class Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # no request log on the test's stderr
        pass


@pytest.fixture
def served(tmp_path):
    """The dashboard over a copy of the old-format database (made before hnas named the
    objectives), served by a real HTTP server on a free port; yields a GET function."""
    path = tmp_path / "format1.db"
    shutil.copy(DATA / "format1_study.db", path)
    server = make_server("127.0.0.1", 0, dashboard_app(f"sqlite:///{path}"),
                         handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    base = f"http://127.0.0.1:{server.server_port}"

    def get(route: str) -> dict:
        with urllib.request.urlopen(base + route, timeout=30) as response:
            assert response.status == 200
            return json.loads(response.read())

    get.base = base
    yield get
    server.shutdown()
    thread.join()
    server.server_close()


def test_the_dashboard_shows_the_objective_names(served):
    studies = {s["study_name"]: s for s in served("/api/studies")["study_summaries"]}
    assert set(studies) == {"format1", "format1_baseline"}
    detail = served(f"/api/studies/{studies['format1']['study_id']}")
    assert detail["objective_names"] == ["quality", "params", "decode_ms@64"]
    assert len(detail["trials"]) == 21
    # The trial attributes are there too, as the dashboard lists them.
    trial = next(t for t in detail["trials"] if t["number"] == 8)
    attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
    assert attrs["duplicate_of"] == "1" and attrs["pattern"] == "M A"
    baseline = served(f"/api/studies/{studies['format1_baseline']['study_id']}")
    assert baseline["objective_names"] == ["quality", "params"]


def test_a_real_browser_shows_the_names_on_the_pareto_front(served):
    """The dashboard's own page, drawn by Chromium: the Pareto front's axis menus and the
    importance legend name the objectives. Runs where playwright and a Chromium are
    installed (`pip install playwright`, and the system's chromium or `playwright install`)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium on PATH")
    studies = {s["study_name"]: s for s in served("/api/studies")["study_summaries"]}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served.base + f"/dashboard/studies/{studies['format1']['study_id']}",
                      wait_until="networkidle", timeout=60_000)
            page.get_by_text("Pareto Front").first.wait_for(timeout=60_000)
            page.wait_for_timeout(2_000)  # plotly draws after the data arrive
            shown = page.inner_text("body") + " ".join(
                text or "" for text in page.locator("svg text").all_text_contents())
        finally:
            browser.close()
    for name in ("quality", "params", "decode_ms@64"):
        assert name in shown
    assert "Objective 0" not in shown


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_one_line(tmp_path, port):
    from typer.testing import CliRunner

    from nas.cli import app

    result = CliRunner().invoke(app, ["dashboard", "--storage", f"sqlite:///{tmp_path}/d.db",
                                      "--port", port])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.output == f"error: --port {port}: expected a port from 1 to 65535\n"


def test_a_port_in_use_is_one_line(tmp_path):
    import socket

    from typer.testing import CliRunner

    from nas.cli import app

    shutil.copy(DATA / "format1_study.db", tmp_path / "d.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["dashboard", "--storage",
                                          f"sqlite:///{tmp_path}/d.db", "--port", str(port)])
    assert result.exit_code == 2, (result.output, result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: --host 127.0.0.1 --port {port}: cannot serve (Address already "
                      "in use)"] and "Traceback" not in result.output
