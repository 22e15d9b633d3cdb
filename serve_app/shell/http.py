"""The HTTP API as a FastAPI app over a :class:`serve_app.shell.service.Service` (docs/SERVING.md, "The API").

Framework only: validation comes from ``serve_app.shell.api``, answers from the service. The
Serve ingress mounts this app; tests and a plain uvicorn process can run it directly.
Input never produces a 5xx: bad bodies and parameters are 422 with a message, unknown
songs 404 with suggestions, admin calls without a valid token 401/403.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Awaitable, Callable

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, Field, ValidationError, model_validator

from serve_app import code_revision
from serve_app.core.hybrid import Query as RecQuery
from serve_app.core.hybrid import Result
from serve_app.shell.api import (
    MAX_TEXT,
    FeedbackRequest,
    FeedbackResponse,
    RecommendRequest,
    RecommendResponse,
    Suggestion,
    UnknownSongBody,
)
from serve_app.shell.cache import ResultCache
from serve_app.artifacts.events import EventLog
from serve_app.shell.feedback import Counts, MemoryCounts, Sessions, new_request_id, request_bucket, weights_bucket
from serve_app.shell.reload import VersionGone
from serve_app.shell.service import Front, Overdue, Service, UnknownSong
from serve_app.shell.weights import WeightsUnavailable

log = logging.getLogger("segue.http")
FEEDBACK_RATE = parse("10/second")  # per client address and ingress replica
ADMIN_RATE = parse("10/second")  # the same, for the admin routes (checked before the token)
MAX_BODY_BYTES = 64 * 1024  # larger request bodies are refused with 413


class WeightsUpdate(BaseModel):
    """New default weights for every replica: each in [0, 1], not both 0."""

    w1: Annotated[float, Field(ge=0.0, le=1.0)]
    w2: Annotated[float, Field(ge=0.0, le=1.0)]

    @model_validator(mode="after")
    def _not_both_zero(self) -> "WeightsUpdate":
        if self.w1 == 0 and self.w2 == 0:
            raise ValueError("w1 and w2 cannot both be 0")
        return self


def admin_token() -> str | None:
    """The admin token from ``SEGUE_ADMIN_TOKEN`` or the file named by ``SEGUE_ADMIN_TOKEN_FILE``."""
    token = os.environ.get("SEGUE_ADMIN_TOKEN")
    if not token and os.environ.get("SEGUE_ADMIN_TOKEN_FILE"):
        token = Path(os.environ["SEGUE_ADMIN_TOKEN_FILE"]).read_text().strip()
    return token or None


MIN_TOKEN_CHARS = 16


def require_admin_token() -> None:
    """Refuse to serve with no admin token or a short (guessable) one, unless
    ``SEGUE_DEMO=1`` says this is a demo (then the admin routes answer 403 without a token)."""
    if os.environ.get("SEGUE_DEMO") == "1":
        return
    token = admin_token()
    if token is None:
        raise RuntimeError("no admin token: set SEGUE_ADMIN_TOKEN or SEGUE_ADMIN_TOKEN_FILE "
                           "(or SEGUE_DEMO=1 to run a demo without the admin routes)")
    if len(token) < MIN_TOKEN_CHARS:
        raise RuntimeError(f"the admin token is too weak: use at least {MIN_TOKEN_CHARS} random characters "
                           "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")


@dataclass
class Backend:
    """What the app calls.

    ``fronts``: the loaded bundles' fronts, newest first (empty while the first loads);
    ``run``: the result of a query from the named bundle version (raises
    :class:`~serve_app.shell.reload.VersionGone` when that version is no longer served);
    ``weights``/``set_weights``: the default weights and how they change everywhere;
    ``readiness``: ``{"ready": bool, ...}`` for ``/readyz``; ``weights_report``: the
    weights and which generation each replica applied, for ``GET /admin/weights``;
    ``events``: the impression and feedback log (None: feedback is refused); ``counts``: the feedback counters;
    ``disliked``/``dislike``: a user's session dislikes (track ids), shared by every replica.
    """

    fronts: Callable[[], list[Front]]
    run: Callable[[RecQuery, str], Awaitable[Result]]
    weights: Callable[[], tuple[float, float]]
    set_weights: Callable[[float, float], Awaitable[dict]]
    readiness: Callable[[], Awaitable[dict]]
    weights_report: Callable[[], Awaitable[dict]]
    events: Callable[[], EventLog | None]
    counts: Counts
    disliked: Callable[[str], Awaitable[frozenset[str]]]
    dislike: Callable[[str, str], Awaitable[None]]


def local_backend(service: Service, events: EventLog | None = None, counts: Counts | None = None,
                  sessions: Sessions | None = None) -> Backend:
    """A backend answering from one in-process :class:`Service` (tests, plain uvicorn)."""
    sessions = sessions or Sessions()

    async def run(query: RecQuery, version: str) -> Result:
        return service.rec.run(query)

    async def set_weights(w1: float, w2: float) -> dict:
        service.rec.set_default_weights(w1, w2)
        return {"w1": w1, "w2": w2}

    async def readiness() -> dict:
        return {"ready": True, "model_version": service.version}

    async def weights_report() -> dict:
        w1, w2 = service.default_weights
        return {"w1": w1, "w2": w2}

    async def disliked(user_id: str) -> frozenset[str]:
        return sessions.disliked(user_id)

    async def dislike(user_id: str, track_id: str) -> None:
        sessions.dislike(user_id, track_id)

    return Backend(lambda: [service.front], run, lambda: service.default_weights, set_weights, readiness,
                   weights_report, lambda: events, counts or MemoryCounts(), disliked, dislike)


def _error(status: int, detail: str, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


def _invalid(errors: list[dict], skip: int) -> JSONResponse:
    """422 naming each problem by its field (``skip`` drops a location prefix such as ``body``)."""
    problems = [f"{'.'.join(str(p) for p in e['loc'][skip:]) or 'request'}: {e['msg']}" for e in errors]
    return _error(422, "; ".join(problems) or "invalid request")


class JsonBodies:
    """ASGI middleware: POST bodies of the public ``paths`` are read as JSON whatever the
    Content-Type says (``curl -d '{...}'`` sends form encoding). Only for routes without
    side effects or credentials; the admin route keeps FastAPI's strict checking."""

    def __init__(self, app, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class RequestMetrics:
    """ASGI middleware: every request counted by route, method and status code
    (``segue_requests``) and its latency observed in ms (``segue_request_ms``); paths that
    are not routes count as ``other``, so the tags stay few. Answers >= 400 are logged one
    line each (under Serve: JSON with the request id)."""

    def __init__(self, app, counts: Counts, routes: frozenset[str]) -> None:
        self.app = app
        self.counts = counts
        self.routes = routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            ms = (time.perf_counter() - started) * 1000
            self.counts.inc("segue_requests", {"route": route, "method": scope["method"], "code": str(status)})
            self.counts.observe("segue_request_ms", {"route": route}, ms)
            if status >= 400:  # access logs are off for speed; the refused and failed ones are logged
                log.log(logging.ERROR if status >= 500 else logging.INFO, "%s %s -> %d in %.1f ms",
                        scope["method"], route, status, ms)


def create_app(backend: Backend, cache: ResultCache | None = None) -> FastAPI:
    """The FastAPI app; every route asks ``backend`` for the bundle of the moment. Results
    are cached by (query, bundle version) when a ``cache`` is given: the query holds the
    effective weights, so neither a weight change nor a bundle switch can serve a stale one."""
    app = FastAPI(title="Segue", summary="Hybrid song recommender",
                  description="Top-K songs for a song, a session, a user or a new song, each with its reason.",
                  max_body_size=MAX_BODY_BYTES)

    app.add_middleware(JsonBodies, paths=frozenset({"/recommend", "/feedback"}))
    limiter = MovingWindowRateLimiter(MemoryStorage())

    def allowed(rate, scope: str, request: Request) -> bool:
        """Count one hit of the client's address against ``rate``; False once it is used up."""
        return limiter.hit(rate, scope, request.client.host if request.client else "unknown")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(exc.errors(), skip=1)

    def current_front() -> Front | JSONResponse:
        fronts = backend.fronts()
        return fronts[0] if fronts else _error(503, "bundle not loaded yet")

    async def run(query: RecQuery, version: str) -> Result:
        if cache is None:
            return await backend.run(query, version)
        # an answer without a part of the graph is served, not kept
        return await cache.get((query, version), lambda: backend.run(query, version), keep=lambda r: not r.degraded)

    async def answer(req: RecommendRequest, request: Request):
        current = current_front()
        if isinstance(current, JSONResponse):
            return current
        weights = backend.weights()
        disliked = await backend.disliked(req.user_id) if req.user_id else frozenset()
        for front in backend.fronts():  # newest first; an older bundle answers while the graph switches
            try:
                asked = front.ask(req, weights, disliked)
                try:
                    result = await run(asked.query, front.version)
                except Overdue as exc:  # the graph is stuck or swamped: something now beats a 503
                    result = front.without_graph(asked.query, str(exc))
            except UnknownSong as exc:
                backend.counts.inc("segue_unknown_songs", {})
                body = UnknownSongBody(detail=str(exc), suggestions=exc.suggestions)
                return JSONResponse(status_code=404, content=body.model_dump())
            except VersionGone:
                continue
            q = asked.query
            if result.weights.fallback:
                backend.counts.inc("segue_fallbacks", {"fallback": result.weights.fallback})
            response = front.render(result, asked, new_request_id(q.w1, q.w2))
            impression(response, req.user_id, weights_bucket(q.w1, q.w2))
            return response
        return JSONResponse(status_code=503, headers={"Retry-After": "1"},
                            content={"detail": "switching bundles, retry in a second"})

    def impression(response: RecommendResponse, user_id: str | None, bucket: str) -> None:
        """Log and count the songs a response showed (best effort: the response never waits)."""
        shown = [r.track_id for r in response.recommendations]
        if not shown:
            return
        backend.counts.inc("segue_impressions", {"weights": bucket, "kind": response.query.kind}, len(shown))
        events = backend.events()
        if events is not None:
            events.record({"type": "impression", "request_id": response.request_id, "user_id": user_id,
                                   "kind": response.query.kind, "weights": bucket, "track_ids": shown,
                                   "model_version": response.model_version})

    @app.post("/recommend", response_model=RecommendResponse,
              responses={404: {"model": UnknownSongBody}, 422: {"description": "invalid request"}})
    async def recommend(req: RecommendRequest, request: Request):
        """Top-K songs for ``{"song", "artist", "k"}`` (the minimal form) or any query kind."""
        return await answer(req, request)

    @app.get("/recommend", response_model=RecommendResponse, responses={404: {"model": UnknownSongBody}})
    async def recommend_get(request: Request, song: str | None = None, artist: str | None = None, k: int = 10,
                            w1: float | None = None, w2: float | None = None, diversity: float = 0.0,
                            user_id: str | None = None):
        """The same as POST, for links and curl: ``/recommend?song=X&artist=Y&k=10``."""
        try:
            req = RecommendRequest(song=song, artist=artist, k=k, w1=w1, w2=w2, diversity=diversity, user_id=user_id)
        except ValidationError as exc:
            return _invalid(exc.errors(), skip=0)
        return await answer(req, request)

    @app.get("/songs/search", response_model=list[Suggestion])
    def search(q: Annotated[str, Query(min_length=1, max_length=MAX_TEXT)],
               limit: Annotated[int, Query(ge=1, le=50)] = 10):
        """Autocomplete: titles that start with ``q``, then fuzzy matches."""
        current = current_front()
        return current if isinstance(current, JSONResponse) else current.search(q, limit)

    @app.post("/feedback", response_model=FeedbackResponse,
              responses={404: {"description": "unknown track_id"}, 429: {"description": "too many requests"},
                         503: {"description": "not recorded, retry"}})
    async def feedback(fb: FeedbackRequest, request: Request):
        """A listener liked, disliked or played (the preview of) a recommended song. Answers once
        the event is in the event log; a dislike with a ``user_id`` also keeps that song out of
        the user's recommendations for the session."""
        if not allowed(FEEDBACK_RATE, "feedback", request):
            return JSONResponse(status_code=429, headers={"Retry-After": "1"},
                                content={"detail": f"too many feedback requests (limit {FEEDBACK_RATE})"})
        current = current_front()
        if isinstance(current, JSONResponse):
            return current
        if current.track_index(fb.track_id) is None:
            return _error(404, f"unknown track_id: {fb.track_id!r}")
        events = backend.events()
        if events is None:
            return _error(503, "feedback is not recorded by this server (no event log configured)")
        bucket = request_bucket(fb.request_id)
        try:
            await events.append({"type": "feedback", "request_id": fb.request_id, "user_id": fb.user_id,
                                         "track_id": fb.track_id, "signal": fb.signal, "weights": bucket,
                                         "model_version": current.version})
        except OSError as exc:
            return JSONResponse(status_code=503, headers={"Retry-After": "1"},
                                content={"detail": f"feedback not recorded ({exc}); retry"})
        backend.counts.inc("segue_feedback", {"signal": fb.signal, "weights": bucket})
        if fb.signal == "dislike" and fb.user_id:
            await backend.dislike(fb.user_id, fb.track_id)
        return FeedbackResponse(recorded=True, request_id=fb.request_id, track_id=fb.track_id, signal=fb.signal)

    def admin(request: Request, authorization: str | None = Header(default=None),
              x_admin_token: str | None = Header(default=None)) -> None:
        """Admin routes need ``Authorization: Bearer <admin token>`` (or ``X-Admin-Token``);
        each client address gets at most ``ADMIN_RATE`` tries."""
        if not allowed(ADMIN_RATE, "admin", request):
            raise HTTPException(429, f"too many admin requests (limit {ADMIN_RATE})", headers={"Retry-After": "1"})
        given = x_admin_token or (authorization[7:] if authorization and authorization.startswith("Bearer ")
                                  else None)
        expected = admin_token()
        if not given:
            raise HTTPException(401, "admin token required")
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(403, "wrong admin token")

    @app.post("/adjust_weights", dependencies=[Depends(admin)])
    async def adjust_weights(update: WeightsUpdate):
        """New default weights for every replica (admin). Answers once the replicas applied them
        (or after 2 s), saying how many of how many did."""
        try:
            return await backend.set_weights(update.w1, update.w2)
        except WeightsUnavailable as exc:
            return JSONResponse(status_code=503, headers={"Retry-After": "1"}, content={"detail": str(exc)})

    @app.get("/admin/weights", dependencies=[Depends(admin)])
    async def weights_report():
        """The default weights and the generation each replica applied (admin)."""
        return await backend.weights_report()

    @app.get("/healthz")
    def healthz():
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """Ready when every part of the graph has a verified bundle loaded; says which, and
        any bundle refused since."""
        status = await backend.readiness()
        return JSONResponse(status_code=200 if status.get("ready") else 503, content=status)

    @app.get("/version")
    def version():
        """Bundle and code versions (``code_revision``: the deployed code zip's commit), and the default weights."""
        current = current_front()
        if isinstance(current, JSONResponse):
            return current
        w1, w2 = backend.weights()
        return {"model_version": current.version, "code_version": current.bundle.manifest.get("code_version"),
                "code_revision": code_revision(), "weights": {"w1": w1, "w2": w2}}

    app.add_middleware(RequestMetrics, counts=backend.counts,
                       routes=frozenset(r.path for r in app.routes if hasattr(r, "path")))
    return app
