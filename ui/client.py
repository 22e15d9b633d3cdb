"""The UI's client of the Segue HTTP API: every call answers an :class:`Answer` whose message is
the sentence to show when the call went wrong (never a traceback)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass
class Answer:
    """What the UI shows for one API call: a message (empty when all went well) and the body."""

    status: int
    body: dict | list | None
    message: str = ""


class Api:
    """A small client of the Segue HTTP API with errors turned into sentences."""

    def __init__(self, base_url: str, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(base_url=self.base_url, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs) -> Answer:
        try:
            r = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            return Answer(
                0,
                None,
                f"The recommendation service at {self.base_url} is not reachable "
                f"({type(exc).__name__}). Is it running?",
            )
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code == 503:
            return Answer(503, body, "The service is starting or switching models; try again in a few seconds.")
        if r.status_code >= 500:
            return Answer(r.status_code, body, f"The service failed (HTTP {r.status_code}); try again later.")
        if r.status_code == 422:
            detail = body.get("detail") if isinstance(body, dict) else None
            return Answer(422, body, f"Please check the input: {detail or 'invalid request'}.")
        return Answer(r.status_code, body)

    def search(self, query: str, limit: int = 10) -> Answer:
        """``GET /songs/search``: the songs whose title (or title and artist) start like ``query``."""
        return self._call("GET", "/songs/search", params={"q": query, "limit": limit})

    def recommend(self, body: dict) -> Answer:
        """``POST /recommend`` with ``body`` as the request."""
        return self._call("POST", "/recommend", json=body)

    def segue(self, body: dict) -> Answer:
        """``POST /segue`` with ``body`` as the request: a path from one song to another."""
        return self._call("POST", "/segue", json=body)

    def feedback(self, request_id: str, track_id: str, signal: str, user_id: str | None) -> Answer:
        """``POST /feedback``: one listener's reaction to one shown song."""
        body = {"request_id": request_id, "track_id": track_id, "signal": signal}
        if user_id:
            body["user_id"] = user_id
        answer = self._call("POST", "/feedback", json=body)
        if answer.status == 429:
            answer.message = "Too many ratings at once; wait a second."
        elif answer.status == 503 and isinstance(answer.body, dict) and answer.body.get("detail"):
            answer.message = f"Your rating was not recorded: {answer.body['detail']}."
        return answer
