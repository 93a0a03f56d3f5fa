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

    def get(route: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{route}",
                                    timeout=30) as response:
            assert response.status == 200
            return json.loads(response.read())

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
