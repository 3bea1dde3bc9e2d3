"""What the HTTP API calls for experiments: feedback on a routed request, and an experiment's report.

`DbExperiments` answers from Postgres (the Router deployment holds one; tests use it in-process);
`serve_app.handles.HandleExperiments` calls the Router deployment's `feedback` / `experiment_report`
through its handle.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from serve_app.db.database import Database
from serve_app.experiments.config import Experiments
from serve_app.experiments.report import build_report
from serve_app.experiments.store import record_feedback, record_session_feedback, report_rows


class ExperimentBackend(Protocol):
    async def feedback(
        self, tenant_id: str, request_id: str, resolved: bool, rating: int | None, comment: str | None
    ) -> dict[str, Any] | None: ...

    async def experiment_report(self, tenant_id: str | None, name: str) -> dict[str, Any] | None: ...


class DbExperiments:
    def __init__(self, db: Database, experiments: Experiments):
        self.db, self.experiments = db, experiments

    async def feedback(
        self, tenant_id: str, request_id: str, resolved: bool, rating: int | None, comment: str | None
    ) -> dict[str, Any] | None:
        await self.db.ready()
        return await record_feedback(self.db, tenant_id, uuid.UUID(request_id), resolved, rating, comment)

    async def session_feedback(
        self, tenant_id: str, session_id: str, resolved: bool, rating: int | None = None
    ) -> int:
        """A session's outcome on its requests without feedback yet (the agent, at session end)."""
        await self.db.ready()
        return await record_session_feedback(self.db, tenant_id, uuid.UUID(session_id), resolved, rating)

    async def experiment_report(self, tenant_id: str | None, name: str) -> dict[str, Any] | None:
        """The report (one tenant's requests; None: every tenant's), or None for an experiment neither
        configured nor in the data."""
        await self.db.ready()
        configured = self.experiments.get(name)
        by_unit = configured is None or configured.unit != "request"  # daily unit sums: tenant, session
        arms, daily = await report_rows(self.db, name, tenant_id, by_unit=by_unit)
        if configured is None and not arms:
            return None
        report = build_report(name, arms, daily, configured)
        report["tenant_id"] = tenant_id
        return report
