"""segue-haproxy (serve_app/shell/haproxy_launcher.py) on configs rendered by Ray's own HAProxy
template: admin listeners moved to loopback, the HTTP frontend left as Serve wrote it, the
no-routes 404 made a 503, and HAProxy started with the same arguments; checked by HAProxy's
own config parser (`haproxy -c`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
from ray.serve.config import HTTPOptions

from serve_app.shell.haproxy_launcher import config_path, haproxy_binary, rewrite, rewrite_config
from serve_app.shell.ray_env import haproxy_maxconn


def rendered(tmp_path: Path, host: str, routed: bool) -> Path:
    """The config Serve writes for an HTTP frontend on ``host``, with or without the app's route."""
    cfg = HAProxyConfig(
        http_options=HTTPOptions(host=host, port=8000),
        socket_path=str(tmp_path / "admin.sock"),
        server_state_base=str(tmp_path),
        server_state_file=str(tmp_path / "state"),
        metrics_socket_path=str(tmp_path / "metrics.sock"),
    )
    backends = {
        "segue": BackendConfig(
            name="segue",
            path_prefix="/",
            app_name="segue",
            servers=[ServerConfig(name="r1", host="127.0.0.1", port=30000)],
        )
    }
    api = HAProxyApi(cfg, backends if routed else {}, config_file_path=str(tmp_path / "haproxy.cfg"))
    api._generate_config_file_internal()
    return tmp_path / "haproxy.cfg"


def binds(config: str) -> list[str]:
    return re.findall(r"^\s*bind\s+(\S+)", config, re.M)


@pytest.mark.parametrize("host,frontend", [("127.0.0.1", "127.0.0.1:8000"), ("0.0.0.0", "*:8000")])
def test_admin_listeners_move_to_loopback_and_the_frontend_stays(tmp_path, host, frontend):
    text = rendered(tmp_path, host, routed=True).read_text()
    assert set(binds(text)) == {frontend, ":9101", "*:8404"}  # Ray's template, as Serve writes it
    assert set(binds(rewrite(text))) == {frontend, "127.0.0.1:9101", "127.0.0.1:8404"}
    assert rewrite(text, "::1").count("::1:") == 2


def test_without_routes_the_default_answer_is_a_retryable_503_not_a_404(tmp_path):
    (tmp_path / "a").mkdir()
    fixed = rewrite(rendered(tmp_path / "a", "127.0.0.1", routed=False).read_text())
    default = fixed.split("\nbackend default_backend\n", 1)[1].split("\nlisten ", 1)[0]
    assert "status 503" in default and "Retry-After 1" in default and "status 404" not in default
    (tmp_path / "b").mkdir()
    routed = rendered(tmp_path / "b", "127.0.0.1", routed=True).read_text()
    assert (
        "status 404" in rewrite(routed).split("\nbackend default_backend\n", 1)[1].split("\nbackend ", 1)[0]
    )  # a real unknown path


@pytest.mark.parametrize("routed", [True, False])
def test_haproxy_accepts_the_rewritten_config(tmp_path, routed):
    path = rendered(tmp_path, "127.0.0.1", routed)
    rewrite_config(str(path), "127.0.0.1")
    check = subprocess.run([haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_config_is_found_in_serves_arguments():
    assert config_path(["-db", "-f", "/tmp/x/haproxy.cfg", "-dR", "-sf", "12"]) == "/tmp/x/haproxy.cfg"
    assert config_path(["-v"]) is None


def test_the_launcher_execs_haproxy_with_the_arguments_unchanged():
    """`segue-haproxy -v` is HAProxy's own version output (the exec kept the arguments)."""
    launcher = Path(sys.executable).parent / "segue-haproxy"
    out = subprocess.run([str(launcher), "-v"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("HAProxy version"), out.stdout + out.stderr


def test_haproxy_maxconn_is_the_most_the_open_files_limit_allows() -> None:
    assert haproxy_maxconn(20_000) == 7_900  # (20,000 - 250) / 2.5: HAProxy starts (measured: 7,900 did)
    assert haproxy_maxconn(65_536) == 26_114
    assert haproxy_maxconn(20_000, "5000") == 5_000
    with pytest.raises(ValueError, match="at most 7,900"):
        haproxy_maxconn(20_000, "20000")  # HAProxy would refuse to start: "Cannot raise FD limit to 50027"
    with pytest.raises(ValueError, match="not a number"):
        haproxy_maxconn(20_000, "lots")


def test_a_maxconn_the_limit_cannot_meet_stops_the_start_with_the_reason() -> None:
    """`make run` runs this first: the setting fails there, with what to set, not inside Serve."""
    env = {**os.environ, "RAY_SERVE_HAPROXY_MAXCONN": "10000000"}
    out = subprocess.run([sys.executable, "-m", "serve_app.shell.ray_env"], env=env, capture_output=True, text=True)
    assert out.returncode == 1 and "RAY_SERVE_HAPROXY_MAXCONN=10000000" in out.stderr and "at most" in out.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "serve_app.shell.ray_env"],
        env={**env, "RAY_SERVE_HAPROXY_MAXCONN": "100"},
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "RAY_SERVE_HAPROXY_MAXCONN=100" in ok.stdout.split()
