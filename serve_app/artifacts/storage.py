"""Local paths and ``s3://`` URIs behind one small API.

Inputs are read through ``pyarrow.fs`` (random access, used by Ray Data workers); every
write (bundles, pointers, event-log segments, the weights store) goes through boto3 with
server-side encryption from :func:`sse_args` and is checked with ``head_object`` after it.
The S3 endpoint comes from ``AWS_ENDPOINT_URL`` when set (a local test server, MinIO, …);
credentials only ever come from the standard AWS chain, never from this code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

S3_PREFIX = "s3://"
KMS_KEY_ENV = "SEGUE_S3_KMS_KEY_ID"


class UploadError(OSError):
    """An object just written to S3 is not what was sent (size or encryption)."""


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_PREFIX)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, key = uri[len(S3_PREFIX) :].partition("/")
    if not bucket:
        raise ValueError(f"not an s3 URI with a bucket: {uri!r}")
    return bucket, key.strip("/")


def local_path(uri: str) -> Path:
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for reading inputs."""
    if is_s3(uri):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        bucket, key = split_s3(uri)
        return pafs.S3FileSystem(**kwargs), f"{bucket}/{key}"
    return pafs.LocalFileSystem(), str(local_path(uri).resolve())


def list_files(uri: str) -> list[str]:
    """The file itself, or the files inside a directory/prefix (sorted, hidden files skipped)."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input not found: {uri}")
    if info.type == pafs.FileType.File:
        return [uri]
    selector = pafs.FileSelector(path, recursive=True)
    names = sorted(
        i.path
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.File and not Path(i.path).name.startswith((".", "_"))
    )
    prefix = S3_PREFIX if is_s3(uri) else ""
    return [prefix + n for n in names]


def fingerprint(uri: str) -> dict:
    """Cheap identity of an input file: URI, size and modification time (no full read)."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    mtime = info.mtime.isoformat() if info.mtime is not None else None
    return {"uri": uri, "bytes": info.size, "mtime": mtime}


def s3_client():
    """A boto3 S3 client; honours ``AWS_ENDPOINT_URL`` like the AWS CLI does."""
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def sse_args() -> dict[str, str]:
    """The server-side encryption arguments of every S3 write: SSE-KMS with the key in
    ``SEGUE_S3_KMS_KEY_ID`` when it is set, SSE-S3 otherwise."""
    key_id = os.environ.get(KMS_KEY_ENV)
    if key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_id}
    return {"ServerSideEncryption": "AES256"}


def _check_written(client, bucket: str, key: str, size: int, sse: dict[str, str]) -> None:
    """Raise :class:`UploadError` unless the stored object has ``size`` bytes and the ``sse``
    encryption (S3 reports a KMS key as its ARN, so a key id matches the ARN's tail)."""
    head = client.head_object(Bucket=bucket, Key=key)
    problems = []
    if head["ContentLength"] != size:
        problems.append(f"{head['ContentLength']} bytes stored, {size} sent")
    if head.get("ServerSideEncryption") != sse["ServerSideEncryption"]:
        problems.append(f"encryption {head.get('ServerSideEncryption')!r}, expected {sse['ServerSideEncryption']!r}")
    want_key, got_key = sse.get("SSEKMSKeyId"), head.get("SSEKMSKeyId") or ""
    if want_key and got_key != want_key and not got_key.endswith(f"/{want_key}"):
        problems.append(f"KMS key {got_key!r}, expected {want_key!r} ({KMS_KEY_ENV} takes a key id or key ARN)")
    if problems:
        raise UploadError(f"s3://{bucket}/{key}: " + "; ".join(problems))


def upload_dir(local_dir: Path, uri: str, last: str = "manifest.json") -> None:
    """Copy a directory to ``s3://bucket/prefix`` with SSE, checking each object as it lands;
    ``last`` is uploaded after the rest so a reader that finds it finds a complete bundle."""
    client = s3_client()
    bucket, prefix = split_s3(uri)
    sse = sse_args()
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    for path in sorted(files, key=lambda p: p.name == last):
        key = f"{prefix}/{path.relative_to(local_dir).as_posix()}".lstrip("/")
        client.upload_file(str(path), bucket, key, ExtraArgs=sse)
        _check_written(client, bucket, key, path.stat().st_size, sse)


def download_dir(uri: str, local_dir: Path) -> None:
    """Copy every object under ``s3://bucket/prefix/`` into ``local_dir`` (created if needed)."""
    client = s3_client()
    bucket, prefix = split_s3(uri)
    local_dir.mkdir(parents=True, exist_ok=True)
    paginator = client.get_paginator("list_objects_v2")
    found = False
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) :].lstrip("/")
            if not rel or rel.endswith("/"):
                continue
            target = local_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target))
            found = True
    if not found:
        raise FileNotFoundError(f"no objects under {uri}")


def read_text(uri: str) -> str | None:
    """A small text object (local file or ``s3://`` key), None when it does not exist."""
    if is_s3(uri):
        client = s3_client()
        bucket, key = split_s3(uri)
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except client.exceptions.NoSuchKey:
            return None
    path = local_path(uri)
    return path.read_text() if path.is_file() else None


def write_text(uri: str, text: str) -> None:
    """Replace a small text object whole: an S3 put with SSE (checked after), or a local
    write-then-rename (a reader never sees half of it)."""
    if is_s3(uri):
        client = s3_client()
        bucket, key = split_s3(uri)
        body, sse = text.encode(), sse_args()
        client.put_object(Bucket=bucket, Key=key, Body=body, **sse)
        _check_written(client, bucket, key, len(body), sse)
        return
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
