"""The deploy workflow's steps that need more than a shell line (.github/workflows/deploy.yml).

``code``      the commit's ``serve_app`` as a zip for ``runtime_env.py_modules`` (with a generated
              ``serve_app/_build.py`` naming the commit); the workflow uploads it to
              ``s3://<bucket>/code/<sha>/serve_app.zip``, where the template's py_modules points.
``deps-hash`` the hash of pyproject.toml's dependencies: the image job labels the image with it.
``render``    cluster/serve_config.aws.yaml -> the file to deploy: its ``REPLACE_WITH_…``
              placeholders filled (``REPLACE_WITH_REVISION``, in the py_modules URI, with the
              commit), every application's ``runtime_env.env_vars.SEGUE_REVISION`` set to the
              commit, ``SEGUE_IMAGE`` to the image built from it (and ``runtime_env.image_uri``
              too, where a template runs the application in its own image) and ``SEGUE_DEPS`` to
              its dependency hash, so a deploy always changes the config and Serve rolls every
              replica onto the commit's zip (an unchanged config does not redeploy changed code).
``check``     a deploy file is fit to deploy: applications, a revision each, no placeholder
              left, no secrets.
``image``     the cluster's image holds the dependencies the deploy file's code needs (its
              ``segue.deps-hash`` label is the file's ``SEGUE_DEPS``): the code comes with the
              deploy, the dependencies only with the image the launcher started the nodes from
              (cluster/aws.yaml), so a change of dependencies needs that image and `ray up`.
``snapshot``  the config live on the cluster now, as a deploy file (the rollback point), and
              its replica ids (``wait`` needs them to know when all were replaced).
``wait``      until Serve has rolled every replica to the new config and is healthy, then
              until ``/readyz`` through the load balancer answers 200 several times running.

The cluster is reached through the dashboard address (an SSH tunnel in the workflow); with
``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` in the environment, Ray's client sends the token.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import yaml

REVISION_VAR = "SEGUE_REVISION"
IMAGE_VAR = "SEGUE_IMAGE"
REVISION_PLACEHOLDER = "REPLACE_WITH_REVISION"

# Environment variable names whose values are secrets: they never go into a deploy file
# (the replicas read the admin token from a file or the node's environment instead).
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE_KEY|ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)$")
SECRET_VALUE = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----")
REVISION = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Z0-9_]+")

DEPS_VAR = "SEGUE_DEPS"
PACKAGE = "serve_app"
BUILD_MODULE = "_build.py"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same tree always gives the same zip

FAILED_APP = {"DEPLOY_FAILED"}
FAILED_DEPLOYMENT = {"DEPLOY_FAILED"}


def load(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a Serve deploy file (a YAML mapping)")
    return data


def dump(config: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=False)


def applications(config: dict) -> list[dict]:
    apps = config.get("applications")
    if not isinstance(apps, list) or not apps or not all(isinstance(a, dict) for a in apps):
        raise ValueError("the deploy file has no applications")
    return apps


def code_zip(package: str | Path, revision: str, out: str | Path) -> Path:
    """Zip ``package`` (serve_app) for runtime_env py_modules, with ``_build.py`` saying ``revision``.

    Ray strips a remote zip's single top-level directory and puts what is left on the
    replicas' path, so the package sits one level down: ``serve_app-<revision>/serve_app/…``.
    """
    if not REVISION.match(revision):
        raise ValueError(f"not a revision: {revision!r}")
    package, out = Path(package), Path(out)
    top = f"{package.name}-{revision}/{package.name}"
    files = sorted(
        p
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.relative_to(package).as_posix() != BUILD_MODULE
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    build = f'"""Written by .github/scripts/serve_deploy.py: the commit of this zip."""\n\nREVISION = {revision!r}\n'
    entries = [(p.relative_to(package).as_posix(), p.read_bytes()) for p in files] + [(BUILD_MODULE, build.encode())]
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(f"{top}/{name}", ZIP_TIME), data, compress_type=zipfile.ZIP_DEFLATED)
    return out


def deps_hash(pyproject: str | Path) -> str:
    """sha256 of pyproject.toml's ``[project].dependencies`` (sorted, spaces dropped): what the image installs."""
    deps = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))["project"]["dependencies"]
    return hashlib.sha256("\n".join(sorted(d.replace(" ", "") for d in deps)).encode()).hexdigest()


