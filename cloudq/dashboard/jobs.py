"""The jobs pages: find a job by id, list jobs by status and task, a job's own page, cancel.

Only with a job store (``app.job_store`` is not None; ``CLOUDQ_JOB_STORE``): without one a job leaves
no state behind its message, so there is nothing to list, and the pages say so (404) instead of showing
an empty list that would look like "no jobs". A cancel goes through ``app.job(job_id).cancel()``, the
library's own call: a waiting job is then acked without running; a running one is asked to stop
(``current_job().cancelled``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from cloudq.app import App
    from cloudq.dashboard.web import Dashboard

__all__ = ["STATUSES", "routes", "store_of"]

STATUSES = ("queued", "running", "retrying", "succeeded", "failed", "dead_lettered", "cancelled")
LIST_LIMIT = 100


def store_of(app: App) -> Any:
    """The app's job store, or None (also on a cloudq without job stores at all)."""
    return getattr(app, "job_store", None)


def routes(dash: Dashboard) -> list[Route]:
    pages = JobPages(dash)
    return [
        Route("/jobs", pages.listing, name="jobs"),
        Route("/jobs/{job_id}", pages.job, name="job"),
        Route("/jobs/{job_id}/cancel", pages.cancel, methods=["POST"], name="cancel_job"),
    ]


class JobPages:
    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash

    def store(self) -> Any:
        store = store_of(self.dash.app)
        if store is None:
            raise HTTPException(404, f"app {self.dash.app.name!r} has no job store (set CLOUDQ_JOB_STORE to keep job state)")
        return store

    async def listing(self, request: Request) -> Response:
        store = self.store()
        params = request.query_params
        job_id = params.get("id", "").strip()
        if job_id:
            return RedirectResponse(str(request.url_for("job", job_id=job_id).path), status_code=303)
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise HTTPException(400, f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        task = params.get("task", "").strip() or None
        found = await self.dash.calls.run(lambda: store.list(status=status, task=task, limit=LIST_LIMIT))
        tasks = sorted(self.dash.app.registry)
        return self.dash.page(request, "jobs.html", jobs=found, status_filter=status, task=task, statuses=STATUSES, tasks=tasks, limit=LIST_LIMIT)

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        state = await self.dash.calls.run(self.store().get, job_id)
        if state is None:
            raise HTTPException(404, f"no job {job_id!r} in the job store (never enqueued, or expired)")
        from cloudq.jobs.state import ACTIVE

        return self.dash.page(request, "job.html", job=state, cancellable=state.status in ACTIVE)

    async def cancel(self, request: Request) -> Response:
        await self.dash.action(request)
        job_id = request.path_params["job_id"]
        self.store()
        cancelled = await self.dash.calls.run(lambda: self.dash.app.job(job_id).cancel())
        state = await self.dash.calls.run(self.store().get, job_id)
        now = state.status if state is not None else "unknown"
        if not cancelled:
            message = f"job {job_id} was not cancelled: it is {now}"
        elif now == "cancelled":
            message = f"job {job_id} cancelled: it will not run"
        else:
            message = f"job {job_id} is {now}: asked to stop (current_job().cancelled is now true)"
        back = str(request.url_for("job", job_id=job_id).path)
        return self.dash.page(request, "result.html", title="Cancel", message=message, ok=bool(cancelled), back=back)
