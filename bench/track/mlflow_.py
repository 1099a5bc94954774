"""``tracker=mlflow``: one MLflow run per computed stage, tagged with its cell.

The store is ``MLFLOW_TRACKING_URI`` when set, else a local SQLite file, ``results/<suite>/mlflow/mlflow.db``, with
artifacts beside it (MLflow 3 refuses the plain-folder store). The experiment is ``MLFLOW_EXPERIMENT_NAME`` or
``bench-<suite>``. Runs are grouped by tags rather than nested under a parent run: a cell's stages may be computed
by different processes (launchers) or shared with another cell, so no single process owns a cell's parent run.
``tags.cell`` (the hash), ``tags.cell_name`` (``<label>_s<seed>_<hash>``), ``tags.label``, ``tags.seed``,
``tags.stage`` and ``tags.stage_key`` select and group them (``mlflow ui``: group by ``cell_name``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.track.base import StageRun, Tracker, register_tracker

FOLDER = "mlflow"
_CLIENTS: dict[str, Any] = {}  # one client (and database engine) per tracking URI and process


def _key(name: str) -> str:
    """A metric or parameter name MLflow accepts (letters, digits, ``_-. :/``)."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{name}."))
        else:
            out[_key(name)] = str(v)[:6000]  # MLflow's limit on a parameter value
    return out


def client_for(root: Path) -> tuple[Any, Path | None]:
    """The client of ``MLFLOW_TRACKING_URI``, or of the suite's own SQLite store (and its artifact folder). The
    first process to open a new SQLite store creates its tables under a file lock, so parallel workers do not race."""
    from mlflow.tracking import MlflowClient

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = None
    if not uri:
        folder = (root / FOLDER).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        uri, artifacts = f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts"
    if uri not in _CLIENTS:
        if artifacts is None:
            _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
        else:
            from filelock import FileLock

            with FileLock(str(artifacts.parent / "mlflow.db.lock")):  # the store migrates its tables when it opens
                client = MlflowClient(tracking_uri=uri)
                client.search_experiments(max_results=1)
            _CLIENTS[uri] = client
    return _CLIENTS[uri], artifacts


@register_tracker("mlflow")
class MLflow(Tracker):
    """MLflow runs tagged cell=<hash>; local SQLite store results/<suite>/mlflow/ unless MLFLOW_TRACKING_URI is set."""

    requires = ("mlflow", "mtbench[mlflow]")
    FLUSH_EVERY = 500  # metrics buffered between writes: one database transaction per batch, not per scalar

    def start(self, run: StageRun) -> None:
        from mlflow.entities import Param

        self.client, artifacts = client_for(run.root)
        experiment = self._experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"bench-{run.suite}", artifacts)
        tags = {"cell": run.cell, "cell_name": run.group, "label": run.label, "seed": str(run.seed),
                "suite": run.suite, "stage": run.stage, "stage_key": run.key, "tasks": ",".join(run.tasks)}
        self.run_id = self.client.create_run(experiment, run_name=f"{run.group}/{run.name}", tags=tags).info.run_id
        self.pending: list[Any] = []
        self.last_step = 0
        config = run.full_config()
        params = [Param(k, v) for k, v in _flat(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_dict(self.run_id, config, "config.json")

    def _experiment(self, name: str, artifacts: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifacts.as_uri() if artifacts else None)
        except MlflowException:  # another process created it in between
            return self.client.get_experiment_by_name(name).experiment_id

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(_key(k), v, now, step) for k, v in scalars.items()]
        self.last_step = max(self.last_step, step)
        if len(self.pending) >= self.FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        for i in range(0, len(self.pending), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
        self.pending = []

    def finish(self, metrics: Mapping[str, float], ok: bool = True) -> None:
        self.log(self.last_step, metrics)
        self._flush()
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")