def _strings(node: Any):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def find_secrets(config: dict) -> list[str]:
    """What in a deploy file looks like a secret: env var names and AWS keys/private keys."""
    found = []
    for app in config.get("applications") or []:
        env = ((app.get("runtime_env") or {}).get("env_vars")) or {}
        found += [f"{app.get('name')}: env var {name}" for name in env if SECRET_NAME.search(str(name))]
        for dep in app.get("deployments") or []:
            env = (((dep.get("ray_actor_options") or {}).get("runtime_env") or {}).get("env_vars")) or {}
            found += [
                f"{app.get('name')}/{dep.get('name')}: env var {name}" for name in env if SECRET_NAME.search(str(name))
            ]
    if (config.get("http_options") or {}).get("ssl_keyfile_password"):
        found.append("http_options.ssl_keyfile_password")
    found += [
        "a value that looks like an AWS access key or a private key" for s in _strings(config) if SECRET_VALUE.search(s)
    ][:1]
    return found


def revisions(config: dict) -> dict[str, str | None]:
    """Each application's SEGUE_REVISION (None where it has none)."""
    out = {}
    for app in applications(config):
        env = ((app.get("runtime_env") or {}).get("env_vars")) or {}
        value = env.get(REVISION_VAR)
        out[app.get("name", "default")] = None if value is None else str(value)
    return out


def placeholders_left(config: dict) -> list[str]:
    return sorted({m for text in _strings(config) for m in PLACEHOLDER.findall(text)})


def parse_placeholders(text: str) -> dict[str, str]:
    """``REPLACE_WITH_X=value`` lines (blank lines skipped) -> {placeholder: value}; empty values are left out."""
    values = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not PLACEHOLDER.fullmatch(key):
            raise ValueError(f"not a REPLACE_WITH_…=value line: {line.split('=')[0]!r}")
        if value.strip():
            values[key] = value.strip()
    return values


