"""Serve's own floor on this machine: the benchmark's ``floor`` variant.

One FastAPI ingress deployment (2 replicas, 0.25 CPU each, ``max_ongoing_requests`` 100,
as Segue's) that answers ``POST /recommend`` with a fixed body of the size of a real
10-song answer, without a bundle or any scoring: what any Serve app pays per request
here (the proxy and one replica), measured beside Segue's variants.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve

app = FastAPI()
_SONG = {
    "song": "A Song Title",
    "artist": "An Artist",
    "track_id": "TRABCDEFGHIJKLMNOP",
    "score": 0.5,
    "cb_score": 0.4,
    "cf_score": 0.6,
    "preview_url": "https://p.scdn.co/mp3-preview/0123456789abcdef",
    "because": "listeners of Another Song also play this",
}
ANSWER = {
    "recommendations": [_SONG] * 10,
    "query": {"kind": "song", "seeds": [], "alternatives": []},
    "weights_used": {"w1": 0.3, "w2": 0.7, "reason": "fixed"},
    "model_version": "floor",
    "request_id": "floor",
}


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=100, num_replicas=2)
@serve.ingress(app)
class Floor:
    @app.post("/recommend")
    async def recommend(self, body: dict) -> dict:
        return ANSWER

    @app.get("/readyz")
    async def readyz(self) -> dict:
        return {"ready": True}


def build(args: dict) -> serve.Application:
    """``args`` (the bundle and cache settings the other variants take) are ignored."""
    return Floor.bind()
