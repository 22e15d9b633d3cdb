"""The admin surface: the token that guards it and its routes (``POST /adjust_weights``,
``GET /admin/weights``)."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from serve_app.shell.backend import Backend
from serve_app.shell.ratelimit import ADMIN_RATE, ClientLimits
from serve_app.shell.weights import WeightsUnavailable

MIN_TOKEN_CHARS = 16


class WeightsUpdate(BaseModel):
    """New default weights for every replica: each in [0, 1], not both 0."""

    w1: Annotated[float, Field(ge=0.0, le=1.0)]
    w2: Annotated[float, Field(ge=0.0, le=1.0)]

    @model_validator(mode="after")
    def _not_both_zero(self) -> WeightsUpdate:
        if self.w1 == 0 and self.w2 == 0:
            raise ValueError("w1 and w2 cannot both be 0")
        return self


def admin_token() -> str | None:
    """The admin token from ``SEGUE_ADMIN_TOKEN`` or the file named by ``SEGUE_ADMIN_TOKEN_FILE``."""
    token = os.environ.get("SEGUE_ADMIN_TOKEN")
    if not token and os.environ.get("SEGUE_ADMIN_TOKEN_FILE"):
        token = Path(os.environ["SEGUE_ADMIN_TOKEN_FILE"]).read_text().strip()
    return token or None


def require_admin_token() -> None:
    """Refuse to serve with no admin token or a short (guessable) one, unless
    ``SEGUE_DEMO=1`` says this is a demo (then the admin routes answer 403 without a token)."""
    if os.environ.get("SEGUE_DEMO") == "1":
        return
    token = admin_token()
    if token is None:
        raise RuntimeError(
            "no admin token: set SEGUE_ADMIN_TOKEN or SEGUE_ADMIN_TOKEN_FILE "
            "(or SEGUE_DEMO=1 to run a demo without the admin routes)"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise RuntimeError(
            f"the admin token is too weak: use at least {MIN_TOKEN_CHARS} random characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def admin_router(backend: Backend, limits: ClientLimits) -> APIRouter:
    """The admin routes; each needs ``Authorization: Bearer <admin token>`` (or ``X-Admin-Token``)
    and each client address gets at most ``ADMIN_RATE`` tries."""

    def admin(
        request: Request,
        authorization: str | None = Header(default=None),
        x_admin_token: str | None = Header(default=None),
    ) -> None:
        if not limits.allowed(ADMIN_RATE, "admin", request):
            raise HTTPException(429, f"too many admin requests (limit {ADMIN_RATE})", headers={"Retry-After": "1"})
        given = x_admin_token or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
        expected = admin_token()
        if not given:
            raise HTTPException(401, "admin token required")
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(403, "wrong admin token")

    router = APIRouter(dependencies=[Depends(admin)])

    @router.post("/adjust_weights")
    async def adjust_weights(update: WeightsUpdate):
        """New default weights for every replica (admin). Answers once the replicas applied them
        (or after 2 s), saying how many of how many did."""
        try:
            return await backend.set_weights(update.w1, update.w2)
        except WeightsUnavailable as exc:
            return JSONResponse(status_code=503, headers={"Retry-After": "1"}, content={"detail": str(exc)})

    @router.get("/admin/weights")
    async def weights_report():
        """The default weights and the generation each replica applied (admin)."""
        return await backend.weights_report()

    return router
