"""One source for each setting: ``serve_config.yaml`` (what operators deploy) says what the code
says (``serve_app.shell.config``), and the one config model takes both of its forms."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serve_app.shell.config import DEPLOYMENTS, SegueConfig, user_config

ROOT = Path(__file__).resolve().parents[1]
PER_SITE = {"bundle", "weights_store", "events"}  # where the data lives: the deploy file's to say


def app_of(path: Path) -> dict:
    [app] = yaml.safe_load(path.read_text())["applications"]
    return app


def test_serve_config_deploys_the_code_s_deployment_options() -> None:
    app = app_of(ROOT / "serve_config.yaml")
    assert app["import_path"] == "serve_app.app:build_app" and "args" not in app
    deployed = {d["name"]: {k: v for k, v in d.items() if k not in ("name", "user_config")} for d in app["deployments"]}
    assert deployed == DEPLOYMENTS


@pytest.mark.parametrize("path", ["serve_config.yaml", "cluster/serve_config.aws.yaml"])
def test_every_deployment_gets_one_valid_user_config_with_the_model_s_defaults(path: str) -> None:
    configs = [d["user_config"] for d in app_of(ROOT / path)["deployments"]]
    assert all(c == configs[0] for c in configs)
    given = SegueConfig.model_validate(configs[0]).model_dump(exclude=PER_SITE)
    assert given == SegueConfig(bundle="any").model_dump(exclude=PER_SITE)


def test_the_aws_config_sets_the_same_options_as_the_local_one() -> None:
    """Values differ (more replicas on a cluster); no option is forgotten in either file."""
    aws = {d["name"]: d for d in app_of(ROOT / "cluster/serve_config.aws.yaml")["deployments"]}
    assert aws.keys() == DEPLOYMENTS.keys()
    for name, options in DEPLOYMENTS.items():
        assert set(aws[name]) - {"name", "user_config"} == set(options)
        assert set(aws[name]["autoscaling_config"]) >= set(options["autoscaling_config"])


def test_serve_run_arguments_are_the_same_model_flattened() -> None:
    cfg = user_config({"bundle": "artifacts/demo", "w1": 0.5, "w2": 0.5, "cache_size": 0})
    assert cfg == SegueConfig(bundle="artifacts/demo", weights={"w1": 0.5, "w2": 0.5}, cache_size=0).model_dump()
    assert user_config({}) is None  # the deploy file's user_config applies


@pytest.mark.parametrize("args", [{"w1": 0.5}, {"bundle": "b", "cache_sise": 10}, {"bundle": "b", "w1": 2}])
def test_settings_that_would_be_lost_or_wrong_are_refused(args: dict) -> None:
    with pytest.raises((ValueError, ValidationError)):
        user_config(args)
