"""The HTTP API as a FastAPI app over a :class:`~serve_app.shell.backend.Backend` (docs/SERVING.md, "The API").

Framework only: validation comes from ``serve_app.shell.api``, answers from the backend. Routes
come in routers by concern: recommendations and search, feedback, operations here; the admin
routes in ``serve_app.shell.admin``. The Serve ingress mounts this app; tests and a plain uvicorn
process can run it directly. Input never produces a 5xx: bad bodies and parameters are 422 with a
message, unknown songs 404 with suggestions, admin calls without a valid token 401/403.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from serve_app import code_revision
from serve_app.core.filters import Unmet
from serve_app.core.hybrid import Query as RecQuery
from serve_app.core.hybrid import Result
from serve_app.shell.admin import admin_router
from serve_app.shell.api import (
    MAX_TEXT,
    FeedbackRequest,
    FeedbackResponse,
    RecommendRequest,
    RecommendResponse,
    SegueRequest,
    SegueResponse,
    Suggestion,
    UnknownSongBody,
)
from serve_app.shell.backend import Backend
from serve_app.shell.cache import ResultCache
from serve_app.shell.feedback import new_request_id, request_bucket, weights_bucket
from serve_app.shell.metrics import RequestMetrics
from serve_app.shell.ratelimit import FEEDBACK_RATE, ClientLimits
from serve_app.shell.reload import VersionGone
from serve_app.shell.service import Asked, Front, Overdue, SameSong, UnknownSong

MAX_BODY_BYTES = 64 * 1024  # larger request bodies are refused with 413


def _error(status: int, detail: str, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


def _invalid(errors: Sequence[Mapping[str, Any]], skip: int) -> JSONResponse:
    """422 naming each problem by its field (``skip`` drops a location prefix such as ``body``)."""
    problems = [
        f"{'.'.join(str(p) for p in e['loc'][skip:]) or 'request'}: {e['msg'].removeprefix('Value error, ')}"
        for e in errors
    ]
    return _error(422, "; ".join(problems) or "invalid request")


def current_front(backend: Backend) -> Front | JSONResponse:
    """The newest bundle's front, or the 503 to answer while none is loaded."""
    fronts = backend.fronts()
    return fronts[0] if fronts else _error(503, "bundle not loaded yet")


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


