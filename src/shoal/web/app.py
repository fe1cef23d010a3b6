"""The Starlette app: pages from package data, a JSON API and a server-sent event stream
over one `Queue`. Every queue call runs on one thread of its own (`QueueThread`): the
event loop never blocks on the queue, and backends that keep a connection per thread
(sqlite) keep one."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import ShoalError, UsageError, os_error_line
from ..job import STATES, State
from ..queue.base import STOP, Queue
from ..views.status import failure_reasons
from .auth import Guard, TokenCheck
from .data import Overview, job_detail, jobs_page, timeline

T = TypeVar("T")

STATIC = {  # the only files served: name -> content type
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
NO_STORE = {"cache-control": "no-store"}
STOP_CHECK_S = 0.1
ACTIONS = ("cancel", "retry")  # Queue methods a POST may call, on one job each
# (and a worker's stop: `send_control(STOP)`, it finishes its jobs and exits)


class QueueThread:
    """Runs queue calls one at a time on a thread of their own."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-web-queue")

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def static_text(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def parse_state_filter(text: str | None) -> set[State] | None:
    """`?state=failed,cancelled` as states; empty or absent: every state."""
    if not text:
        return None
    names = [word.strip() for word in text.split(",") if word.strip()]
    unknown = [name for name in names if name not in STATES]
    if unknown:
        raise UsageError(f"state: unknown {', '.join(unknown)} "
                         f"(known: {', '.join(STATES)})")
    return {STATES[name] for name in names}


def _int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    try:
        return int(text) if text is not None else default
    except ValueError:
        raise UsageError(f"{name}: {text!r} is not a whole number") from None


class Dashboard:
    """The request handlers, over one queue."""

    def __init__(self, queue: Queue, guard: Guard, every_s: float) -> None:
        self.queue = queue
        self.guard = guard
        self.every_s = every_s
        self.thread = QueueThread()
        self.overview = Overview(queue, every_s)
        self.stopping = False  # set as the server shuts down: event streams then end

    async def index(self, request: Request) -> Response:
        page = static_text("index.html")
        page = page.replace("{{token}}", self.guard.token)
        page = page.replace("{{read_only}}", "1" if self.guard.read_only else "0")
        return Response(page, media_type="text/html; charset=utf-8", headers=NO_STORE)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(static_text(name), media_type=STATIC[name], headers=NO_STORE)

    async def api_overview(self, request: Request) -> Response:
        return JSONResponse(await self.thread.run(self.overview.get), headers=NO_STORE)

    async def api_jobs(self, request: Request) -> Response:
        states = parse_state_filter(request.query_params.get("state"))
        page, size = _int(request, "page", 0), _int(request, "size", 50)
        search = request.query_params.get("q", "").strip()
        found = await self.thread.run(jobs_page, self.queue, states, page, size, search)
        return JSONResponse(found, headers=NO_STORE)

    async def api_job(self, request: Request) -> Response:
        found = await self.thread.run(self._detail, request.path_params["job_id"])
        if found is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return JSONResponse(found, headers=NO_STORE)

    def _detail(self, job_id: str) -> dict[str, Any] | None:
        status = self.queue.get(job_id)
        return job_detail(self.queue, status) if status is not None else None

    async def act(self, request: Request) -> Response:
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        if action not in ACTIONS:
            return JSONResponse({"error": f"no action {action!r}"}, status_code=404)
        changed = await self.thread.run(getattr(self.queue, action), [job_id])
        self.overview.forget()
        return JSONResponse({"action": action, "changed": changed})

    async def api_timeline(self, request: Request) -> Response:
        return JSONResponse(await self.thread.run(timeline, self.queue), headers=NO_STORE)

    async def api_failures(self, request: Request) -> Response:
        found = await self.thread.run(failure_reasons, self.queue)
        return JSONResponse({"failures": found}, headers=NO_STORE)

    async def stop_worker(self, request: Request) -> Response:
        worker_id = request.path_params["worker_id"]
        known = await self.thread.run(self.queue.workers)
        if not any(w.id == worker_id and not w.lost for w in known):
            return JSONResponse({"error": f"no live worker {worker_id!r}"}, status_code=404)
        await self.thread.run(self.queue.send_control, worker_id, STOP)
        return JSONResponse({"action": "stop", "changed": [worker_id]})

    async def events(self, request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            while not self.stopping and not await request.is_disconnected():
                try:
                    data = await self.thread.run(self.overview.get)
                except (ShoalError, OSError) as exc:  # the queue is out of reach for now
                    yield f"event: trouble\ndata: {json.dumps({'error': _line(exc)})}\n\n"
                else:
                    yield f"event: overview\ndata: {json.dumps(data)}\n\n"
                await self._pause(self.every_s)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**NO_STORE, "x-accel-buffering": "no"})


    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake within STOP_CHECK_S of `stopping`."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not self.stopping:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, STOP_CHECK_S))


def _line(exc: Exception) -> str:
    return os_error_line(exc) if isinstance(exc, OSError) else str(exc)


async def _usage_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _queue_trouble(request: Request, exc: Exception) -> Response:
    """The queue failed (a coordinator gone, a disk error): one line to the page, which
    keeps going, rather than a traceback on the dashboard's terminal."""
    return JSONResponse({"error": _line(exc)}, status_code=503)


def build_app(queue: Queue, guard: Guard, *,
              every_s: float = 1.0) -> tuple[Starlette, Dashboard]:
    """The dashboard over `queue`, `every_s` between two live updates, behind `TokenCheck`;
    and its handlers (the server sets their `stopping`)."""
    web = Dashboard(queue, guard, every_s)
    routes = [
        Route("/", web.index),
        Route("/static/{name}", web.static),
        Route("/api/overview", web.api_overview),
        Route("/api/jobs", web.api_jobs),
        Route("/api/jobs/{job_id}", web.api_job),
        Route("/api/jobs/{job_id}/{action}", web.act, methods=["POST"]),
        Route("/api/failures", web.api_failures),
        Route("/api/timeline", web.api_timeline),
        Route("/api/workers/{worker_id}/stop", web.stop_worker, methods=["POST"]),
        Route("/api/events", web.events),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        web.thread.close()

    handlers = {UsageError: _usage_error, ShoalError: _queue_trouble, OSError: _queue_trouble}
    app = Starlette(routes=routes, exception_handlers=handlers,  # type: ignore[arg-type]
                    lifespan=lifespan)
    app.add_middleware(TokenCheck, guard=guard)
    return app, web