def fill(node: Any, values: dict[str, str]) -> Any:
    """Every placeholder in every string value replaced by its value."""
    if isinstance(node, str):
        return PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), node)
    if isinstance(node, dict):
        return {key: fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [fill(item, values) for item in node]
    return node


def check(config: dict) -> None:
    """Raise ValueError unless the file is fit to deploy."""
    missing = [name for name, rev in revisions(config).items() if not rev]
    if missing:
        raise ValueError(f"applications without runtime_env.env_vars.{REVISION_VAR}: {missing}")
    left = placeholders_left(config)
    if left:
        raise ValueError(f"placeholders not filled: {', '.join(left)}")
    secrets = find_secrets(config)
    if secrets:
        raise ValueError("secrets do not belong in a deploy file: " + "; ".join(secrets))


def render(
    template: dict, revision: str, image: str, values: dict[str, str] | None = None, deps: str | None = None
) -> dict:
    """The deploy file: the template filled in (the revision too), with every application's
    revision, image and dependency hash set."""
    if not REVISION.match(revision):
        raise ValueError(f"not a revision: {revision!r}")
    name, _, digest = image.partition("@")
    tagged = ":" in name.rsplit("/", 1)[-1] or bool(digest)
    if not image or any(c.isspace() for c in image) or not tagged:
        raise ValueError(f"not an image reference with a tag or digest: {image!r}")
    if "@" in image and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ValueError(f"not an image digest: {digest!r}")
    config = fill(copy.deepcopy(template), {**(values or {}), REVISION_PLACEHOLDER: revision})
    for app in applications(config):
        runtime_env = app.setdefault("runtime_env", {}) or {}
        app["runtime_env"] = runtime_env
        env = runtime_env.setdefault("env_vars", {}) or {}
        runtime_env["env_vars"] = env
        env[REVISION_VAR] = str(revision)
        env[IMAGE_VAR] = image
        if deps:
            env[DEPS_VAR] = deps
        if "image_uri" in runtime_env:
            runtime_env["image_uri"] = image
    check(config)
    return config


def _env(app: dict) -> dict:
    """An application's ``runtime_env.env_vars`` (empty when it has none)."""
    return ((app.get("runtime_env") or {}).get("env_vars")) or {}


def deps_mismatches(config: dict, running_deps: str) -> list[str]:
    """Why the cluster's image (``running_deps``: its segue.deps-hash label) lacks the
    dependencies the deploy file's code needs; empty when it has them, or when the file names none."""
    problems = []
    for app in applications(config):
        want = _env(app).get(DEPS_VAR)
        if want and str(want) != running_deps:
            problems.append(
                f"{app.get('name')}: needs dependencies {str(want)[:12]}…, "
                f"the cluster's image has {running_deps[:12] + '…' if running_deps else 'no label'}"
            )
    return problems


HTTP_OPTION_KEYS = ("host", "port", "root_path", "request_timeout_s", "keep_alive_timeout_s")


def snapshot(details: dict) -> dict | None:
    """The live config (``get_serve_details()``) as a deploy file; None when nothing is deployed."""
    apps = [
        app["deployed_app_config"]
        for app in (details.get("applications") or {}).values()
        if app.get("deployed_app_config")
    ]
    if not apps:
        return None
    config: dict[str, Any] = {}
    if details.get("proxy_location"):
        config["proxy_location"] = details["proxy_location"]
    http = details.get("http_options") or {}
    http = {k: http[k] for k in HTTP_OPTION_KEYS if http.get(k) is not None}
    if http:
        config["http_options"] = http
    config["applications"] = copy.deepcopy(apps)
    return config


def replicas(details: dict) -> dict[str, dict]:
    """Per application: its live SEGUE_REVISION and the ids of its replicas."""
    out = {}
    for name, app in (details.get("applications") or {}).items():
        env = (((app.get("deployed_app_config") or {}).get("runtime_env") or {}).get("env_vars")) or {}
        ids = [r["replica_id"] for dep in (app.get("deployments") or {}).values() for r in dep.get("replicas") or []]
        out[name] = {"revision": None if env.get(REVISION_VAR) is None else str(env[REVISION_VAR]), "replicas": ids}
    return out


def rollout(details: dict, expected: dict[str, str | None], before: dict[str, dict]) -> tuple[bool, str | None, str]:
    """(done, failure, summary) of the rollout of ``expected`` revisions.

    Done when every application runs the expected revision, is RUNNING with every deployment
    HEALTHY and every replica RUNNING, and (where the revision changed) no replica from
    before the deploy is left: Serve replaced them all.
    """
    live = details.get("applications") or {}
    done, parts = True, []
    for name, revision in expected.items():
        app = live.get(name)
        if app is None:
            done = False
            parts.append(f"{name}: not deployed yet")
            continue
        status = app.get("status")
        if status in FAILED_APP:
            return False, f"{name}: {status}: {app.get('message', '')}".strip(), f"{name} {status}"
        env = (((app.get("deployed_app_config") or {}).get("runtime_env") or {}).get("env_vars")) or {}
        live_revision = None if env.get(REVISION_VAR) is None else str(env[REVISION_VAR])
        if live_revision != revision:
            done = False
            parts.append(f"{name}: revision {live_revision}, want {revision}")
            continue
        old = set()
        prior = before.get(name) or {}
        if prior.get("revision") != revision:
            old = set(prior.get("replicas") or [])
        counts: dict[str, int] = {}
        left = 0
        unhealthy = []
        for dep_name, dep in (app.get("deployments") or {}).items():
            if dep.get("status") in FAILED_DEPLOYMENT:
                return False, f"{name}/{dep_name}: {dep.get('status')}: {dep.get('message', '')}".strip(), name
            if dep.get("status") != "HEALTHY":
                unhealthy.append(f"{dep_name} {dep.get('status')}")
            for r in dep.get("replicas") or []:
                counts[r.get("state")] = counts.get(r.get("state"), 0) + 1
                left += r.get("replica_id") in old
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        parts.append(
            f"{name}: {status}; replicas {states or 'none'}; {left} from before"
            + (f"; {', '.join(unhealthy)}" if unhealthy else "")
        )
        if status != "RUNNING" or unhealthy or left or set(counts) - {"RUNNING"} or not counts:
            done = False
    return done, None, " | ".join(parts)


def ready(status: int, body: bytes, revision: str | None) -> bool:
    """/readyz says ready (200, "ready": true) and, if it reports a revision, the expected one."""
    if status != 200:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    if not isinstance(data, dict) or data.get("ready") is not True:
        return False
    reported = data.get("revision", data.get("code_revision"))
    return reported is None or revision is None or str(reported) == revision


def _client(address: str):
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(address)


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (https URL from the repo's variables)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


def cmd_render(args) -> int:
    config = render(
        load(args.template), args.revision, args.image, parse_placeholders(args.placeholders), deps_hash(args.pyproject)
    )
    dump(config, args.out)
    print(f"{args.out}: revision {args.revision}, image {args.image}")
    return 0


def cmd_check(args) -> int:
    config = load(args.config)
    check(config)
    print(f"{args.config}: deployable; revisions {revisions(config)}")
    return 0


def cmd_code(args) -> int:
    out = code_zip(args.package, args.revision, args.out)
    print(f"{out}: {args.package} at {args.revision}")
    return 0


def cmd_deps_hash(args) -> int:
    print(deps_hash(args.pyproject))
    return 0


def cmd_image(args) -> int:
    config = load(args.config)
    if not any(_env(app).get(DEPS_VAR) for app in applications(config)):
        print(f"warning: {args.config} names no {DEPS_VAR}; not checked against the cluster's image")
        return 0
    problems = deps_mismatches(config, args.running_deps.strip())
    if problems:
        images = sorted({str(_env(app).get(IMAGE_VAR)) for app in applications(config)})
        print("the dependencies changed (pyproject.toml): " + "; ".join(problems), file=sys.stderr)
        print(
            f"The code cannot roll alone: set docker.image in cluster/aws.yaml to {', '.join(images)}, "
            "`ray up` (cluster/README.md), then run this deploy again.",
            file=sys.stderr,
        )
        return 1
    print(f"the cluster's image has this deploy's dependencies ({args.running_deps.strip()[:12]}…)")
    return 0


def cmd_snapshot(args) -> int:
    details = _client(args.address).get_serve_details()
    Path(args.replicas_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.replicas_out).write_text(json.dumps(replicas(details), indent=2), encoding="utf-8")
    config = snapshot(details)
    if config is None:
        print("nothing is deployed yet: no rollback point to save")
        return 0
    secrets = find_secrets(config)
    if secrets:
        print("the live config holds secrets; not saving it as an artifact: " + "; ".join(secrets), file=sys.stderr)
        return 1
    dump(config, args.out)
    print(f"{args.out}: the live config (revisions {revisions(config)})")
    return 0


def cmd_wait(args) -> int:
    expected = revisions(load(args.config))
    before = (
        json.loads(Path(args.before).read_text(encoding="utf-8")) if args.before and Path(args.before).exists() else {}
    )
    deadline = time.monotonic() + args.timeout
    client = _client(args.address)
    last = ""
    while True:
        try:
            done, failure, summary = rollout(client.get_serve_details(), expected, before)
        except Exception as exc:  # the tunnel or the dashboard hiccuped: try again until the deadline
            done, failure, summary = False, None, f"serve details unavailable: {type(exc).__name__}: {exc}"
        if summary != last:
            print(f"serve: {summary}", flush=True)
            last = summary
        if failure:
            print(f"rollout failed: {failure}", file=sys.stderr)
            return 1
        if done:
            break
        if time.monotonic() > deadline:
            print(f"rollout not finished after {args.timeout:.0f} s: {summary}", file=sys.stderr)
            return 1
        time.sleep(args.interval)
    url = args.url.rstrip("/") + "/readyz"
    revision = next(iter(expected.values()))
    streak = 0
    while streak < args.ready_streak:
        status, body = _get(url)
        streak = streak + 1 if ready(status, body, revision) else 0
        print(f"{url}: {status} ({streak}/{args.ready_streak})", flush=True)
        if streak >= args.ready_streak:
            break
        if time.monotonic() > deadline:
            print(f"{url} not ready after {args.timeout:.0f} s: {status} {body[:300]!r}", file=sys.stderr)
            return 1
        time.sleep(args.interval)
    print(f"rolled out: {expected}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("code")
    p.add_argument("--package", default=PACKAGE, help="the package directory to zip")
    p.add_argument("--revision", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_code)
    p = sub.add_parser("deps-hash")
    p.add_argument("pyproject", nargs="?", default="pyproject.toml")
    p.set_defaults(run=cmd_deps_hash)
    p = sub.add_parser("render")
    p.add_argument("--template", required=True)
    p.add_argument("--revision", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--pyproject", required=True, help="the commit's pyproject.toml (its dependency hash)")
    p.add_argument("--out", required=True)
    p.add_argument("--placeholders", default="", help="REPLACE_WITH_X=value lines")
    p.set_defaults(run=cmd_render)
    p = sub.add_parser("check")
    p.add_argument("config")
    p.set_defaults(run=cmd_check)
    p = sub.add_parser("image")
    p.add_argument("--config", required=True)
    p.add_argument("--running-deps", required=True, help="the segue.deps-hash label of the head container's image")
    p.set_defaults(run=cmd_image)
    p = sub.add_parser("snapshot")
    p.add_argument("--address", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--replicas-out", required=True)
    p.set_defaults(run=cmd_snapshot)
    p = sub.add_parser("wait")
    p.add_argument("--address", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--before", help="the replicas JSON `snapshot` wrote before the deploy")
    p.add_argument("--url", required=True, help="the load balancer's base URL")
    p.add_argument("--timeout", type=float, default=1200)
    p.add_argument("--interval", type=float, default=5)
    p.add_argument("--ready-streak", type=int, default=3)
    p.set_defaults(run=cmd_wait)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, KeyError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