def recommend_router(backend: Backend, cache: ResultCache | None) -> APIRouter:
    """``/recommend`` (POST and GET), ``/segue`` and ``/songs/search``. Results are cached by (query, bundle
    version) when a ``cache`` is given: the query holds the effective weights, so neither a weight
    change nor a bundle switch can serve a stale one."""
    router = APIRouter()

    async def run(query: RecQuery, version: str) -> Result:
        if cache is None:
            return await backend.run(query, version)
        # an answer without a part of the graph is served, not kept
        return await cache.get((query, version), lambda: backend.run(query, version), keep=lambda r: not r.degraded)

    async def resolve(ask: Callable[[Front], Asked], fallback: bool):
        """``(front, asked, result)`` for a request, from the newest bundle that still serves
        (an older one answers while the graph switches), or the error response to give: 404 for
        an unknown song, 422 for filters no song meets, 503 while no bundle serves. ``fallback``:
        an overdue answer becomes the most played songs (else a 503)."""
        current = current_front(backend)
        if isinstance(current, JSONResponse):
            return current
        for front in backend.fronts():  # newest first
            try:
                asked = ask(front)
                try:
                    result = await run(asked.query, front.version)
                except Overdue as exc:  # the graph is stuck or swamped: something now beats a 503
                    if not fallback:
                        return JSONResponse(status_code=503, headers={"Retry-After": "1"}, content={"detail": str(exc)})
                    result = front.without_graph(asked.query, str(exc))
            except UnknownSong as exc:
                backend.counts.inc("segue_unknown_songs", {})
                body = UnknownSongBody(detail=str(exc), field=exc.field, suggestions=exc.suggestions)
                return JSONResponse(status_code=404, content=body.model_dump())
            except (Unmet, SameSong) as exc:
                return _error(422, str(exc))
            except VersionGone:
                continue
            if result.weights.fallback:
                backend.counts.inc("segue_fallbacks", {"fallback": result.weights.fallback})
            return front, asked, result
        return JSONResponse(
            status_code=503, headers={"Retry-After": "1"}, content={"detail": "switching bundles, retry in a second"}
        )

    async def answer(req: RecommendRequest):
        weights = backend.default_weights()
        disliked = await backend.disliked(req.user_id) if req.user_id else frozenset()
        found = await resolve(lambda front: front.ask(req, weights, disliked), fallback=True)
        if isinstance(found, JSONResponse):
            return found
        front, asked, result = found
        q = asked.query
        w1, w2 = (q.w1, q.w2) if q.w1 is not None and q.w2 is not None else weights  # asked fills them in
        response = front.render(result, asked, new_request_id(w1, w2))
        impression(response, req.user_id, weights_bucket(w1, w2))
        return response

    def impression(response: RecommendResponse, user_id: str | None, bucket: str) -> None:
        """Log and count the songs a response showed (best effort: the response never waits)."""
        shown = [r.track_id for r in response.recommendations]
        if not shown:
            return
        backend.counts.inc("segue_impressions", {"weights": bucket, "kind": response.query.kind}, len(shown))
        events = backend.event_log()
        if events is not None:
            events.record(
                {
                    "type": "impression",
                    "request_id": response.request_id,
                    "user_id": user_id,
                    "kind": response.query.kind,
                    "weights": bucket,
                    "track_ids": shown,
                    "model_version": response.model_version,
                }
            )

    @router.post(
        "/recommend",
        response_model=RecommendResponse,
        responses={404: {"model": UnknownSongBody}, 422: {"description": "invalid request"}},
    )
    async def recommend(req: RecommendRequest):
        """Top-K songs for ``{"song", "artist", "k"}`` (the minimal form) or any query kind."""
        return await answer(req)

    @router.get("/recommend", response_model=RecommendResponse, responses={404: {"model": UnknownSongBody}})
    async def recommend_get(
        song: str | None = None,
        artist: str | None = None,
        k: int = 10,
        w1: float | None = None,
        w2: float | None = None,
        diversity: float = 0.0,
        user_id: str | None = None,
    ):
        """The same as POST, for links and curl: ``/recommend?song=X&artist=Y&k=10``."""
        try:
            req = RecommendRequest(song=song, artist=artist, k=k, w1=w1, w2=w2, diversity=diversity, user_id=user_id)
        except ValidationError as exc:
            return _invalid(exc.errors(), skip=0)
        return await answer(req)

    @router.post(
        "/segue",
        response_model=SegueResponse,
        responses={404: {"model": UnknownSongBody}, 422: {"description": "invalid request"}},
    )
    async def segue(req: SegueRequest):
        """A playlist of ``length`` songs from ``from`` to ``to``, each close to the one before it
        and closer to ``to``; without ``to``, a continuation of ``from`` ordered for flow."""
        weights = backend.default_weights()
        found = await resolve(lambda front: front.ask_segue(req, weights), fallback=False)
        if isinstance(found, JSONResponse):
            return found
        front, asked, result = found
        q = asked.query
        return front.render_segue(result, asked, new_request_id(q.w1 or 0.0, q.w2 or 0.0))

    @router.get("/songs/search", response_model=list[Suggestion])
    def search(
        q: Annotated[str, Query(min_length=1, max_length=MAX_TEXT)], limit: Annotated[int, Query(ge=1, le=50)] = 10
    ):
        """Autocomplete: titles that start with ``q``, then fuzzy matches."""
        current = current_front(backend)
        return current if isinstance(current, JSONResponse) else current.search(q, limit)

    return router


