"""Ray's Prometheus metrics as the benchmarks read them: a scrape of a node's metrics agent,
histograms summed over replicas and subtracted between readings, and where a graph
request spends its time (per hop)."""

from __future__ import annotations

import math
import re
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from loadtest.load import number
from loadtest.wait import wait_for

APP_NAME = "segue"  # serve_config.yaml's application

_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    """One line of a Prometheus text exposition: metric name, labels, value."""

    name: str
    labels: dict[str, str]
    value: float


def parse_prometheus(text: str) -> list[Sample]:
    """The samples of a Prometheus text page (comments and unparsable lines skipped)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or line.startswith("#"):
            continue
        value = number(m[3])
        if value is not None:
            out.append(Sample(m[1], dict(_LABEL.findall(m[2] or "")), value))
    return out


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram summed over the series it was read from: cumulative counts per
    upper bound (``le``, +Inf included), the sum and the count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def minus(self, before: Histogram) -> Histogram:
        """The observations made between ``before`` and this reading."""
        prior = dict(before.buckets)
        return Histogram(
            tuple((le, n - prior.get(le, 0.0)) for le, n in self.buckets),
            self.sum - before.sum,
            self.count - before.count,
        )

    def quantile(self, q: float) -> float | None:
        """Prometheus' ``histogram_quantile``: linear within the bucket holding rank ``q x count``
        (the highest finite bound when that is the +Inf bucket)."""
        if self.count <= 0:
            return None
        rank, lower, below = q * self.count, 0.0, 0.0
        for le, n in self.buckets:
            if n >= rank:
                if math.isinf(le):
                    return lower
                return lower + (le - lower) * ((rank - below) / (n - below) if n > below else 1.0)
            lower, below = le, n
        return lower

    def summary(self, per: float | None = None) -> dict[str, float | None]:
        """Count, mean, p50, p99 (ms) and, given ``per`` (the HTTP requests), calls and ms per request."""
        out: dict[str, float | None] = {
            "count": self.count,
            "mean_ms": self.sum / self.count if self.count > 0 else None,
            "p50_ms": self.quantile(0.5),
            "p99_ms": self.quantile(0.99),
        }
        if per:
            out.update(calls_per_request=self.count / per, ms_per_request=self.sum / per)
        return out


def histogram(samples: Sequence[Sample], name: str, labels: dict[str, str]) -> Histogram:
    """Histogram ``name`` summed over every series whose labels include ``labels`` (replicas, workers)."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for s in samples:
        if not all(s.labels.get(k) == v for k, v in labels.items()):
            continue
        if s.name == f"{name}_bucket" and "le" in s.labels:
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
        elif s.name == f"{name}_sum":
            total += s.value
        elif s.name == f"{name}_count":
            count += s.value
    return Histogram(tuple(sorted(buckets.items())), total, count)


# Where a graph request spends its time, read from Ray's metrics (names as the endpoint shows
# them): the HTTP proxy's whole request (HAProxy's or Serve's Python proxy's), then each
# deployment's own processing; a deployment's /readyz calls carry that route and stay out.
SEGUE_REQUEST = ("ray_segue_request_ms", {"route": "/recommend"})  # the ingress app's own timing
GRAPH_HOPS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("proxy", "ray_serve_http_request_latency_ms", {"application": APP_NAME, "method": "POST"}),
    (
        "Ingress",
        "ray_serve_deployment_processing_latency_ms",
        {"application": APP_NAME, "deployment": "Ingress", "route": "/recommend"},
    ),
    ("Ingress app (segue_request_ms)", *SEGUE_REQUEST),
    *(
        (d, "ray_serve_deployment_processing_latency_ms", {"application": APP_NAME, "deployment": d, "route": ""})
        for d in ("Combiner", "Content", "Collab")
    ),
)


def hop_figures(
    before: Sequence[Sample], after: Sequence[Sample], hops: Sequence[tuple[str, str, dict[str, str]]] = GRAPH_HOPS
) -> dict[str, dict[str, float | None]]:
    """Per hop, what happened between two readings: calls, mean, p50, p99 and, per HTTP request
    (the first hop's count), calls and ms: a cache hit never reaches the combiner."""
    deltas = {hop: histogram(after, name, labels).minus(histogram(before, name, labels)) for hop, name, labels in hops}
    per = next(iter(deltas.values())).count if deltas else None
    return {hop: h.summary(per) for hop, h in deltas.items()}


def server_latency(before: Sequence[Sample] | None, after: Sequence[Sample] | None) -> dict[str, float | None] | None:
    """The ingress app's own latency of ``/recommend`` between two readings (None without metrics)."""
    if before is None or after is None:
        return None
    return histogram(after, *SEGUE_REQUEST).minus(histogram(before, *SEGUE_REQUEST)).summary()


def scrape(url: str | None) -> list[Sample] | None:
    """A reading of Ray's Prometheus endpoint (None without one, or when it does not answer)."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=10.0) as resp:
            return parse_prometheus(resp.read().decode(errors="replace"))
    except OSError:
        return None


def export_interval_s(environ: dict[str, str]) -> float:
    """How often Ray's workers export their metrics to the node's agent (``metrics_report_interval_ms``,
    10 s unless set; Ray never goes below 1 s): a reading lags the requests by up to that."""
    return max(1.0, float(environ.get("RAY_metrics_report_interval_ms", 10_000)) / 1000)


def settled(
    url: str | None, before: list[Sample] | None, answered: int, timeout: float
) -> tuple[list[Sample] | None, float]:
    """A reading once the ingress replicas have exported the ``answered`` requests of a phase
    (``segue_request_ms`` counts them), or the last one after ``timeout``; and the seconds waited."""
    t0 = time.monotonic()
    if before is None:
        return None, 0.0
    last: dict[str, list[Sample] | None] = {}

    def exported() -> bool:
        last["after"] = after = scrape(url)
        return (
            after is not None
            and histogram(after, *SEGUE_REQUEST).count - histogram(before, *SEGUE_REQUEST).count >= answered
        )

    try:
        wait_for(exported, timeout, "the phase's requests in Ray's metrics")
    except TimeoutError:
        last["after"] = scrape(url)
    return last["after"], round(time.monotonic() - t0, 1)
