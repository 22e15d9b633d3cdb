"""The autoscaling rule (serve_app/shell/scaling.py) and the shipped ranges in serve_config.yaml."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from serve_app.shell.scaling import BUSY, BusyPolicy, CpuMeter, replicas_for

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_meter_reads_the_share_of_a_core_used_since_the_last_reading() -> None:
    now, cpu = [0.0], [0.0]
    meter = CpuMeter(clock=lambda: now[0], cpu=lambda: cpu[0])
    now[0], cpu[0] = 2.0, 1.5
    assert meter.read() == pytest.approx(0.75)
    now[0], cpu[0] = 3.0, 1.6
    assert meter.read() == pytest.approx(0.1)
    assert meter.read() == 0.0  # no time passed


def test_replicas_for_spreads_the_work_at_the_target() -> None:
    assert replicas_for({"a": 0.9}, current=1, target_busy=0.5) == 2
    assert replicas_for({"a": 0.9, "b": 0.9}, current=2, target_busy=0.5) == 4
    assert replicas_for({"a": 0.2, "b": 0.1}, current=2, target_busy=0.5) == 1
    assert replicas_for({"a": 0.5}, current=1, target_busy=0.5) == 1  # at the target: stay
    # a replica that has not reported yet counts at the mean of the others
    assert replicas_for({"a": 0.8}, current=2, target_busy=0.5) == 4
    assert replicas_for({}, current=3, target_busy=0.5) == 3  # no figures: no change


def ctx(current: int, busy: dict, ongoing: float = 0.0, target_ongoing: float = 16.0) -> SimpleNamespace:
    return SimpleNamespace(
        current_num_replicas=current,
        target_num_replicas=current,
        aggregated_metrics={BUSY: busy} if busy is not None else None,
        total_num_requests=ongoing,
        config=SimpleNamespace(get_target_ongoing_requests=lambda: target_ongoing),
    )


def test_busy_policy_takes_the_larger_of_cpu_and_queue() -> None:
    policy = BusyPolicy(target_busy=0.5)
    assert policy(ctx(1, {"a": 0.95}))[0] == 2  # a busy process: more replicas
    assert policy(ctx(2, {"a": 0.05, "b": 0.05}))[0] == 1  # idle: fewer (Serve keeps min_replicas)
    assert policy(ctx(1, {"a": 0.05}, ongoing=40))[0] == 3  # requests piling up count too
    assert policy(ctx(2, None))[0] == 2  # no custom metric yet


def test_busy_policy_refuses_a_target_outside_a_core() -> None:
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            BusyPolicy(target_busy=bad)


def test_serve_config_ranges_fit_the_box_and_name_the_policy() -> None:
    cfg = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    deployments = cfg["applications"][0]["deployments"]
    assert {d["name"] for d in deployments} == {"Ingress", "Combiner", "Content", "Collab"}
    reserved = 0.0
    for d in deployments:
        scale = d["autoscaling_config"]
        assert 1 <= scale["min_replicas"] < scale["max_replicas"], d["name"]  # a real range
        module, name = scale["policy"]["policy_function"].split(":")
        policy = getattr(importlib.import_module(module), name)(**scale["policy"]["policy_kwargs"])
        assert isinstance(policy, BusyPolicy)
        reserved += scale["max_replicas"] * d["ray_actor_options"]["num_cpus"]
    by_name = {d["name"]: d["autoscaling_config"]["min_replicas"] for d in deployments}
    assert by_name["Ingress"] >= 2  # HAProxy keeps answering while one ingress replica is replaced
    assert reserved <= 2.0  # every deployment at its maximum still fits a 2-CPU Ray
