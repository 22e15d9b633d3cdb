"""Hot reload without Ray: a new bundle loads in the background and switches atomically, a bad
one is refused and reported while the old one serves, versions stay answerable."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from serve_app.artifacts import bundle as bundle_mod
from serve_app.shell.reload import BundleSlot, VersionGone


def run(coro):
    return asyncio.run(coro)


def catalog_size(b: bundle_mod.Bundle) -> int:
    return len(b.catalog)


@pytest.fixture(scope="module")
def versions(demo_bundle, tmp_path_factory):
    """The demo bundle and a copy with another version (its manifest's version edited and re-published)."""
    import json

    other = tmp_path_factory.mktemp("reload") / "other"
    shutil.copytree(demo_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["version"] = "b-other"
    (other / "manifest.json").write_text(json.dumps(manifest))
    return demo_bundle, other


def test_first_load_then_background_switch_keeps_the_previous_version(versions):
    a, b = versions

    async def scenario():
        slot = BundleSlot(catalog_size)
        await slot.load(str(a))
        first = slot.version
        slot.request(str(b))
        assert slot.loading == str(b) and slot.version == first  # still serving a while b loads
        await slot._task
        assert slot.version == "b-other" and slot.loading is None and slot.refused is None
        assert slot.get(first) == slot.get("b-other") == len(bundle_mod.load(str(a)).catalog)
        with pytest.raises(VersionGone):
            slot.get("b-never")
        return slot.status()

    status = run(scenario())
    assert status["loaded"][-1] == "b-other" and len(status["loaded"]) == 2


@pytest.mark.parametrize("damage", ["tamper", "missing"])
def test_a_bad_bundle_is_refused_and_the_old_one_serves(versions, tmp_path, damage):
    a, _ = versions
    bad = tmp_path / "bad"
    if damage == "tamper":
        shutil.copytree(a, bad)
        (bad / "catalog.parquet").write_bytes((bad / "catalog.parquet").read_bytes()[:-10])

    async def scenario():
        switched = []
        slot = BundleSlot(catalog_size, on_switch=lambda: switched.append(1))
        await slot.load(str(a))
        version = slot.version
        slot.request(str(bad))
        await slot._task
        assert slot.version == version and slot.uri == str(a) and len(switched) == 1
        assert slot.refused["uri"] == str(bad) and "Error" in slot.refused["error"]
        slot.request(str(a))  # back to the serving bundle: the refusal is withdrawn
        assert slot.refused is None

    run(scenario())


def test_a_newer_request_supersedes_a_pending_one(versions, tmp_path):
    a, b = versions

    async def scenario():
        slot = BundleSlot(catalog_size)
        await slot.load(str(a))
        slot.request(str(tmp_path / "never-loaded"))
        slot.request(str(b))
        await slot._task
        assert slot.version == "b-other" and slot.refused is None

    run(scenario())
