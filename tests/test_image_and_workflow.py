"""The node image (Dockerfile, .dockerignore) and the GitHub workflows (.github/).

Fast and offline: no docker, no network. The linters are the dev extras' binaries: hadolint
on the Dockerfile, zizmor (offline audits) and check-jsonschema (GitHub's workflow and action
schemas, vendored) on .github/. Beside them, hand-written checks of what this project relies
on, each with a broken example to show it bites; and the deploy helper
(.github/scripts/serve_deploy.py) on made-up Serve states.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
WORKFLOWS = ROOT / ".github" / "workflows"
ACTION = ROOT / ".github" / "actions" / "serve-deploy" / "action.yml"
TEMPLATE = ROOT / "cluster" / "serve_config.aws.yaml"
SHA = "0123456789abcdef0123456789abcdef01234567"
REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/segue"
FILLED = {"REPLACE_WITH_BUCKET": "segue-test-bucket", "REPLACE_WITH_BUNDLE_VERSION": "v7"}


def _load_script():
    spec = importlib.util.spec_from_file_location("serve_deploy", ROOT / ".github" / "scripts" / "serve_deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sd = _load_script()


def _tool(name: str) -> str:
    """A dev-extras binary: the venv's own, else one on PATH; fail (or skip where the extra has no wheel)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found:
        return found
    if name == "zizmor" and platform.machine() == "aarch64":
        pytest.skip("zizmor has no wheel for Linux aarch64 (excluded from the dev extras there)")
    pytest.fail(f"{name} is not installed: pip install -e '.[dev]' (it is in the dev extras)")


# ---------------------------------------------------------------- Dockerfile


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY", re.I)


