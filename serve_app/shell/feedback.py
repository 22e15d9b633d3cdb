"""End-user feedback: request ids that carry their weight setting, and the counters' weight tags.

A ``/recommend`` response's ``request_id`` is ``<32 hex>.w<w1 %>-<w2 %>``: the weights
the listener asked for (the defaults filled in) travel with it, so feedback sent to any
ingress replica is counted under the setting that produced the list, without shared
state. Click-through per setting is then likes / impressions by the ``weights`` tag.
"""

from __future__ import annotations

import re
import uuid

_REQUEST_ID = re.compile(r"^[0-9a-f]{32}\.w(\d{1,3})-(\d{1,3})$")


def new_request_id(w1: float, w2: float) -> str:
    return f"{uuid.uuid4().hex}.w{round(w1 * 100)}-{round(w2 * 100)}"


def weights_bucket(w1: float, w2: float) -> str:
    """The counter tag of a weight setting, to one decimal: ``"0.3/0.7"``."""
    return f"{w1:.1f}/{w2:.1f}"


def request_bucket(request_id: str) -> str:
    """The weight setting a request id was issued under, or ``"unknown"``."""
    m = _REQUEST_ID.match(request_id)
    if not m or int(m[1]) > 100 or int(m[2]) > 100:
        return "unknown"
    return weights_bucket(int(m[1]) / 100, int(m[2]) / 100)
