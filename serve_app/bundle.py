"""The artifact bundle: a directory of open-format files plus ``manifest.json``.

Writing hashes every file into the manifest; loading verifies the manifest and every
checksum before a single array is used, so a truncated, modified, missing or extra file
is refused with an error that names it. Nothing here can execute code from a bundle:
Parquet, JSON and ``.npz``/``.npy`` read with ``allow_pickle=False`` only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import numpy as np
import pandas as pd
import scipy.sparse as sp

from serve_app import storage
from serve_app.users import hash_probe

MANIFEST = "manifest.json"
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
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
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
        raise BundleError(MANIFEST, f"format_version {manifest.get('format_version')!r}, this code reads {FORMAT_VERSION}")
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

    Locally the switch is a rename, so readers see the old bundle or the new one, never a mix.
    """
    if storage.is_s3(out_uri):
        storage.upload_dir(staging, out_uri)
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
    np.savez_compressed(path, **arrays)


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
        user_hash: ``(n_users,)`` uint64, sorted; see :func:`serve_app.users.user_hash`.
        content_nn: ``(n_tracks, n_tracks)`` CSR, each track's top content neighbours.
        cf_nn: ``(n_tracks, n_tracks)`` CSR, each track's top collaborative neighbours.

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

    @property
    def version(self) -> str:
        return self.manifest["version"]


def fetch(uri: str, cache_dir: Path | None = None) -> Path:
    """Local directory holding the bundle at ``uri`` (downloaded first when it is on S3)."""
    if not storage.is_s3(uri):
        return storage.local_path(uri)
    bucket, prefix = storage.split_s3(uri)
    cache = cache_dir or Path(tempfile.gettempdir()) / "segue-bundles"
    target = cache / bucket / prefix.replace("/", "__")
    storage.download_dir(uri, target)
    return target


PARTS = ("content", "content_transform", "user_items", "content_nn", "cf_nn")


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
    }
    try:
        catalog = pd.read_parquet(root / "catalog.parquet")
        aliases = pd.read_parquet(root / "catalog_aliases.parquet")
        loaded = {name: readers[name]() for name in parts}
        if "user_items" in parts:
            loaded["user_hash"] = np.load(root / "collab" / "user_hash.npy", allow_pickle=False)
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(getattr(exc, "filename", None) or "bundle", f"unreadable: {exc}") from None
    probe = manifest.get("users", {}).get("hash_probe")
    if probe != hash_probe():
        raise BundleError(MANIFEST, f"user-id hash probe {probe!r} differs from this runtime's {hash_probe()!r}")
    n = len(catalog)
    shapes_ok = [loaded[name].shape == (n, n) for name in ("content_nn", "cf_nn") if name in loaded]
    if "content" in loaded:
        shapes_ok.append(loaded["content"].shape[0] == n)
    if "user_items" in loaded:
        shapes_ok.append(loaded["user_items"].shape == (len(loaded["user_hash"]), n))
    if not all(shapes_ok):
        raise BundleError(MANIFEST, "array shapes disagree with the catalog")
    return Bundle(root, manifest, catalog, aliases, **loaded)