def dockerfile_problems(text: str) -> list[str]:
    """What hadolint would flag in this project's kind of Dockerfile, and what we require besides."""
    ins = instructions(text)
    problems = []
    froms = [args for word, args in ins if word == "FROM"]
    for image in froms:
        ref = image.split()[0]
        name = ref.split("@")[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
        if tag is None and "@" not in ref:
            problems.append(f"untagged base image {ref}")
        if tag == "latest":
            problems.append(f"base image on latest: {ref}")
    users = [args for word, args in ins if word == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("the last USER is not a non-root user")
    for word, args in ins:
        if word == "ADD":
            problems.append(f"ADD (use COPY): {args}")
        if word == "RUN":
            if re.search(r"(^|[;&|]\s*)sudo\b", args):
                problems.append("sudo in RUN")
            for cmd in re.split(r"&&|;", args):
                if re.search(r"\bpip3?\s+install\b", cmd) and "--no-cache-dir" not in cmd:
                    problems.append(f"pip install without --no-cache-dir: {cmd.strip()}")
                if re.search(r"\bapt-get\s+install\b", cmd) and "--no-install-recommends" not in cmd:
                    problems.append(f"apt-get install without --no-install-recommends: {cmd.strip()}")
            if "apt-get install" in args and "rm -rf /var/lib/apt/lists" not in args:
                problems.append("apt lists not removed in the RUN that installs")
        if word in {"ENV", "ARG"}:
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", args) if word == "ENV" else [args.split("=")[0]]
            problems += [f"{word} {n} looks like a secret" for n in names if SECRET_NAME.search(n)]
    return problems


DOCKER_TEXT = DOCKERFILE.read_text()
DOCKER = instructions(DOCKER_TEXT)


def test_hadolint_finds_no_warning_in_the_dockerfile():
    """hadolint (failure threshold: warning; trusted registry docker.io; OCI source/revision labels required) passes."""
    hadolint = _tool("hadolint")
    args = [
        hadolint,
        "--no-color",
        "-f",
        "json",
        "--failure-threshold",
        "warning",
        "--trusted-registry",
        "docker.io",
        "--require-label",
        "org.opencontainers.image.source:text",
        "--require-label",
        "org.opencontainers.image.revision:text",
        "--warning",
        "DL3049",
    ]
    run = subprocess.run([*args, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    findings = json.loads(run.stdout or "[]")
    serious = [f for f in findings if f["level"] in {"error", "warning"}]
    assert run.returncode == 0 and not serious, run.stdout + run.stderr


def test_hadolint_fails_a_dockerfile_with_the_usual_mistakes(tmp_path):
    """The same hadolint call fails on latest, ADD, sudo, a root USER and a missing label (the test can fail)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nUSER root\nADD . /app\nRUN sudo true\nRUN pip install .\n")
    run = subprocess.run(
        [
            _tool("hadolint"),
            "--no-color",
            "--failure-threshold",
            "warning",
            "--require-label",
            "org.opencontainers.image.revision:text",
            "--warning",
            "DL3049",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    for code in ("DL3007", "DL3002", "DL3020", "DL3004", "DL3042", "DL3049"):
        assert code in run.stdout, (code, run.stdout)


def test_dockerfile_follows_the_hadolint_rules_we_rely_on():
    """Pinned base, non-root last USER, no sudo, pip --no-cache-dir, COPY not ADD, no secret-named ENV/ARG,
    clean apt."""
    assert dockerfile_problems(DOCKER_TEXT) == []


def test_dockerfile_rules_catch_a_bad_dockerfile():
    """The hand-written rules flag each mistake in a bad Dockerfile."""
    bad = "\n".join(
        [
            "FROM rayproject/ray:latest",
            "FROM python",
            "ARG GITHUB_TOKEN",
            "ENV AWS_SECRET_ACCESS_KEY=x",
            "ADD . /app",
            "RUN sudo apt-get update && apt-get install -y curl",
            "RUN pip install .",
            "USER ray",
            "USER root",
        ]
    )
    problems = " | ".join(dockerfile_problems(bad))
    for expected in (
        "latest",
        "untagged",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "ADD",
        "sudo",
        "--no-install-recommends",
        "apt lists",
        "--no-cache-dir",
        "last USER",
    ):
        assert expected in problems, (expected, problems)


def test_base_image_is_the_ray_and_python_segue_runs():
    """FROM rayproject/ray:<the venv's Ray>-py<CI's Python>-cpu, and ARG RAY_VERSION is that Ray."""
    ray_version = importlib.metadata.version("ray")
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    python = next(
        s["with"]["python-version"]
        for s in ci["jobs"]["test"]["steps"]
        if s.get("uses", "").startswith("actions/setup-python@")
    )
    froms = [args.split()[0] for word, args in DOCKER if word == "FROM"]
    assert froms == [f"rayproject/ray:{ray_version}-py{python.replace('.', '')}-cpu"]
    assert ("ARG", f"RAY_VERSION={ray_version}") in DOCKER


def test_image_runs_as_the_ray_user_with_its_files_chowned():
    """The last USER is `ray`, and every COPY gives its files to ray:users."""
    users = [args for word, args in DOCKER if word == "USER"]
    assert users[-1] == "ray"
    copies = [args for word, args in DOCKER if word == "COPY"]
    assert copies and all(args.startswith("--chown=ray:users ") for args in copies)


def test_image_takes_passwordless_sudo_away_from_ray():
    """A RUN as root removes ray's sudoers entry and checks that no NOPASSWD rule for ray is left."""
    runs = [args for word, args in DOCKER if word == "RUN"]
    sudo_run = next(r for r in runs if "/etc/sudoers" in r)
    assert "sed -i '/^ray[[:space:]]/d' /etc/sudoers" in sudo_run and "NOPASSWD" in sudo_run and "visudo -c" in sudo_run
    order = [(w, a) for w, a in DOCKER if w in {"USER", "RUN"}]
    assert order[order.index(("RUN", sudo_run)) - 1] == ("USER", "root")


def test_image_installs_the_project_without_dev_extras_and_holds_ray():
    """`pip install --no-cache-dir` of the copied sources, no [dev] or -e, Ray pinned to ARG RAY_VERSION."""
    installs = [args for word, args in DOCKER if word == "RUN" and "pip install" in args]
    assert len(installs) == 1
    install = installs[0]
    assert "pip install --no-cache-dir /tmp/segue-src" in install
    assert '"ray[serve,data]==${RAY_VERSION}"' in install
    assert "[dev]" not in install and " -e " not in install and "--editable" not in install
    assert "rm -rf /tmp/segue-src" in install


def test_image_copies_every_package_pyproject_installs_and_nothing_else():
    """The COPY sources are pyproject.toml, its readme and exactly the packages setuptools finds."""
    pyproject = _toml(ROOT / "pyproject.toml")
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and any(re.fullmatch(pat.replace("*", ".*"), p.name) for pat in patterns)
    }
    sources = set()
    for word, args in DOCKER:
        if word == "COPY":
            parts = [a for a in args.split() if not a.startswith("--")]
            sources |= set(parts[:-1])
    assert sources == {"pyproject.toml", pyproject["project"]["readme"]} | packages


def _toml(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())


def test_image_is_labelled_with_its_source_and_git_sha():
    """OCI labels: revision from ARG GIT_SHA, source from ARG SOURCE_URL, and the base image."""
    labels = " ".join(args for word, args in DOCKER if word == "LABEL")
    assert 'org.opencontainers.image.revision="${GIT_SHA}"' in labels
    assert 'org.opencontainers.image.source="${SOURCE_URL}"' in labels
    assert "org.opencontainers.image.base.name=" in labels
    assert ("ARG", "GIT_SHA=unknown") in DOCKER


def test_image_bakes_in_no_ray_settings_and_no_secret():
    """No ENV at all: Ray's settings and token paths are the environment of `ray start` (cluster/aws.yaml)."""
    assert [args for word, args in DOCKER if word == "ENV"] == []
    lowered = DOCKER_TEXT.lower()
    assert "segue-admin-token" not in lowered and "auth_token" not in lowered


def test_image_declares_no_healthcheck_of_its_own():
    """HEALTHCHECK NONE: the launcher starts the container before Serve exists; Serve and the LB check health."""
    assert ("HEALTHCHECK", "NONE") in DOCKER


# ---------------------------------------------------------------- .dockerignore


def _dockerignore_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        c = pattern[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.index("]", i)
            out += pattern[i : j + 1]
            i = j + 1
            continue
        else:
            out += re.escape(c)
        i += 1
    return out


def ignored(path: str, text: str) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching rule wins; a rule
    on a directory covers what is under it)."""
    parts = path.split("/")
    excluded = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _dockerignore_regex(line.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


IGNORE_TEXT = DOCKERIGNORE.read_text()


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "data/demo/Music Info.csv",
        "artifacts/demo/manifest.json",
        "reports/reliability.json",
        "bench-out/run/x.json",
        ".segue-admin-token",
        ".git/HEAD",
        "tests/__pycache__/conftest.cpython-311.pyc",
        "segue.egg-info/PKG-INFO",
        ".hypothesis/examples/x",
        ".pytest_cache/v/cache",
        ".env",
        ".env.production",
        "serve_app/.env",
        "serve_app/__pycache__/app.cpython-311.pyc",
        "tests/test_serve.py",
        "cluster/aws.yaml",
    ],
)
def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context(path):
    """Local state, data, outputs, tokens, .env files, git and caches are never sent to the builder."""
    assert ignored(path, IGNORE_TEXT)


def test_dockerignore_lets_in_every_file_the_dockerfile_copies():
    """Every file under each COPY source (caches aside) is in the build context."""
    sources = []
    for word, args in DOCKER:
        if word == "COPY":
            sources += [a for a in args.split() if not a.startswith("--")][:-1]
    files = []
    for source in sources:
        path = ROOT / source
        files += (
            [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        )
    assert files
    left_out = [str(p.relative_to(ROOT)) for p in files if ignored(str(p.relative_to(ROOT)), IGNORE_TEXT)]
    assert left_out == []


def test_dockerignore_matcher_follows_dockers_rules():
    """The matcher above: directory rules cover their contents, `!` re-includes, `**/` matches at any depth."""
    text = "*\n!src/\nsrc/secret\n**/.env*\n"
    assert ignored("other.txt", text) and ignored("dir/a.txt", text)
    assert not ignored("src/a.py", text) and not ignored("src/sub/b.py", text)
    assert ignored("src/secret", text) and ignored("src/.env.local", text) and ignored(".env", text)


# ---------------------------------------------------------------- workflows


def _workflow(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the key `on` as True
        data["on"] = data.pop(True)
    return data


WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
WF = {p.name: _workflow(p) for p in WORKFLOW_FILES}
ACTION_DEF = yaml.safe_load(ACTION.read_text())
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def _all_uses(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["uses"]] if isinstance(node.get("uses"), str) else []
        return found + [u for v in node.values() for u in _all_uses(v)]
    if isinstance(node, list):
        return [u for item in node for u in _all_uses(item)]
    return []


def workflow_problems(wf: dict) -> list[str]:
    """What the structure checks find: required keys, job wiring, permissions, pinning, secrets."""
    problems = []
    for key in ("on", "jobs", "permissions"):
        if key not in wf:
            problems.append(f"no top-level {key}")
    top = wf.get("permissions")
    if isinstance(top, str) or any(v != "read" for v in (top or {}).values()):
        problems.append(f"top-level permissions grant more than read: {top}")
    jobs = wf.get("jobs") or {}
    for name, job in jobs.items():
        needs = job.get("needs") or []
        for need in [needs] if isinstance(needs, str) else needs:
            if need not in jobs:
                problems.append(f"{name}: needs unknown job {need}")
        perms = job.get("permissions")
        if not isinstance(perms, dict):
            problems.append(f"{name}: no permissions of its own")
            perms = {}
        steps = job.get("steps") or []
        uses_oidc = any(str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@") for s in steps)
        for scope, level in perms.items():
            if scope == "id-token" and level == "write" and not uses_oidc:
                problems.append(f"{name}: id-token: write without an OIDC login")
            elif level not in {"read", "none"} and scope != "id-token":
                problems.append(f"{name}: {scope}: {level}")
        if "uses" in job:
            continue
        if "runs-on" not in job:
            problems.append(f"{name}: no runs-on")
        if "timeout-minutes" not in job:
            problems.append(f"{name}: no timeout-minutes")
        if not steps:
            problems.append(f"{name}: no steps")
        for i, step in enumerate(steps):
            if ("uses" in step) == ("run" in step):
                problems.append(f"{name}: step {i} needs exactly one of uses and run")
            if (
                str(step.get("uses", "")).startswith("actions/checkout@")
                and (step.get("with") or {}).get("persist-credentials") is not False
            ):
                problems.append(f"{name}: checkout keeps the token in .git (persist-credentials)")
            for key in step.get("with") or {}:
                if key in {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"}:
                    problems.append(f"{name}: step {i} passes AWS keys ({key})")
    for uses in _all_uses(wf):
        if not uses.startswith("./") and not PINNED.match(uses):
            problems.append(f"not pinned to a commit: {uses}")
    text = yaml.safe_dump(wf)
    if re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text) or "-----BEGIN" in text:
        problems.append("a plaintext key")
    return problems


def test_there_are_the_two_workflows():
    """ci.yml and deploy.yml, and the composite action deploy.yml uses."""
    assert set(WF) == {"ci.yml", "deploy.yml"} and ACTION.exists()


@pytest.mark.parametrize("name", sorted(WF))
def test_workflow_structure_permissions_pins_and_secrets(name):
    """Required keys, existing `needs`, per-job minimal permissions, SHA-pinned actions, no keys."""
    assert workflow_problems(WF[name]) == []


def test_workflow_checks_catch_a_bad_workflow():
    """The structure checks flag each mistake in a bad workflow."""
    bad = {
        "on": {"push": None},
        "permissions": "write-all",
        "jobs": {
            "a": {
                "runs-on": "ubuntu-latest",
                "needs": "nope",
                "permissions": {"id-token": "write", "contents": "write"},
                "steps": [
                    {"uses": "actions/checkout@v4"},
                    {
                        "uses": "aws-actions/configure-aws-credentials@v4",
                        "with": {"aws-access-key-id": "AKIAABCDEFGHIJKLMNOP"},
                    },
                    {"name": "empty"},
                ],
            },
            "b": {"steps": []},
        },
    }
    problems = " | ".join(workflow_problems(bad))
    for expected in (
        "more than read",
        "unknown job nope",
        "contents: write",
        "no permissions",
        "no runs-on",
        "no timeout-minutes",
        "no steps",
        "exactly one",
        "persist-credentials",
        "AWS keys",
        "not pinned to a commit: actions/checkout@v4",
        "plaintext key",
    ):
        assert expected in problems, (expected, problems)
    no_oidc = {
        "on": {},
        "permissions": {},
        "jobs": {
            "c": {
                "runs-on": "x",
                "timeout-minutes": 1,
                "permissions": {"id-token": "write"},
                "steps": [{"run": "true"}],
            }
        },
    }
    assert workflow_problems(no_oidc) == ["c: id-token: write without an OIDC login"]


def test_composite_action_pins_its_actions_and_names_its_shells():
    """The serve-deploy action: remote actions SHA-pinned, every run step with a shell."""
    steps = ACTION_DEF["runs"]["steps"]
    assert ACTION_DEF["runs"]["using"] == "composite"
    for step in steps:
        if "uses" in step:
            assert PINNED.match(step["uses"]), step["uses"]
        else:
            assert step.get("shell") == "bash", step.get("name")


def test_workflows_match_githubs_schemas():
    """check-jsonschema validates the workflows and the composite action against the vendored GitHub schemas."""
    tool = _tool("check-jsonschema")
    for schema, files in (("vendor.github-workflows", WORKFLOW_FILES), ("vendor.github-actions", [ACTION])):
        run = subprocess.run(
            [tool, "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stdout + run.stderr


def test_zizmor_finds_nothing_in_github_dir():
    """zizmor's offline audits (injection, permissions, pinning, credentials, ...) report no finding in .github/."""
    run = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", "--format", "plain", str(ROOT / ".github")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_zizmor_flags_a_template_injection(tmp_path):
    """The same zizmor call fails on a workflow that puts untrusted input into a shell (the test can fail)."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request_target\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    permissions: {}\n"
        '    steps:\n      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    run = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", "--format", "plain", str(tmp_path / ".github")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "template-injection" in run.stdout, run.stdout + run.stderr


def test_ci_runs_the_ci_script_on_python_311_for_pushes_and_pull_requests():
    """ci.yml: on push, pull_request and workflow_call; checkout, setup-python 3.11, `bash .ci/run`."""
    ci = WF["ci.yml"]
    assert {"push", "pull_request", "workflow_call"} <= set(ci["on"])
    steps = ci["jobs"]["test"]["steps"]
    assert [s.get("uses", "").split("@")[0] for s in steps[:2]] == ["actions/checkout", "actions/setup-python"]
    assert steps[1]["with"]["python-version"] == "3.11"
    assert steps[-1]["run"] == "bash .ci/run"
    assert ci["jobs"]["test"]["permissions"] == {"contents": "read"}


def test_deploy_runs_on_main_pushes_and_by_hand():
    """deploy.yml: push to main, and workflow_dispatch with deploy/rollback and the rollback inputs."""
    on = WF["deploy.yml"]["on"]
    assert on["push"] == {"branches": ["main"]}
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["action"]["options"] == ["deploy", "rollback"]
    assert {"rollback_run_id", "rollback_config", "rollback_sha"} <= set(inputs)


def test_deploy_is_test_then_image_then_approved_deploy():
    """test (the CI workflow) -> image -> deploy; deploy and rollback run in the production environment."""
    jobs = WF["deploy.yml"]["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["image"]["needs"] == "test" and jobs["deploy"]["needs"] == "image"
    for name in ("deploy", "rollback"):
        assert jobs[name]["environment"]["name"] == "production"
    assert "refs/heads/main" in jobs["image"]["if"] and "refs/heads/main" in jobs["rollback"]["if"]
    assert "rollback" in jobs["rollback"]["if"] and "workflow_dispatch" in jobs["rollback"]["if"]


def test_deploys_never_overlap():
    """One workflow-wide concurrency group that never cancels a run in progress."""
    assert WF["deploy.yml"]["concurrency"] == {"group": "segue-production-deploy", "cancel-in-progress": False}


def test_only_the_image_job_gets_an_oidc_token():
    """id-token: write on the image job alone; the deploy and rollback jobs hold no AWS credentials."""
    jobs = WF["deploy.yml"]["jobs"]
    assert WF["deploy.yml"]["permissions"] == {}
    assert [n for n, j in jobs.items() if (j.get("permissions") or {}).get("id-token") == "write"] == ["image"]
    assert jobs["deploy"]["permissions"] == {"contents": "read"}
    assert jobs["rollback"]["permissions"] == {"contents": "read", "actions": "read"}


def test_image_job_assumes_a_role_and_pushes_the_commit_sha_tag():
    """OIDC role from a variable, ECR login, `docker build --build-arg GIT_SHA`, push <repository>:<sha>."""
    steps = WF["deploy.yml"]["jobs"]["image"]["steps"]
    creds = next(s for s in steps if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@"))
    assert creds["with"]["role-to-assume"] == "${{ vars.AWS_IMAGE_ROLE_ARN }}"
    assert set(creds["with"]) <= {"role-to-assume", "role-session-name", "aws-region"}
    assert any(s.get("uses", "").startswith("aws-actions/amazon-ecr-login@") for s in steps)
    push = next(s for s in steps if s.get("id") == "push")
    assert push["env"]["GIT_SHA"] == "${{ github.sha }}"
    assert push["env"]["REPOSITORY"] == "${{ vars.SEGUE_IMAGE_REPOSITORY }}"
    assert 'image="$REPOSITORY:$GIT_SHA"' in push["run"]
    assert '--build-arg GIT_SHA="$GIT_SHA"' in push["run"] and 'docker push "$image"' in push["run"]


def test_deploy_renders_the_cluster_config_with_this_commit_and_its_image():
    """The deploy job deploys cluster/serve_config.aws.yaml with revision = the commit, image = what `image` pushed."""
    steps = WF["deploy.yml"]["jobs"]["deploy"]["steps"]
    step = next(s for s in steps if s.get("uses") == "./.github/actions/serve-deploy")
    w = step["with"]
    assert w["template"] == "cluster/serve_config.aws.yaml"
    assert w["revision"] == "${{ github.sha }}"
    assert w["image"] == "${{ vars.SEGUE_IMAGE_REPOSITORY }}:${{ github.sha }}@${{ needs.image.outputs.digest }}"
    assert w["ray-auth-token"] == "${{ secrets.RAY_AUTH_TOKEN }}"
    assert w["ssh-private-key"] == "${{ secrets.RAY_HEAD_SSH_KEY }}"
    placeholders = set(re.findall(r"REPLACE_WITH_[A-Z_]+", TEMPLATE.read_text())) - {sd.REVISION_PLACEHOLDER}
    given = set(re.findall(r"^(REPLACE_WITH_[A-Z_]+)=", w["placeholders"], re.M))
    assert placeholders <= given


def test_rollback_redeploys_a_saved_config_or_a_previous_commit():
    """Rollback: the saved config of a run (download-artifact by run id) or a commit's template and image tag."""
    steps = WF["deploy.yml"]["jobs"]["rollback"]["steps"]
    download = next(s for s in steps if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["name"] == "serve-configs" and download["with"]["run-id"] == "${{ inputs.rollback_run_id }}"
    deploys = [s for s in steps if s.get("uses") == "./.github/actions/serve-deploy"]
    by_run, by_sha = deploys
    assert by_run["with"]["config"] == "${{ runner.temp }}/rollback/${{ inputs.rollback_config }}.yaml"
    assert by_sha["with"]["template"] == "rollback-src/cluster/serve_config.aws.yaml"
    assert by_sha["with"]["revision"] == "${{ inputs.rollback_sha }}"
    assert by_sha["with"]["pyproject"] == "rollback-src/pyproject.toml"
    check = steps[0]
    assert "^[0-9a-f]{40}$" in check["run"] and "^[0-9]+$" in check["run"]


def test_serve_deploy_action_saves_the_rollback_point_before_deploying():
    """Steps in order: write file, tunnel, image check, snapshot, upload artifact, serve deploy, wait, close."""
    names = [s.get("name", "") for s in ACTION_DEF["runs"]["steps"]]
    order = [
        "Write the deploy file",
        "Open an SSH tunnel",
        "Check that the cluster's image has",
        "Save the live config",
        "Upload the configs",
        "serve deploy",
        "Wait until",
        "Close the tunnel",
    ]
    positions = [next(i for i, n in enumerate(names) if n.startswith(prefix)) for prefix in order]
    assert positions == sorted(positions)
    steps = {s.get("name", ""): s for s in ACTION_DEF["runs"]["steps"]}
    upload = next(s for n, s in steps.items() if n.startswith("Upload the configs"))
    assert (
        upload["with"]["name"] == "${{ inputs.artifact-name }}"
        and ACTION_DEF["inputs"]["artifact-name"]["default"] == "serve-configs"
    )
    deploy = next(s for n, s in steps.items() if n.startswith("serve deploy"))
    assert deploy["env"]["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" in deploy["env"]
    assert 'serve deploy "$OUT/deployed.yaml" --address http://127.0.0.1:8265' == deploy["run"]
    close = next(s for n, s in steps.items() if n.startswith("Close the tunnel"))
    assert close["if"] == "always()"


def test_ssh_tunnel_checks_the_head_host_key():
    """StrictHostKeyChecking yes with the known_hosts from the variables; the key file is removed at the end."""
    tunnel = next(s for s in ACTION_DEF["runs"]["steps"] if s.get("name", "").startswith("Open an SSH tunnel"))
    assert "StrictHostKeyChecking yes" in tunnel["run"] and "StrictHostKeyChecking no" not in tunnel["run"]
    assert "-L 127.0.0.1:8265:127.0.0.1:8265" in tunnel["run"]


def test_deploy_cli_is_the_ray_the_image_runs():
    """The action installs ray[serve]==ARG RAY_VERSION of the Dockerfile, which is the venv's Ray."""
    install = next(s for s in ACTION_DEF["runs"]["steps"] if s.get("name", "").startswith("Install the Ray CLI"))
    assert "sed -n 's/^ARG RAY_VERSION=//p' Dockerfile" in install["run"]
    assert '"ray[serve]==${ray_version}"' in install["run"]
    assert re.search(r"^ARG RAY_VERSION=(.+)$", DOCKER_TEXT, re.M).group(1) == importlib.metadata.version("ray")


# ---------------------------------------------------------------- the deploy helper


def _template() -> dict:
    assert TEMPLATE.exists(), "deploy.yml renders cluster/serve_config.aws.yaml"
    return sd.load(TEMPLATE)


def test_render_fills_the_cluster_config_and_sets_revision_and_image():
    """Placeholders filled, SEGUE_REVISION and SEGUE_IMAGE set on every application, nothing else changed."""
    template = _template()
    image = f"{REPO}:{SHA}@sha256:{'a' * 64}"
    out = sd.render(template, SHA, image, FILLED)
    for app in out["applications"]:
        env = app["runtime_env"]["env_vars"]
        assert env["SEGUE_REVISION"] == SHA and env["SEGUE_IMAGE"] == image
    assert sd.placeholders_left(out) == []
    assert "s3://segue-test-bucket/bundles/v7" in yaml.safe_dump(out)
    assert [app["runtime_env"]["py_modules"] for app in out["applications"]] == [
        [f"s3://segue-test-bucket/code/{SHA}/serve_app.zip"]
    ]
    stripped = copy.deepcopy(out)
    for app, original in zip(stripped["applications"], template["applications"]):
        app["runtime_env"]["env_vars"].pop("SEGUE_IMAGE")
        app["runtime_env"]["env_vars"]["SEGUE_REVISION"] = original["runtime_env"]["env_vars"]["SEGUE_REVISION"]
    assert stripped == sd.fill(template, {**FILLED, "REPLACE_WITH_REVISION": SHA})


def test_rendered_cluster_config_passes_serves_schema():
    """The rendered file is a valid `serve deploy` file (Ray's ServeDeploySchema)."""
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(sd.render(_template(), SHA, f"{REPO}:{SHA}", FILLED))


def test_render_refuses_unfilled_placeholders():
    """A placeholder without a value stops the deploy before the cluster is touched."""
    with pytest.raises(ValueError, match="REPLACE_WITH_BUNDLE_VERSION"):
        sd.render(_template(), SHA, f"{REPO}:{SHA}", {"REPLACE_WITH_BUCKET": "b"})


@pytest.mark.parametrize(
    "env",
    [
        {"SEGUE_ADMIN_TOKEN": "x" * 20},
        {"RAY_AUTH_TOKEN": "t"},
        {"AWS_SECRET_ACCESS_KEY": "k"},
        {"NOTE": "AKIAABCDEFGHIJKLMNOP"},
    ],
)
def test_render_refuses_a_secret_in_the_deploy_file(env):
    """Tokens, passwords and AWS keys never go into a deploy file (or the artifacts made from it)."""
    template = {
        "applications": [
            {
                "name": "segue",
                "import_path": "serve_app.app:build_app",
                "runtime_env": {"env_vars": {"SEGUE_REVISION": "1", **env}},
            }
        ]
    }
    with pytest.raises(ValueError, match="secret"):
        sd.render(template, SHA, f"{REPO}:{SHA}")


def test_render_allows_the_admin_token_file_and_kms_key_id():
    """A path to the token file and a KMS key id are not secrets."""
    template = {
        "applications": [
            {
                "name": "segue",
                "runtime_env": {
                    "env_vars": {"SEGUE_ADMIN_TOKEN_FILE": "/home/ray/.segue/admin-token", "SEGUE_S3_KMS_KEY_ID": "k-1"}
                },
            }
        ]
    }
    assert (
        sd.render(template, SHA, f"{REPO}:{SHA}")["applications"][0]["runtime_env"]["env_vars"]["SEGUE_REVISION"] == SHA
    )


def test_render_sets_image_uri_where_the_template_runs_its_own_image():
    """A template with runtime_env.image_uri gets the new image there too."""
    template = {"applications": [{"name": "segue", "runtime_env": {"image_uri": f"{REPO}:old", "env_vars": {}}}]}
    assert sd.render(template, SHA, f"{REPO}:{SHA}")["applications"][0]["runtime_env"]["image_uri"] == f"{REPO}:{SHA}"


@pytest.mark.parametrize(
    "revision,image",
    [
        ("", f"{REPO}:x"),
        ("a b", f"{REPO}:x"),
        (SHA, REPO),
        (SHA, ""),
        (SHA, f"{REPO}:{SHA}@"),
        (SHA, f"{REPO}:{SHA}@sha256:abc"),
    ],
)
def test_render_refuses_a_bad_revision_or_an_untagged_image(revision, image):
    """The revision is one word; the image has a tag or a digest."""
    with pytest.raises(ValueError):
        sd.render({"applications": [{"name": "segue"}]}, revision, image)


def test_render_command_writes_the_deploy_file(tmp_path):
    """`serve_deploy.py render` (the action's call) writes a file that `check` accepts."""
    out = tmp_path / "deployed.yaml"
    placeholders = "\n".join(f"{k}={v}" for k, v in FILLED.items()) + "\nREPLACE_WITH_KMS_KEY_ID=\n"
    assert (
        sd.main(
            [
                "render",
                "--template",
                str(TEMPLATE),
                "--revision",
                SHA,
                "--image",
                f"{REPO}:{SHA}",
                "--pyproject",
                str(ROOT / "pyproject.toml"),
                "--placeholders",
                placeholders,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sd.main(["check", str(out)]) == 0
    assert sd.revisions(sd.load(out)) == {"segue": SHA}
    env = sd.load(out)["applications"][0]["runtime_env"]["env_vars"]
    assert env["SEGUE_DEPS"] == sd.deps_hash(ROOT / "pyproject.toml")


def test_check_refuses_a_file_without_applications_or_revision(tmp_path):
    """A rollback file must name applications, each with its SEGUE_REVISION."""
    empty, bare = tmp_path / "empty.yaml", tmp_path / "bare.yaml"
    empty.write_text("applications: []\n")
    bare.write_text("applications:\n  - name: segue\n    import_path: serve_app.app:build_app\n")
    assert sd.main(["check", str(empty)]) == 1 and sd.main(["check", str(bare)]) == 1
    assert sd.main(["check", str(tmp_path / "missing.yaml")]) == 1


def _details(
    revision: str,
    replicas: dict[str, list[tuple[str, str]]],
    status="RUNNING",
    dep_status="HEALTHY",
    image: str | None = None,
) -> dict:
    env = {"SEGUE_REVISION": revision} | ({"SEGUE_IMAGE": image} if image else {})
    return {
        "proxy_location": "EveryNode",
        "http_options": {
            "host": "0.0.0.0",
            "port": 8000,
            "root_path": "",
            "request_timeout_s": None,
            "keep_alive_timeout_s": 65,
            "ssl_keyfile_password": "hunter2",
        },
        "applications": {
            "segue": {
                "name": "segue",
                "status": status,
                "message": "",
                "deployed_app_config": {
                    "name": "segue",
                    "route_prefix": "/",
                    "import_path": "serve_app.app:build_app",
                    "runtime_env": {"env_vars": env},
                    "deployments": [{"name": "Ingress", "max_ongoing_requests": 100}],
                },
                "deployments": {
                    name: {
                        "name": name,
                        "status": dep_status,
                        "message": "boom" if dep_status == "DEPLOY_FAILED" else "",
                        "replicas": [{"replica_id": rid, "state": state} for rid, state in reps],
                    }
                    for name, reps in replicas.items()
                },
            }
        },
    }


OLD = {"Ingress": [("i1", "RUNNING"), ("i2", "RUNNING")], "Content": [("c1", "RUNNING"), ("c2", "RUNNING")]}
NEW = {"Ingress": [("i3", "RUNNING"), ("i4", "RUNNING")], "Content": [("c3", "RUNNING"), ("c4", "RUNNING")]}


def test_snapshot_is_a_deploy_file_serve_accepts_without_the_tls_password():
    """The live details become a valid deploy file (ServeDeploySchema) with only the HTTP options that matter."""
    from ray.serve.schema import ServeDeploySchema

    config = sd.snapshot(_details("old", OLD))
    ServeDeploySchema.model_validate(config)
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000, "root_path": "", "keep_alive_timeout_s": 65}
    assert sd.revisions(config) == {"segue": "old"}
    assert sd.snapshot({"applications": {}}) is None


def test_rollout_is_done_only_when_every_old_replica_is_gone():
    """New revision live but old replicas running: not done; all replicas new, RUNNING and HEALTHY: done."""
    before = sd.replicas(_details("old", OLD))
    assert before == {"segue": {"revision": "old", "replicas": ["i1", "i2", "c1", "c2"]}}
    expected = {"segue": "new"}
    assert sd.rollout(_details("old", OLD), expected, before)[:2] == (False, None)
    mixed = {"Ingress": [("i1", "RUNNING"), ("i3", "RUNNING")], "Content": NEW["Content"]}
    done, failure, summary = sd.rollout(_details("new", mixed, dep_status="UPDATING"), expected, before)
    assert (done, failure) == (False, None) and "1 from before" in summary
    starting = {"Ingress": [("i3", "STARTING"), ("i4", "RUNNING")], "Content": NEW["Content"]}
    assert sd.rollout(_details("new", starting), expected, before)[0] is False
    assert sd.rollout(_details("new", NEW, status="DEPLOYING"), expected, before)[0] is False
    assert sd.rollout(_details("new", NEW), expected, before)[:2] == (True, None)


def test_rollout_of_an_unchanged_revision_needs_no_new_replicas():
    """Redeploying the live revision (e.g. a re-run) is done when the application is healthy."""
    before = sd.replicas(_details("same", OLD))
    assert sd.rollout(_details("same", OLD), {"segue": "same"}, before)[:2] == (True, None)


def test_rollout_stops_at_a_failed_deploy():
    """DEPLOY_FAILED of the application or of a deployment ends the wait with its message."""
    before = sd.replicas(_details("old", OLD))
    done, failure, _ = sd.rollout(_details("new", NEW, status="DEPLOY_FAILED"), {"segue": "new"}, before)
    assert not done and "DEPLOY_FAILED" in failure
    done, failure, _ = sd.rollout(_details("new", NEW, dep_status="DEPLOY_FAILED"), {"segue": "new"}, before)
    assert not done and "boom" in failure


def test_readyz_counts_only_a_ready_answer_of_the_expected_revision():
    """200 with ready true (and the revision, when /readyz reports one); anything else is not ready."""
    assert sd.ready(200, b'{"ready": true, "model_version": "v7"}', "new")
    assert not sd.ready(503, b'{"ready": false}', "new")
    assert not sd.ready(200, b'{"ready": false}', "new")
    assert not sd.ready(200, b"<html>", "new")
    assert not sd.ready(200, b'{"ready": true, "revision": "old"}', "new")
    assert sd.ready(200, b'{"ready": true, "revision": "new"}', "new")


DEPS = "d" * 64


def test_image_check_compares_the_dependency_hash_with_the_heads_image_label():
    """The head's image must carry the deploy file's SEGUE_DEPS as its segue.deps-hash label; a file without
    one is not checked."""
    config = sd.render({"applications": [{"name": "segue"}]}, SHA, f"{REPO}:{SHA}", deps=DEPS)
    assert sd.deps_mismatches(config, DEPS) == []
    assert "the cluster's image has" in sd.deps_mismatches(config, "e" * 64)[0]
    assert "no label" in sd.deps_mismatches(config, "")[0]
    no_deps = {"applications": [{"name": "segue", "runtime_env": {"env_vars": {"SEGUE_REVISION": SHA}}}]}
    assert sd.deps_mismatches(no_deps, "") == []


def test_image_command_fails_with_what_to_do(tmp_path, capsys):
    """`serve_deploy.py image` exits 1 and says to `ray up` this commit's image when the dependencies changed."""
    path = tmp_path / "deployed.yaml"
    sd.dump(sd.render({"applications": [{"name": "segue"}]}, SHA, f"{REPO}:{SHA}", deps=DEPS), path)
    assert sd.main(["image", "--config", str(path), "--running-deps", "e" * 64]) == 1
    err = capsys.readouterr().err
    assert "ray up" in err and f"{REPO}:{SHA}" in err
    assert sd.main(["image", "--config", str(path), "--running-deps", DEPS + "\n"]) == 0


def test_deps_hash_follows_the_dependency_list_only(tmp_path):
    """Order and spaces do not change the hash; a changed dependency does; dev extras do not count."""

    def write(deps: list[str], dev: list[str]) -> Path:
        path = tmp_path / f"p{len(list(tmp_path.iterdir()))}.toml"
        path.write_text(f"[project]\ndependencies = {deps!r}\n[project.optional-dependencies]\ndev = {dev!r}\n")
        return path

    base = sd.deps_hash(write(["numpy>=2.0", "ray[serve]>=2.60"], ["pytest"]))
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert sd.deps_hash(write(["ray[serve] >= 2.60", "numpy>=2.0"], ["pytest>=9", "moto"])) == base
    assert sd.deps_hash(write(["numpy>=2.1", "ray[serve]>=2.60"], ["pytest"])) != base


def test_code_zip_is_the_package_under_one_top_directory_with_its_revision(tmp_path):
    """serve_app-<rev>/serve_app/…: Ray strips the one top directory, leaving serve_app importable; _build.py says
    the revision (a stale one is replaced), no caches, and the same tree always gives the same bytes."""
    import zipfile

    package = tmp_path / "serve_app"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "app.py").write_text("X = 1\n")
    (package / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (package / "_build.py").write_text("REVISION = 'stale'\n")
    first = sd.code_zip(package, SHA, tmp_path / "a" / "serve_app.zip")
    with zipfile.ZipFile(first) as zf:
        names = sorted(zf.namelist())
        assert names == [f"serve_app-{SHA}/serve_app/{n}" for n in ("__init__.py", "_build.py", "app.py")]
        zf.extractall(tmp_path / "unzipped")
    build = (tmp_path / "unzipped" / f"serve_app-{SHA}" / "serve_app" / "_build.py").read_text()
    namespace: dict = {}
    exec(build, namespace)  # noqa: S102 (the file just written)
    assert namespace["REVISION"] == SHA
    assert sd.code_zip(package, SHA, tmp_path / "b" / "serve_app.zip").read_bytes() == first.read_bytes()
    with pytest.raises(ValueError):
        sd.code_zip(package, "a b", tmp_path / "c.zip")


def test_code_command_zips_the_real_package(tmp_path):
    """`serve_deploy.py code` (the image job's call) zips serve_app, every module of it."""
    import zipfile

    out = tmp_path / "serve_app.zip"
    assert sd.main(["code", "--package", str(ROOT / "serve_app"), "--revision", SHA, "--out", str(out)]) == 0
    modules = {p.name for p in (ROOT / "serve_app").glob("*.py")} | {"_build.py"}
    with zipfile.ZipFile(out) as zf:
        assert {Path(n).name for n in zf.namelist()} >= modules


def test_image_job_labels_the_dependency_hash_and_uploads_the_code_zip_with_sse():
    """The image carries segue.deps-hash; the zip goes to code/<sha>/serve_app.zip, where the template's py_modules
    points, with SSE (KMS when the bucket has a key), from the image job's OIDC role."""
    steps = WF["deploy.yml"]["jobs"]["image"]["steps"]
    push = next(s for s in steps if s.get("id") == "push")
    assert (
        "serve_deploy.py deps-hash pyproject.toml" in push["run"] and '--label "segue.deps-hash=$deps"' in push["run"]
    )
    upload = next(s for s in steps if s.get("name", "").startswith("Upload the code zip"))
    assert upload["env"]["GIT_SHA"] == "${{ github.sha }}" and upload["env"]["BUCKET"] == "${{ vars.SEGUE_BUCKET }}"
    assert 'serve_deploy.py code --package serve_app --revision "$GIT_SHA"' in upload["run"]
    assert '"s3://$BUCKET/code/$GIT_SHA/serve_app.zip" "${sse[@]}"' in upload["run"]
    assert "--sse AES256" in upload["run"] and "--sse aws:kms --sse-kms-key-id" in upload["run"]
    [app] = _template()["applications"]
    assert app["runtime_env"]["py_modules"] == ["s3://REPLACE_WITH_BUCKET/code/REPLACE_WITH_REVISION/serve_app.zip"]
    check = next(
        s for s in ACTION_DEF["runs"]["steps"] if s.get("name", "").startswith("Check that the cluster's image")
    )
    assert '\\"segue.deps-hash\\"' in check["run"] and "--running-deps" in check["run"]


def test_placeholder_lines_are_parsed_strictly():
    """`REPLACE_WITH_X=value` lines only; an empty value is left unfilled."""
    assert sd.parse_placeholders("REPLACE_WITH_A=1\n\n REPLACE_WITH_B = two \nREPLACE_WITH_C=\n") == {
        "REPLACE_WITH_A": "1",
        "REPLACE_WITH_B": "two",
    }
    with pytest.raises(ValueError):
        sd.parse_placeholders("BUCKET=x")
