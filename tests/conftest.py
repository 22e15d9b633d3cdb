"""Shared fixtures: one Ray session for the whole run, the shared real data, demo data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadtest.moto_s3 import start_moto_s3

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEGUE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 (random port) for the whole session.

    The AWS variables are set before Ray starts so Ray workers inherit them too.
    """
    server, env = start_moto_s3("test")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """A local Ray started once for the session and shut down at the end (never `ray stop`)."""
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "music_info_sample.csv").is_file():
        pytest.skip(f"real data not present at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA


def generated_data(tmp_path_factory, name: str, plays: int, seed: int, songs: int = 1500) -> Path:
    """Deterministic demo data (``jobs.demo_data``) in a fresh temp dir."""
    from jobs import demo_data

    out = tmp_path_factory.mktemp(name)
    demo_data.generate(out, songs=songs, plays=plays, seed=seed)
    return out


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A small deterministic demo data set (1,500 songs / 60,000 plays)."""
    return generated_data(tmp_path_factory, "demo", plays=60_000, seed=3)


@pytest.fixture(scope="session")
def demo_bundle(demo_data, ray_session, tmp_path_factory) -> Path:
    from jobs import preprocess

    out = tmp_path_factory.mktemp("bundles") / "demo"
    preprocess.run(str(demo_data / "Music Info.csv"), str(demo_data / "User Listening History.csv"), str(out))
    return out


@pytest.fixture(scope="module")
def bundle(demo_bundle):
    """The demo bundle, loaded (per test module: a test may change what it holds)."""
    from serve_app.artifacts import bundle as bundle_io

    return bundle_io.load(str(demo_bundle))


@pytest.fixture(scope="module")
def rec(bundle):
    """The in-process recommender over the demo bundle."""
    from serve_app.core.hybrid import Recommender

    return Recommender.from_bundle(bundle)
