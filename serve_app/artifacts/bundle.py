"""The artifact bundle: a directory of open-format files plus ``manifest.json``.

Writing hashes every file into the manifest; loading verifies the manifest and every
checksum before a single array is used, so a truncated, modified, missing or extra file
is refused with an error that names it. Nothing here can execute code from a bundle:
Parquet, JSON and ``.npz``/``.npy`` read with ``allow_pickle=False`` only.

On S3 a prefix holds one sub-prefix per version plus a ``LATEST`` pointer that is
rewritten only after a new version is uploaded and checked, so readers of the prefix see
the old version or the new one; a version prefix can be named directly to pin it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp

from serve_app.artifacts import storage
from serve_app.core.taste import Taste
from serve_app.core.users import hash_probe

MANIFEST = "manifest.json"
POINTER = "LATEST"
TASTE_FILE = "collab/taste.npz"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "segue-bundles"
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
FORMAT = "segue-bundle"
FORMAT_VERSION = 1
ALLOWED_SUFFIXES = {".parquet", ".npz", ".npy", ".json"}
_CHUNK = 1 << 20


class BundleError(Exception):
    """A bundle that must not be served; ``path`` names the offending file."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _utc_now() -> str:
    """The current UTC time as an ISO-8601 string (seconds), for manifests and pointers."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _data_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Hash every file under ``root`` and write ``manifest.json``; returns the manifest.

    The version id is derived from the file checksums, so identical content gets the
    same id and any change gets a new one.
    """
    files = {}
    for rel in _data_files(root):
        if Path(rel).suffix not in ALLOWED_SUFFIXES:
            raise BundleError(rel, f"suffix not allowed in a bundle (allowed: {sorted(ALLOWED_SUFFIXES)})")
        path = root / rel
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    content_id = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": f"b-{content_id}",
        "created_at": _utc_now(),
        **meta,
        "files": files,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def verify(root: Path) -> dict[str, Any]:
    """Check ``root`` against its manifest; return the manifest or raise :class:`BundleError`."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(MANIFEST, f"missing in {root}")
    try:
        manifest = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(MANIFEST, f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(MANIFEST, f"not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version")
        raise BundleError(MANIFEST, f"format_version {found!r}, this code reads {FORMAT_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(MANIFEST, "has no 'files' table")
    for rel, entry in files.items():
        path = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(rel, "path escapes the bundle")
        if not path.is_file():
            raise BundleError(rel, "listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise BundleError(rel, f"size {size} bytes, manifest says {entry.get('bytes')} (truncated or modified)")
        if sha256_file(path) != entry.get("sha256"):
            raise BundleError(rel, "sha256 does not match the manifest (modified)")
    extra = sorted(set(_data_files(root)) - set(files))
    if extra:
        raise BundleError(extra[0], "present but not listed in the manifest")
    return manifest


def publish(staging: Path, out_uri: str, overwrite: bool = False) -> None:
    """Move a finished bundle from ``staging`` to ``out_uri`` (local dir or ``s3://``).

    Locally the switch is a rename; on S3 it is the ``LATEST`` pointer, written last (see
    :func:`_publish_s3`). Either way readers see the old bundle or the new one, never a mix.
    """
    if storage.is_s3(out_uri):
        _publish_s3(staging, out_uri.rstrip("/"), overwrite)
        shutil.rmtree(staging)
        return
    out = storage.local_path(out_uri)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty (use --overwrite to replace it)")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        if out.exists():
            out.rmdir()
        staging.rename(out)


def _publish_s3(staging: Path, prefix_uri: str, overwrite: bool) -> None:
    """Upload ``staging`` to ``<prefix_uri>/<version>/`` (data files, then the manifest, each
    checked), then point ``<prefix_uri>/LATEST`` at it; an existing version is only replaced
    with ``overwrite``."""
    version = verify(staging)["version"]
    version_uri = f"{prefix_uri}/{version}"
    if not overwrite and storage.read_text(f"{version_uri}/{MANIFEST}") is not None:
        raise FileExistsError(f"{version_uri} is already published (use --overwrite to replace it)")
    storage.upload_dir(staging, version_uri, last=MANIFEST)
    pointer = {"version": version, "uri": version_uri, "published_at": _utc_now()}
    storage.write_text(f"{prefix_uri}/{POINTER}", json.dumps(pointer) + "\n")


def staging_dir(out_uri: str) -> Path:
    """A fresh directory to build a bundle in: beside the target locally, in /tmp for S3."""
    if storage.is_s3(out_uri):
        return Path(tempfile.mkdtemp(prefix="segue-bundle-"))
    out = storage.local_path(out_uri).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    staging.chmod(0o755)
    return staging


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Compressed ``.npz`` of plain numeric arrays (no object dtype, so no pickle)."""
    for name, arr in arrays.items():
        if arr.dtype == object:
            raise TypeError(f"{name}: object arrays are not allowed in a bundle")
    path.parent.mkdir(parents=True, exist_ok=True)
    # cast: numpy's stub would let an array named "allow_pickle" bind that keyword (a bool)
    np.savez_compressed(path, **cast(dict[str, Any], arrays))


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def csr_arrays(matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as the arrays stored in an ``.npz`` (indices in the narrowest dtype)."""
    idx_dtype = np.uint16 if matrix.shape[1] <= np.iinfo(np.uint16).max + 1 else np.int32
    ptr_dtype = np.int32 if matrix.nnz < np.iinfo(np.int32).max else np.int64
    return {
        "shape": np.asarray(matrix.shape, dtype=np.int64),
        "indptr": matrix.indptr.astype(ptr_dtype),
        "indices": matrix.indices.astype(idx_dtype),
        "data": matrix.data,
    }


def csr_from_arrays(arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays["shape"])
    return sp.csr_matrix((arrays["data"], arrays["indices"].astype(np.int32), arrays["indptr"]), shape=shape)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle in memory.

    Attributes:
        manifest: the parsed ``manifest.json``.
        catalog: one row per track, row ``i`` is track index ``i`` (most played first).
        aliases: ``alias_track_id -> track`` for catalog rows merged as duplicate songs.
        content: ``(n_tracks, n_features)`` float32 CSR, L2-normalised content vectors.
        content_transform: the fitted transform (JSON) that builds a vector for a new song.
        user_items: ``(n_users, n_tracks)`` CSR of summed playcounts, users ordered by ``user_hash``.
        user_hash: ``(n_users,)`` uint64, sorted; see :func:`serve_app.core.users.user_hash`.
        content_nn: ``(n_tracks, n_tracks)`` CSR, each track's top content neighbours.
        cf_nn: ``(n_tracks, n_tracks)`` CSR, each track's top collaborative neighbours.
        cf_factors: ``(n_tracks, d)`` float32 unit rows, each track's place by its listeners
            (zero for a track nobody played); None in a bundle written before they were.
        taste: the listener-taste model over the most-played tracks
            (:class:`serve_app.core.taste.Taste`); None in a bundle written before it was.

    Parts not asked of :func:`load` are None.
    """

    root: Path
    manifest: dict[str, Any]
    catalog: pd.DataFrame
    aliases: pd.DataFrame
    content: sp.csr_matrix | None = None
    content_transform: dict[str, Any] | None = None
    user_items: sp.csr_matrix | None = None
    user_hash: np.ndarray | None = None
    content_nn: sp.csr_matrix | None = None
    cf_nn: sp.csr_matrix | None = None
    cf_factors: np.ndarray | None = None
    taste: Taste | None = None

    @property
    def version(self) -> str:
        return self.manifest["version"]


def _version_in(text: str, name: str) -> str:
    """The ``version`` a pointer or manifest names, refused unless it is a plain name (it
    becomes an S3 key and a cache directory)."""
    try:
        version = json.loads(text).get("version")
    except (json.JSONDecodeError, AttributeError):
        version = None
    if not isinstance(version, str) or not _VERSION_NAME.fullmatch(version):
        raise BundleError(name, f"no usable 'version' ({version!r})")
    return version


def resolve(uri: str) -> str:
    """The bundle prefix an ``s3://`` URI stands for: the version its ``LATEST`` pointer
    names, else the URI itself (a pinned version)."""
    uri = uri.rstrip("/")
    text = storage.read_text(f"{uri}/{POINTER}")
    return uri if text is None else f"{uri}/{_version_in(text, POINTER)}"


def fetch(uri: str, cache_dir: Path | None = None) -> Path:
    """Local directory holding the bundle at ``uri``. An S3 bundle is downloaded once into a
    cache entry named by its version and manifest digest, so versions never mix."""
    if not storage.is_s3(uri):
        return storage.local_path(uri)
    source = resolve(uri)
    text = storage.read_text(f"{source}/{MANIFEST}")
    if text is None:
        raise FileNotFoundError(f"no {MANIFEST} under {source} (not a bundle, or an upload that did not finish)")
    digest = hashlib.sha256(text.encode()).hexdigest()
    target = (cache_dir or DEFAULT_CACHE) / f"{_version_in(text, MANIFEST)}-{digest[:12]}"
    if not target.is_dir():
        _download(source, target, digest)
    return target


def _download(source: str, target: Path, digest: str) -> None:
    """Download ``source`` into a private directory, verify it, then rename it to ``target``:
    a cache entry only ever holds a complete, verified bundle."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        storage.download_dir(source, tmp)
        verify(tmp)
        if sha256_file(tmp / MANIFEST) != digest:
            raise BundleError(MANIFEST, f"replaced under {source} during the download")
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # else another process cached the same bundle first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _optional_npy(path: Path) -> np.ndarray | None:
    """An array a bundle of an older layout does not have (None then; verify() has already
    checked that every file the manifest lists is there)."""
    return np.load(path, allow_pickle=False) if path.is_file() else None


PARTS = ("content", "content_transform", "user_items", "content_nn", "cf_nn", "cf_factors", "taste")


def load(uri: str, cache_dir: Path | None = None, parts: Collection[str] = PARTS) -> Bundle:
    """Fetch, verify every checksum, then read the catalog and the ``parts`` asked for (the
    others stay None: a Serve deployment reads only what it uses); raises :class:`BundleError`."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown bundle parts: {sorted(unknown)}")
    root = fetch(uri, cache_dir)
    manifest = verify(root)
    readers = {
        "content": lambda: csr_from_arrays(load_npz(root / "content" / "vectors.npz")),
        "content_transform": lambda: json.loads((root / "content" / "transform.json").read_text()),
        "user_items": lambda: csr_from_arrays(load_npz(root / "collab" / "user_items.npz")),
        "content_nn": lambda: csr_from_arrays(load_npz(root / "content" / "item_neighbors.npz")),
        "cf_nn": lambda: csr_from_arrays(load_npz(root / "collab" / "item_neighbors.npz")),
        "cf_factors": lambda: _optional_npy(root / "collab" / "item_factors.npy"),
        "taste": lambda: load_npz(root / TASTE_FILE) if (root / TASTE_FILE).is_file() else None,
    }
    try:
        catalog = pd.read_parquet(root / "catalog.parquet")
        aliases = pd.read_parquet(root / "catalog_aliases.parquet")
        loaded = {name: readers[name]() for name in parts}
        if "user_items" in parts:
            loaded["user_hash"] = np.load(root / "collab" / "user_hash.npy", allow_pickle=False)
        if loaded.get("taste") is not None:
            loaded["taste"] = Taste.from_arrays(loaded["taste"], len(catalog))
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(getattr(exc, "filename", None) or "bundle", f"unreadable: {exc}") from None
    probe = manifest.get("users", {}).get("hash_probe")
    if probe != hash_probe():
        raise BundleError(MANIFEST, f"user-id hash probe {probe!r} differs from this runtime's {hash_probe()!r}")
    n = len(catalog)
    shapes_ok = [loaded[name].shape == (n, n) for name in ("content_nn", "cf_nn") if name in loaded]
    if "content" in loaded:
        shapes_ok.append(loaded["content"].shape[0] == n)
    if loaded.get("cf_factors") is not None:
        shapes_ok.append(loaded["cf_factors"].shape[0] == n)
    if "user_items" in loaded:
        shapes_ok.append(loaded["user_items"].shape == (len(loaded["user_hash"]), n))
    if not all(shapes_ok):
        raise BundleError(MANIFEST, "array shapes disagree with the catalog")
    return Bundle(root, manifest, catalog, aliases, **loaded)