def feedback_router(backend: Backend, limits: ClientLimits) -> APIRouter:
    """``/feedback``: likes, dislikes and plays, into the event log."""
    router = APIRouter()

    @router.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses={
            404: {"description": "unknown track_id"},
            429: {"description": "too many requests"},
            503: {"description": "not recorded, retry"},
        },
    )
    async def feedback(fb: FeedbackRequest, request: Request):
        """A listener liked, disliked or played (the preview of) a recommended song. Answers once
        the event is in the event log; a dislike with a ``user_id`` also keeps that song out of
        the user's recommendations for the session."""
        if not limits.allowed(FEEDBACK_RATE, "feedback", request):
            return JSONResponse(
                status_code=429,
                headers={"Retry-After": "1"},
                content={"detail": f"too many feedback requests (limit {FEEDBACK_RATE})"},
            )
        current = current_front(backend)
        if isinstance(current, JSONResponse):
            return current
        if current.track_index(fb.track_id) is None:
            return _error(404, f"unknown track_id: {fb.track_id!r}")
        events = backend.event_log()
        if events is None:
            return _error(503, "feedback is not recorded by this server (no event log configured)")
        bucket = request_bucket(fb.request_id)
        try:
            await events.append(
                {
                    "type": "feedback",
                    "request_id": fb.request_id,
                    "user_id": fb.user_id,
                    "track_id": fb.track_id,
                    "signal": fb.signal,
                    "weights": bucket,
                    "model_version": current.version,
                }
            )
        except OSError as exc:
            return JSONResponse(
                status_code=503,
                headers={"Retry-After": "1"},
                content={"detail": f"feedback not recorded ({exc}); retry"},
            )
        backend.counts.inc("segue_feedback", {"signal": fb.signal, "weights": bucket})
        if fb.signal == "dislike" and fb.user_id:
            await backend.dislike(fb.user_id, fb.track_id)
        return FeedbackResponse(recorded=True, request_id=fb.request_id, track_id=fb.track_id, signal=fb.signal)

    return router


def ops_router(backend: Backend) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/version``: for load balancers, Serve and operators."""
    router = APIRouter()

    @router.get("/healthz")
    def healthz():
        """Alive."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz():
        """Ready when every part of the graph has a verified bundle loaded; says which, and
        any bundle refused since."""
        status = await backend.readiness()
        return JSONResponse(status_code=200 if status.get("ready") else 503, content=status)

    @router.get("/version")
    def version():
        """Bundle and code versions (``code_revision``: the deployed code zip's commit), and the default weights."""
        current = current_front(backend)
        if isinstance(current, JSONResponse):
            return current
        w1, w2 = backend.default_weights()
        return {
            "model_version": current.version,
            "code_version": current.bundle.manifest.get("code_version"),
            "code_revision": code_revision(),
            "weights": {"w1": w1, "w2": w2},
        }

    return router


def create_app(backend: Backend, cache: ResultCache | None = None) -> FastAPI:
    """The FastAPI app: every route asks ``backend`` for the bundle of the moment."""
    app = FastAPI(
        title="Segue",
        summary="Hybrid song recommender",
        description="Top-K songs for a song, a session, a user or a new song, each with its reason.",
        max_body_size=MAX_BODY_BYTES,
    )
    app.add_middleware(JsonBodies, paths=frozenset({"/recommend", "/segue", "/feedback"}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(exc.errors(), skip=1)

    limits = ClientLimits()
    routers = [
        recommend_router(backend, cache),
        feedback_router(backend, limits),
        admin_router(backend, limits),
        ops_router(backend),
    ]
    for router in routers:
        app.include_router(router)
    paths = {getattr(r, "path", None) for r in [*app.routes, *(r for router in routers for r in router.routes)]}
    app.add_middleware(RequestMetrics, counts=backend.counts, routes=frozenset(p for p in paths if p))
    return app
