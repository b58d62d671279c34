"""The web view as an ASGI app (Starlette): the pages, live updates as server-sent events, cancel.

Routes: `/` workflows, `/workflow/{id}` one workflow (POST `/workflow/{id}/cancel`), `/steps`, `/agents`,
`/dead-letters`, `/live/...` the event streams, `/static/...` the stylesheet and script shipped
in the package (nothing is fetched from elsewhere: the view works offline).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..index._stats import parse_window
from ._data import Filters, Source, StepsView
from ._pages import agents_page, dead_letters_page, error_page, fragments, steps_page, workflow_page, workflows_page
from ._steps import DEFAULT_WINDOW, steps_fragments

STATIC = Path(__file__).resolve().parent / "static"
# How often a live stream looks at the index: the indexer commits at most every ~0.5 s while busy and
# touches its file every 5 s when idle (index._indexer), so 1 s shows a change within ~1.5 s.
POLL_S = 1.0
# How often the Steps page's stream recomputes: index.step_stats took 110 ms of CPU (232-246 ms wall at
# load 6-8) over 35,000 step runs in the window (index._stats), so every 3 s costs ~4-8% of a core, only while
# a Steps page is open (the stream's loop ends with its client); clients on one window share a result.
STATS_POLL_S = 3.0
# How soon a live stream notices the server stopping (a flag read, no I/O).
STOP_CHECK_S = 0.1
# A comment line this often keeps a stream's proxies and browsers from timing it out.
KEEPALIVE_S = 15.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _filters(request: Request) -> Filters:
    q = request.query_params
    try:
        limit = max(1, min(1000, int(q.get("limit", "100"))))
    except ValueError:
        limit = 100
    return Filters(q.get("workflow", "").strip(), q.get("status", "").strip(), q.get("since", "").strip(), limit)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this server: a browser names the page's origin.

    The view listens on loopback, but any web page the user opens could post a form to it.
    """
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        origin = None if referer is None else f"{urlsplit(referer).scheme}://{urlsplit(referer).netloc}"
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


class _Views:
    """The routes' handlers over one source."""

    def __init__(self, source: Source, poll_s: float, stopping: Callable[[], bool], stats_poll_s: float) -> None:
        self.source = source
        self.poll_s = poll_s
        self.stopping = stopping
        self.stats_poll_s = stats_poll_s
        self._stats: dict[str, tuple[float, str]] = {}  # window -> (when computed, monotonic s; fragments)

    def _fresh_stats(self, window: str, window_s: float) -> str:
        """The Steps page's fragments as JSON, recomputed at most once per stats_poll_s per window."""
        now = time.monotonic()
        cached = self._stats.get(window)
        if cached is not None and now - cached[0] < self.stats_poll_s * 0.9:
            return cached[1]
        data = orjson.dumps(steps_fragments(self.source.steps(window, window_s))).decode()
        self._stats = {w: c for w, c in self._stats.items() if now - c[0] < self.stats_poll_s} | {window: (now, data)}
        return data

    async def steps(self, request: Request) -> Response:
        window = request.query_params.get("window", DEFAULT_WINDOW).strip() or DEFAULT_WINDOW
        try:
            window_s = parse_window(window)
        except ValueError as exc:
            return HTMLResponse(error_page("Bad window", f"window {window!r}: {exc}"), status_code=400)
        view: StepsView = await asyncio.to_thread(self.source.steps, window, window_s)
        return HTMLResponse(steps_page(view))

    async def live_steps(self, request: Request) -> Response:
        window = request.query_params.get("window", DEFAULT_WINDOW).strip() or DEFAULT_WINDOW
        try:
            window_s = parse_window(window)
        except ValueError as exc:
            return HTMLResponse(error_page("Bad window", f"window {window!r}: {exc}"), status_code=400)
        return _stream(lambda: self._fresh_stats(window, window_s), self.stats_poll_s, self.stopping,
                       in_thread=True)

    async def workflows(self, request: Request) -> Response:
        filters = _filters(request)
        return HTMLResponse(workflows_page(self.source.overview(filters), filters))

    async def workflow(self, request: Request) -> Response:
        workflow_id = request.path_params["workflow_id"]
        try:
            view = await self.source.workflow(workflow_id)
        except Exception as exc:  # no broker, a bad policy: said on the page, the server goes on
            return HTMLResponse(error_page("Workflow unavailable", _one_line(exc)), status_code=502)
        if not view.entries:
            return HTMLResponse(error_page("No such workflow", f"No events of workflow {workflow_id!r}."),
                                status_code=404)
        q = request.query_params
        seen = int(q["seen"]) if q.get("seen", "").isdigit() else 0
        return HTMLResponse(workflow_page(view, _now_ms(), notice=q.get("notice", ""), notice_ok=q.get("ok") == "1",
                                          seen=seen))

    async def cancel(self, request: Request) -> Response:
        workflow_id = request.path_params["workflow_id"]
        if not _same_origin(request):
            return HTMLResponse(error_page("Refused", "A cancel must come from this view's own page."),
                                status_code=403)
        form = parse_qs((await request.body()).decode(errors="replace"))
        reason = (form.get("reason") or [""])[0].strip()
        try:
            ok, message = await self.source.cancel(workflow_id, reason)
        except Exception as exc:
            ok, message = False, f"not cancelled: {_one_line(exc)}"
        query = urlencode({"notice": message, "ok": "1" if ok else "0"})
        return RedirectResponse(f"/workflow/{quote(workflow_id)}?{query}", status_code=303)

    async def agents(self, request: Request) -> Response:
        try:
            rows = await self.source.agents()
        except Exception as exc:
            return HTMLResponse(error_page("Agents unavailable", _one_line(exc)), status_code=502)
        steps = await asyncio.to_thread(self.source.steps, DEFAULT_WINDOW, parse_window(DEFAULT_WINDOW))
        return HTMLResponse(agents_page(rows, None if steps.problem else steps))

    async def dead_letters(self, request: Request) -> Response:
        try:
            letters = await self.source.dead_letters()
        except Exception as exc:
            return HTMLResponse(error_page("Dead letters unavailable", _one_line(exc)), status_code=502)
        return HTMLResponse(dead_letters_page(letters))

    async def live_workflows(self, request: Request) -> Response:
        filters = _filters(request)
        return _stream(lambda: orjson.dumps(fragments(self.source.overview(filters))).decode(), self.poll_s,
                       self.stopping)

    async def live_workflow(self, request: Request) -> Response:
        workflow_id = request.path_params["workflow_id"]

        def row() -> str | None:
            found = self.source.index_row(workflow_id)
            return None if found is None else orjson.dumps({"status": found["status"],
                                                            "events": found["events"]}).decode()

        return _stream(row, self.poll_s, self.stopping)


