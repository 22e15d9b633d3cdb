"""The HTTP API as a FastAPI app over a :class:`serve_app.service.Service` (DESIGN §5).

Framework only: validation comes from ``serve_app.api``, answers from the service. The
Serve ingress mounts this app; tests and a plain uvicorn process can run it directly.
Input never produces a 5xx: bad bodies and parameters are 422 with a message, unknown
songs 404 with suggestions, admin calls without a valid token 401/403.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, model_validator

from serve_app.api import MAX_TEXT, RecommendRequest, RecommendResponse, Suggestion, UnknownSongBody
from serve_app.service import Service, UnknownSong


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


@dataclass
class Backend:
    """What the app calls: the current service (None while loading) and how weights change."""

    service: Callable[[], Service | None]
    set_weights: Callable[[float, float], None]
    not_ready_reason: Callable[[], str] = lambda: "bundle not loaded yet"


def _error(status: int, detail: str, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


def _invalid(errors: list[dict], skip: int) -> JSONResponse:
    """422 naming each problem by its field (``skip`` drops a location prefix such as ``body``)."""
    problems = [f"{'.'.join(str(p) for p in e['loc'][skip:]) or 'request'}: {e['msg']}" for e in errors]
    return _error(422, "; ".join(problems) or "invalid request")


def create_app(backend: Backend) -> FastAPI:
    """The FastAPI app; every route asks ``backend`` for the service of the moment."""
    app = FastAPI(title="Segue", summary="Hybrid song recommender",
                  description="Top-K songs for a song, a session, a user or a new song, each with its reason.")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(exc.errors(), skip=1)

    def ready_service() -> Service | JSONResponse:
        svc = backend.service()
        return svc if svc is not None else _error(503, backend.not_ready_reason())

    def answer(req: RecommendRequest, request: Request):
        svc = ready_service()
        if isinstance(svc, JSONResponse):
            return svc
        try:
            return svc.recommend(req, request.headers.get("x-request-id"))
        except UnknownSong as exc:
            body = UnknownSongBody(detail=str(exc), suggestions=exc.suggestions)
            return JSONResponse(status_code=404, content=body.model_dump())

    @app.post("/recommend", response_model=RecommendResponse,
              responses={404: {"model": UnknownSongBody}, 422: {"description": "invalid request"}})
    def recommend(req: RecommendRequest, request: Request):
        """Top-K songs for ``{"song", "artist", "k"}`` (the minimal form) or any query kind."""
        return answer(req, request)

    @app.get("/recommend", response_model=RecommendResponse, responses={404: {"model": UnknownSongBody}})
    def recommend_get(request: Request, song: str | None = None, artist: str | None = None, k: int = 10,
                      w1: float | None = None, w2: float | None = None, diversity: float = 0.0,
                      user_id: str | None = None):
        """The same as POST, for links and curl: ``/recommend?song=X&artist=Y&k=10``."""
        try:
            req = RecommendRequest(song=song, artist=artist, k=k, w1=w1, w2=w2, diversity=diversity, user_id=user_id)
        except ValidationError as exc:
            return _invalid(exc.errors(), skip=0)
        return answer(req, request)

    @app.get("/songs/search", response_model=list[Suggestion])
    def search(q: Annotated[str, Query(min_length=1, max_length=MAX_TEXT)],
               limit: Annotated[int, Query(ge=1, le=50)] = 10):
        """Autocomplete: titles that start with ``q``, then fuzzy matches."""
        svc = ready_service()
        return svc if isinstance(svc, JSONResponse) else svc.search(q, limit)

    @app.post("/adjust_weights")
    def adjust_weights(update: WeightsUpdate, authorization: str | None = Header(default=None),
                       x_admin_token: str | None = Header(default=None)):
        """New default weights; needs ``Authorization: Bearer <admin token>`` (or ``X-Admin-Token``)."""
        given = x_admin_token or (authorization[7:] if authorization and authorization.startswith("Bearer ")
                                  else None)
        expected = admin_token()
        if not given:
            return _error(401, "admin token required")
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(403, "wrong admin token")
        backend.set_weights(update.w1, update.w2)
        return {"w1": update.w1, "w2": update.w2}

    @app.get("/healthz")
    def healthz():
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        """Ready when a verified bundle is loaded."""
        svc = ready_service()
        return svc if isinstance(svc, JSONResponse) else {"status": "ready", "model_version": svc.version}

    @app.get("/version")
    def version():
        """Bundle and code versions, and the default weights in force."""
        svc = ready_service()
        if isinstance(svc, JSONResponse):
            return svc
        cfg = svc.rec.config
        return {"model_version": svc.version, "code_version": svc.bundle.manifest.get("code_version"),
                "weights": {"w1": cfg.w1, "w2": cfg.w2}}

    return app
