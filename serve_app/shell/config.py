"""Every setting of the application, in one place (docs/ARCHITECTURE.md, "One source for each setting").

* :class:`SegueConfig` is the ``user_config`` every deployment gets and, flattened, the
  arguments of ``serve run serve_app.app:build_app bundle=URI w1=.. w2=..``: one model, one set of
  defaults, used by the deployments, the standalone server and the harness.
* :data:`DEPLOYMENTS` holds each deployment's Ray Serve options (replicas, CPU, autoscaling,
  health checks). ``serve_app.app`` applies them; ``serve_config.yaml`` repeats them for
  operators, and ``tests/test_config.py`` fails when the two differ.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.core.hybrid import DEFAULT_W1, DEFAULT_W2

DEFAULT_EVENTS = "~/.segue/events"
DEFAULT_BUDGET_MS = 400  # a request's time budget (the seed asks for answers within 500 ms)


class DefaultWeights(BaseModel):
    """The deploy-time default weights (``POST /adjust_weights`` overrides them at run time)."""

    model_config = ConfigDict(extra="forbid")

    w1: float = Field(DEFAULT_W1, ge=0, le=1)
    w2: float = Field(DEFAULT_W2, ge=0, le=1)


class SegueConfig(BaseModel):
    """The application's settings: ``user_config`` of every deployment.

    ``bundle``: the bundle URI (a change hot-reloads it); ``weights``: the deploy-time default
    weights (``w1``/``w2`` at the top level are accepted too, as ``serve run`` gives them);
    ``weights_store``: where adjusted weights are saved (local path or ``s3://``; None keeps them
    in the application's actor only); ``cache_size``: results cached per ingress replica;
    ``warm_size``: the most-played songs answered into it after each load or weight change;
    ``events``: the impression and feedback log (local directory or ``s3://`` prefix; None
    refuses feedback); ``budget_ms``: each request's time budget (``serve_app.app`` splits it
    between the combiner's calls to each side and the ingress's patience with the combiner).
    """

    model_config = ConfigDict(extra="forbid")

    bundle: str
    weights: DefaultWeights = DefaultWeights()
    weights_store: str | None = None
    cache_size: int = Field(20_000, ge=0)
    warm_size: int = Field(10_000, ge=0)
    events: str | None = DEFAULT_EVENTS
    budget_ms: int = Field(DEFAULT_BUDGET_MS, ge=50, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _flat_weights(cls, data: Any) -> Any:
        """``w1=.. w2=..`` (``serve run`` arguments) as ``weights: {w1, w2}``."""
        if isinstance(data, dict) and ({"w1", "w2"} & data.keys()):
            data = dict(data)
            flat = {k: data.pop(k) for k in ("w1", "w2") if k in data}
            data["weights"] = {**dict(data.get("weights") or {}), **flat}
        return data


def user_config(args: dict[str, Any]) -> dict[str, Any] | None:
    """The ``user_config`` of ``serve run`` arguments; None without ``bundle`` (the deploy file
    gives it then: a change there reconfigures replicas in place, where a change of arguments
    would rebuild the application). Other arguments without ``bundle`` are an error, never
    silently dropped."""
    if "bundle" not in args:
        if args:
            raise ValueError(f"give bundle=URI with {sorted(args)}, or set them in serve_config.yaml's user_config")
        return None
    return SegueConfig.model_validate(args).model_dump()


# How each deployment runs locally (2 cores): as many replicas as keep each process at 0.4 of a
# core or less (serve_app/shell/scaling.py), up after 5 s of need, down after 60 s without; 0.125
# CPU each, so all 16 maxima fit 2 CPUs. A dead replica is noticed (and replaced) within 2 s.
AUTOSCALING: dict[str, Any] = {
    "min_replicas": 1,
    "max_replicas": 4,
    "target_ongoing_requests": 16,
    "look_back_period_s": 15,
    "upscale_delay_s": 5,
    "downscale_delay_s": 60,
    "policy": {"policy_function": "serve_app.shell.scaling:BusyPolicy", "policy_kwargs": {"target_busy": 0.4}},
}
COMMON: dict[str, Any] = {
    "max_ongoing_requests": 100,
    "ray_actor_options": {"num_cpus": 0.125},
    "health_check_period_s": 2,
}
DEPLOYMENTS: dict[str, dict[str, Any]] = {
    # two ingresses at least: HAProxy keeps answering while one is replaced (a kill, a rollout)
    "Ingress": {**COMMON, "autoscaling_config": {**AUTOSCALING, "min_replicas": 2}},
    "Combiner": {**COMMON, "autoscaling_config": AUTOSCALING},
    "Content": {**COMMON, "autoscaling_config": AUTOSCALING},
    "Collab": {**COMMON, "autoscaling_config": AUTOSCALING},
}