def make_app(source: Source, *, poll_s: float = POLL_S, stopping: Callable[[], bool] = lambda: False,
             stats_poll_s: float = STATS_POLL_S) -> Starlette:
    """The web view's ASGI app over `source`.

    Args:
        source: Where the pages' data comes from.
        poll_s: How often the live streams look for changes.
        stopping: Whether the server is shutting down: the live streams then end (within STOP_CHECK_S),
            so the server's graceful shutdown does not wait on them.
        stats_poll_s: How often the Steps page's stream recomputes the statistics.

    Returns:
        The app, to serve with uvicorn (see serve) or any ASGI server.
    """
    views = _Views(source, poll_s, stopping, stats_poll_s)
    return Starlette(routes=[
        Route("/", views.workflows),
        Route("/workflow/{workflow_id:path}/cancel", views.cancel, methods=["POST"]),
        Route("/workflow/{workflow_id:path}", views.workflow),
        Route("/steps", views.steps),
        Route("/agents", views.agents),
        Route("/dead-letters", views.dead_letters),
        Route("/live/workflows", views.live_workflows),
        Route("/live/workflow/{workflow_id:path}", views.live_workflow),
        Route("/live/steps", views.live_steps),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])


def _stream(read: Callable[[], str | None], poll_s: float, stopping: Callable[[], bool], *,
            in_thread: bool = False) -> StreamingResponse:
    """Server-sent events: an `update` with `read()`'s text whenever it changes (None: nothing to send).

    `in_thread`: read in a worker thread, for a read that costs enough CPU to stall the other requests.

    The stream ends when the server is stopping (the browser's EventSource would reconnect, to nothing).
    """

    async def events() -> AsyncIterator[str]:
        last: str | None = None
        quiet = 0.0
        while not stopping():
            data = await asyncio.to_thread(read) if in_thread else read()
            if data is not None and data != last:
                last, quiet = data, 0.0
                yield f"event: update\ndata: {data}\n\n"
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            waited = 0.0
            while waited < poll_s and not stopping():
                await asyncio.sleep(min(STOP_CHECK_S, poll_s - waited))
                waited += STOP_CHECK_S
            quiet += poll_s

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
