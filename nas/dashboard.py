"""optuna-dashboard on a study database, with every hnas study's objectives named.

optuna-dashboard reads the objective names from Optuna (`Study.set_metric_names`); hnas names
them when a study is created or opened by a worker, and here for any hnas study made before
that, so that the Pareto front and the history say quality and cache@131072 rather than
"Objective 0" and "Objective 1". Studies of other tools are left as they are.
"""

from __future__ import annotations

from typing import Any

from nas.definition import DefinitionError, StudyDefinition
from nas.storage import load_study, open_storage, study_names
from nas.study import set_metric_names


class DashboardError(RuntimeError):
    """optuna-dashboard is not installed."""


def name_objectives(storage: Any) -> list[str]:
    """Name the objectives of every hnas study in `storage` that lacks them; the names of
    the studies named now."""
    named = []
    for name in study_names(storage):
        study = load_study(name, storage)
        try:
            definition = StudyDefinition.from_attrs(study.user_attrs, name)
        except DefinitionError:  # another tool's study, or damaged (`hnas status` says how)
            continue
        if study.metric_names is None:
            set_metric_names(study, definition)
            named.append(name)
    return named


def _dashboard():
    try:
        import optuna_dashboard
    except ImportError:
        raise DashboardError("optuna-dashboard is not installed: "
                             "pip install 'hybrid-nas[dashboard]'") from None
    return optuna_dashboard


def dashboard_app(url: str):
    """optuna-dashboard's WSGI application on the database at `url`, objectives named."""
    dashboard = _dashboard()
    storage = open_storage(url, heartbeat=False)
    name_objectives(storage)
    return dashboard.wsgi(storage)


def serve(url: str, host: str, port: int) -> None:
    """Serve optuna-dashboard on the database at `url` until Ctrl-C."""
    dashboard = _dashboard()
    storage = open_storage(url, heartbeat=False)
    name_objectives(storage)
    dashboard.run_server(storage, host=host, port=port)
