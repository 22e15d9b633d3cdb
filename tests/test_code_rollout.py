"""A code rollout the way the deploy workflow does it (.github/workflows/deploy.yml): serve_app
zipped per commit by the workflow's own function, uploaded to S3 (moto here) with SSE, named in
``runtime_env.py_modules``; `serve deploy` of the next zip replaces every replica onto the new
code, one by one, without a failed request."""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from loadtest.serve_cluster import ServeCluster, Traffic, wait_for

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "segue-code"
REVISIONS = ("rollout-1", "rollout-2")


def _deploy_script():
    """.github/scripts/serve_deploy.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("serve_deploy", ROOT / ".github" / "scripts" / "serve_deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_uri(revision: str) -> str:
    """Where the workflow uploads a commit's zip (cluster/serve_config.aws.yaml's py_modules)."""
    return f"s3://{BUCKET}/code/{revision}/serve_app.zip"


@pytest.fixture
def code_bucket(s3_server, tmp_path) -> None:
    """Both zips of the working tree's serve_app in a moto bucket, uploaded with SSE as the workflow does."""
    import boto3

    sd = _deploy_script()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for revision in REVISIONS:
        path = sd.code_zip(ROOT / "serve_app", revision, tmp_path / revision / "serve_app.zip")
        s3.upload_file(
            str(path), BUCKET, code_uri(revision).split("/", 3)[3], ExtraArgs={"ServerSideEncryption": "AES256"}
        )


def code_revisions(cluster: ServeCluster, reads: int = 20) -> Counter:
    """The code_revision /version reports, over ``reads`` reads (spread over the ingress replicas)."""
    return Counter(cluster.client.get("/version").json()["code_revision"] for _ in range(reads))


def test_serve_deploy_rolls_new_code_from_s3_without_a_failed_request(code_bucket, demo_bundle, tmp_path):
    # Ray puts the directory it starts in first on the replicas' path: start it outside the
    # checkout, as on the nodes, or the checkout's serve_app shadows the zip's
    cluster = ServeCluster(tmp_path / "weights.json", cwd=tmp_path, replicas=2)
    try:
        cluster.start()
        cluster.deploy(demo_bundle, revision="1", runtime_env={"py_modules": [code_uri("rollout-1")]})
        cluster.wait_ready()
        assert code_revisions(cluster) == {"rollout-1": 20}

        catalog = pd.read_parquet(demo_bundle / "catalog.parquet")
        bodies = [
            {"song": catalog["name"].iloc[i], "artist": catalog["artist"].iloc[i], "k": 10} for i in range(0, 300, 7)
        ]
        before = cluster.running()
        with Traffic(cluster, bodies) as traffic:
            time.sleep(2)
            started = time.monotonic()
            cluster.deploy(demo_bundle, revision="2", runtime_env={"py_modules": [code_uri("rollout-2")]})
            wait_for(lambda: cluster.replaced(before), 300, "every replica replaced and RUNNING")
            cluster.wait_ready()
            wait_for(lambda: code_revisions(cluster) == {"rollout-2": 20}, 60, "/version on rollout-2")
            seconds = time.monotonic() - started
            time.sleep(1)
        requests = sum(traffic.statuses.values())
        print(
            f"\ncode rollout rollout-1 -> rollout-2 under traffic: {requests} requests in {seconds:.1f} s, "
            f"statuses {dict(traffic.statuses)}, {len(traffic.errors)} transport errors; replicas "
            f"{ {d: len(r) for d, r in before.items()} } all replaced"
        )
        assert requests > 0 and not traffic.errors and set(traffic.statuses) == {200}, (
            traffic.statuses,
            traffic.errors[:3],
        )
    finally:
        cluster.stop()
