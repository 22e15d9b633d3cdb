"""S3 inputs and outputs against a loopback S3 endpoint (moto), with Parquet inputs."""

from __future__ import annotations

import pandas as pd
import pytest

from jobs import preprocess
from serve_app import bundle, storage

BUCKET = "segue-test"


@pytest.fixture(scope="module")
def s3_endpoint(s3_server):
    storage.s3_client().create_bucket(Bucket=BUCKET)
    return s3_server


def test_parquet_inputs_on_s3_to_s3_bundle(s3_endpoint, ray_session, demo_data, demo_bundle, tmp_path):
    """Parquet from S3 gives the same bundle content as the CSV run; the S3 bundle is encrypted and loads."""
    client = storage.s3_client()
    cat = pd.read_csv(demo_data / "Music Info.csv", dtype=str, keep_default_na=False)
    plays = pd.read_csv(demo_data / "User Listening History.csv", dtype={"user_id": str})
    cat.to_parquet(tmp_path / "catalog.parquet", index=False)
    half = len(plays) // 2  # a directory of two Parquet files
    plays.iloc[:half].to_parquet(tmp_path / "p0.parquet", index=False)
    plays.iloc[half:].to_parquet(tmp_path / "p1.parquet", index=False)
    client.upload_file(str(tmp_path / "catalog.parquet"), BUCKET, "raw/catalog.parquet")
    for name in ("p0.parquet", "p1.parquet"):
        client.upload_file(str(tmp_path / name), BUCKET, f"raw/plays/{name}")

    out = f"s3://{BUCKET}/bundles/v1"
    manifest = preprocess.run(f"s3://{BUCKET}/raw/catalog.parquet", f"s3://{BUCKET}/raw/plays", out)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="bundles/v1/")["Contents"]]
    assert sorted(k.removeprefix("bundles/v1/") for k in keys) == sorted([*manifest["files"], "manifest.json"])
    for key in keys:
        assert client.head_object(Bucket=BUCKET, Key=key)["ServerSideEncryption"] == "AES256"

    from_s3 = bundle.load(out, cache_dir=tmp_path / "cache")
    local = bundle.load(str(demo_bundle))
    assert from_s3.manifest["counts"]["interactions"] == local.manifest["counts"]["interactions"]
    assert (from_s3.user_items != local.user_items).nnz == 0
    assert (from_s3.user_hash == local.user_hash).all()
    assert from_s3.catalog["track_id"].tolist() == local.catalog["track_id"].tolist()


def test_csv_input_from_s3(s3_endpoint, ray_session, demo_data, demo_bundle, tmp_path):
    client = storage.s3_client()
    client.upload_file(str(demo_data / "Music Info.csv"), BUCKET, "csv/Music Info.csv")
    client.upload_file(str(demo_data / "User Listening History.csv"), BUCKET, "csv/User Listening History.csv")
    manifest = preprocess.run(f"s3://{BUCKET}/csv/Music Info.csv", f"s3://{BUCKET}/csv/User Listening History.csv",
                              str(tmp_path / "b"), chunk_bytes=256 << 10)
    assert manifest["files"] == bundle.verify(demo_bundle)["files"]


def test_missing_s3_bundle_is_a_clear_error(s3_endpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="no objects under"):
        bundle.load(f"s3://{BUCKET}/nothing/here", cache_dir=tmp_path)
