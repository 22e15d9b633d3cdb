"""S3 against a loopback endpoint (moto): Parquet/CSV inputs, and the artifact store —
versioned publish behind a ``LATEST`` pointer, encryption checked on every write,
interrupted uploads, the download cache — and no credentials in the sources."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import boto3
import pandas as pd
import pytest

from jobs import preprocess
from serve_app.artifacts import bundle, storage

BUCKET = "segue-test"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3_endpoint(s3_server):
    storage.s3_client().create_bucket(Bucket=BUCKET)
    return s3_server


def _keys(prefix: str) -> list[str]:
    """Every key under ``prefix`` in the test bucket, sorted."""
    listing = storage.s3_client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def _variant(demo_bundle: Path, parent: Path, tag: str) -> Path:
    """A staged copy of the demo bundle plus ``tag.json``: each tag is its own version."""
    staging = parent / tag
    shutil.copytree(demo_bundle, staging)
    (staging / "tag.json").write_text(json.dumps({"tag": tag}))
    computed = {"format", "format_version", "version", "created_at", "files"}
    meta = {k: v for k, v in json.loads((demo_bundle / bundle.MANIFEST).read_text()).items() if k not in computed}
    bundle.write_manifest(staging, meta)
    return staging


def _version(staging: Path) -> str:
    return json.loads((staging / bundle.MANIFEST).read_text())["version"]


def _patch_client(monkeypatch, method: str, wrap: Callable) -> None:
    """Every client ``storage`` makes gets ``method`` replaced by ``wrap(client, original)``."""
    make = storage.s3_client

    def client():
        c = make()
        setattr(c, method, wrap(c, getattr(c, method)))
        return c

    monkeypatch.setattr(storage, "s3_client", client)


def _count_uploads(monkeypatch, before: Callable[[int], None]) -> list[str]:
    """Call ``before(files uploaded so far)`` ahead of each upload; returns the keys uploaded."""
    uploaded: list[str] = []

    def wrap(_client, upload_file):
        def counted(filename, bucket, key, **kwargs):
            before(len(uploaded))
            upload_file(filename, bucket, key, **kwargs)
            uploaded.append(key)

        return counted

    _patch_client(monkeypatch, "upload_file", wrap)
    return uploaded


def test_parquet_inputs_on_s3_to_s3_bundle(s3_endpoint, ray_session, demo_data, demo_bundle, tmp_path):
    """Parquet from S3 gives the same bundle content as the CSV run; the S3 bundle lands under
    its version with a LATEST pointer, every object encrypted, and loads through the prefix."""
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

    out = f"s3://{BUCKET}/bundles"
    manifest = preprocess.run(f"s3://{BUCKET}/raw/catalog.parquet", f"s3://{BUCKET}/raw/plays", out)
    version = manifest["version"]
    keys = _keys("bundles/")
    assert keys == sorted(
        [f"bundles/{version}/{f}" for f in [*manifest["files"], bundle.MANIFEST]] + ["bundles/LATEST"]
    )
    for key in keys:
        assert client.head_object(Bucket=BUCKET, Key=key)["ServerSideEncryption"] == "AES256"
    pointer = json.loads(storage.read_text(f"{out}/LATEST"))
    assert (pointer["version"], pointer["uri"]) == (version, f"{out}/{version}") and pointer["published_at"]

    from_s3 = bundle.load(out, cache_dir=tmp_path / "cache")
    local = bundle.load(str(demo_bundle))
    assert from_s3.version == version
    assert from_s3.manifest["counts"]["interactions"] == local.manifest["counts"]["interactions"]
    assert (from_s3.user_items != local.user_items).nnz == 0
    assert (from_s3.user_hash == local.user_hash).all()
    assert from_s3.catalog["track_id"].tolist() == local.catalog["track_id"].tolist()


def test_csv_input_from_s3(s3_endpoint, ray_session, demo_data, demo_bundle, tmp_path):
    client = storage.s3_client()
    client.upload_file(str(demo_data / "Music Info.csv"), BUCKET, "csv/Music Info.csv")
    client.upload_file(str(demo_data / "User Listening History.csv"), BUCKET, "csv/User Listening History.csv")
    manifest = preprocess.run(
        f"s3://{BUCKET}/csv/Music Info.csv",
        f"s3://{BUCKET}/csv/User Listening History.csv",
        str(tmp_path / "b"),
        chunk_bytes=256 << 10,
    )
    assert manifest["files"] == bundle.verify(demo_bundle)["files"]


def test_missing_s3_bundle_is_a_clear_error(s3_endpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json under"):
        bundle.load(f"s3://{BUCKET}/nothing/here", cache_dir=tmp_path)


@pytest.mark.parametrize("sse", ["AES256", "aws:kms"])
def test_every_write_is_encrypted_as_configured(s3_endpoint, demo_bundle, tmp_path, monkeypatch, sse):
    """Bundle files, manifest, pointer and text objects (event log, weights store) all carry
    SSE-S3 by default and SSE-KMS with the configured key when SEGUE_S3_KMS_KEY_ID is set."""
    key_id = None
    monkeypatch.delenv(storage.KMS_KEY_ENV, raising=False)
    if sse == "aws:kms":
        key_id = boto3.client("kms").create_key()["KeyMetadata"]["KeyId"]
        monkeypatch.setenv(storage.KMS_KEY_ENV, key_id)
    prefix = f"sse-{sse.replace(':', '-')}"
    bundle.publish(_variant(demo_bundle, tmp_path, "enc"), f"s3://{BUCKET}/{prefix}/bundles")
    storage.write_text(f"s3://{BUCKET}/{prefix}/events/dt=2024-01-01/a.ndjson", '{"n": 1}\n')
    keys = _keys(f"{prefix}/")
    assert len(keys) == len(bundle.verify(demo_bundle)["files"]) + 4  # + tag.json, manifest, LATEST, event
    client = storage.s3_client()
    for key in keys:
        head = client.head_object(Bucket=BUCKET, Key=key)
        assert (head["ServerSideEncryption"], head.get("SSEKMSKeyId")) == (sse, key_id), key


@pytest.mark.parametrize("tamper", ["unencrypted", "truncated", "other KMS key"])
def test_an_upload_that_does_not_check_out_fails_loudly(s3_endpoint, demo_bundle, tmp_path, monkeypatch, tamper):
    """``head_object`` after each upload catches a wrong size or encryption; the pointer never moves."""
    out = f"s3://{BUCKET}/tampered-{tamper.replace(' ', '-')}"
    if tamper == "other KMS key":
        monkeypatch.setenv(storage.KMS_KEY_ENV, "expected-key")

    def wrap(client, _upload_file):
        def upload_file(filename, bucket, key, ExtraArgs):
            body, sse = Path(filename).read_bytes(), dict(ExtraArgs)
            if tamper == "unencrypted":
                sse = {}
            elif tamper == "truncated":
                body = body[:-1]
            else:
                sse["SSEKMSKeyId"] = "some-other-key"
            client.put_object(Bucket=bucket, Key=key, Body=body, **sse)

        return upload_file

    _patch_client(monkeypatch, "upload_file", wrap)
    with pytest.raises(storage.UploadError, match="bytes stored|encryption|KMS key"):
        bundle.publish(_variant(demo_bundle, tmp_path, "t"), out)
    assert storage.read_text(f"{out}/LATEST") is None
    assert not any(k.endswith(bundle.MANIFEST) for k in _keys(out.removeprefix(f"s3://{BUCKET}/")))


def test_publishing_an_existing_version_is_refused(s3_endpoint, demo_bundle, tmp_path):
    out = f"s3://{BUCKET}/again"
    bundle.publish(_variant(demo_bundle, tmp_path / "first", "same"), out)
    again = _variant(demo_bundle, tmp_path / "second", "same")
    with pytest.raises(FileExistsError, match="already published"):
        bundle.publish(again, out)
    assert again.is_dir()  # refused before anything was uploaded or removed
    version = _version(again)
    bundle.publish(again, out, overwrite=True)
    assert json.loads(storage.read_text(f"{out}/LATEST"))["version"] == version


def test_an_interrupted_upload_leaves_the_old_version_live(s3_endpoint, demo_bundle, tmp_path, monkeypatch):
    """Upload fails after 3 files: LATEST still names the old version, the half-written
    version prefix refuses to load, nothing of it is cached; publishing again recovers."""
    out, cache = f"s3://{BUCKET}/interrupted", tmp_path / "cache"
    old_staging = _variant(demo_bundle, tmp_path, "old")
    old = _version(old_staging)
    bundle.publish(old_staging, out)
    new_staging = _variant(demo_bundle, tmp_path, "new")
    new = _version(new_staging)

    def fail_after_three(done: int) -> None:
        if done == 3:
            raise ConnectionError("connection reset")

    _count_uploads(monkeypatch, fail_after_three)
    with pytest.raises(ConnectionError):
        bundle.publish(new_staging, out)
    monkeypatch.undo()

    assert len(_keys(f"interrupted/{new}/")) == 3
    assert json.loads(storage.read_text(f"{out}/LATEST"))["version"] == old
    assert bundle.load(out, cache_dir=cache, parts=()).version == old
    with pytest.raises((FileNotFoundError, bundle.BundleError)):
        bundle.load(f"{out}/{new}", cache_dir=cache, parts=())
    assert not [p for p in cache.iterdir() if p.name.startswith((new, f".{new}"))]

    bundle.publish(new_staging, out)  # the leftovers had no manifest, so this is not an overwrite
    assert bundle.load(out, cache_dir=cache, parts=()).version == new


def test_readers_see_the_old_version_or_the_new_one(s3_endpoint, demo_bundle, tmp_path, monkeypatch):
    """While a new version uploads, the prefix keeps loading the old one; the manifest goes
    after the data files and the pointer after the manifest; the old version stays pinnable."""
    out, cache = f"s3://{BUCKET}/switch", tmp_path / "cache"
    bundle.publish(_variant(demo_bundle, tmp_path, "v1"), out)
    v1 = bundle.load(out, cache_dir=cache, parts=()).version
    staging = _variant(demo_bundle, tmp_path, "v2")
    v2 = _version(staging)
    seen: list[str] = []
    uploaded = _count_uploads(monkeypatch, lambda _: seen.append(bundle.load(out, cache_dir=cache, parts=()).version))
    write_text = storage.write_text

    def pointer_last(uri: str, text: str) -> None:
        assert uploaded[-1].endswith(f"{v2}/{bundle.MANIFEST}") and len(uploaded) == len(seen)
        seen.append(bundle.load(out, cache_dir=cache, parts=()).version)
        write_text(uri, text)

    monkeypatch.setattr(storage, "write_text", pointer_last)
    bundle.publish(staging, out)
    monkeypatch.undo()

    assert seen == [v1] * (len(uploaded) + 1)
    assert all(k.endswith(bundle.MANIFEST) == (i == len(uploaded) - 1) for i, k in enumerate(uploaded))
    assert bundle.load(out, cache_dir=cache, parts=()).version == v2
    assert bundle.load(f"{out}/{v1}", cache_dir=cache, parts=()).version == v1  # a rollback pin


def test_cache_is_per_version_and_holds_only_verified_downloads(s3_endpoint, demo_bundle, tmp_path, monkeypatch):
    out, cache = f"s3://{BUCKET}/cached", tmp_path / "cache"
    stagings = [_variant(demo_bundle, tmp_path, tag) for tag in ("c1", "c2")]
    v1, v2 = map(_version, stagings)
    for staging in stagings:
        bundle.publish(staging, out)
    r1, r2 = bundle.fetch(f"{out}/{v1}", cache), bundle.fetch(out, cache)
    assert r1.name.startswith(f"{v1}-") and r2.name.startswith(f"{v2}-")
    assert (bundle.verify(r1)["version"], bundle.verify(r2)["version"]) == (v1, v2)

    def no_download(*_):
        raise AssertionError("a cached bundle was downloaded again")

    monkeypatch.setattr(storage, "download_dir", no_download)
    assert bundle.fetch(out, cache) == r2
    monkeypatch.undo()

    fresh = tmp_path / "fresh"

    def wrap(_client, download_file):
        calls = []

        def failing(bucket, key, filename):
            calls.append(key)
            if len(calls) == 3:
                raise ConnectionError("connection reset")
            download_file(bucket, key, filename)

        return failing

    _patch_client(monkeypatch, "download_file", wrap)
    with pytest.raises(ConnectionError):
        bundle.fetch(out, fresh)
    monkeypatch.undo()
    assert list(fresh.iterdir()) == []  # the partial download was thrown away

    data_key = f"cached/{v2}/tag.json"
    storage.s3_client().put_object(Bucket=BUCKET, Key=data_key, Body=b'{"tag": "c3"}')  # same size, new bytes
    with pytest.raises(bundle.BundleError, match="sha256"):
        bundle.fetch(out, fresh)
    assert list(fresh.iterdir()) == []


def test_a_pointer_naming_a_path_is_refused(s3_endpoint, tmp_path):
    storage.write_text(f"s3://{BUCKET}/bad-pointer/LATEST", json.dumps({"version": "../bundles"}))
    with pytest.raises(bundle.BundleError, match="LATEST"):
        bundle.load(f"s3://{BUCKET}/bad-pointer", cache_dir=tmp_path)


# boto3's and pyarrow's key arguments, and an access key id; the chain's own environment
# variables (upper case, e.g. a loopback test server's dummies) are the standard chain.
CREDENTIAL = re.compile(
    r"aws_access_key_id|aws_secret_access_key|aws_session_token"
    r"|\b(?:access|secret)_key\s*=|AKIA[0-9A-Z]{16}"
)


def test_no_credentials_in_the_sources():
    """Credentials come only from the standard AWS chain: no source passes or holds a key."""
    sources = [p for d in ("serve_app", "jobs", "ui", "loadtest") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(sources) > 10
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in sources
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if CREDENTIAL.search(line)
    ]
    assert not found, "credentials in the sources:\n" + "\n".join(found)
