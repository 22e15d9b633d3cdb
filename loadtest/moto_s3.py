"""A loopback S3 endpoint (moto) and the AWS variables that point boto3 at it: the S3 of
``make reliability`` and of the tests' ``s3_server`` fixture (tests/conftest.py)."""

from __future__ import annotations

from typing import Any


def start_moto_s3(credential: str) -> tuple[Any, dict[str, str]]:
    """A started ``ThreadedMotoServer`` on 127.0.0.1 (a free port; ``stop()`` it when done) and the
    variables for it: endpoint URL, ``credential`` as key id and secret, region us-east-1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": credential,
        "AWS_SECRET_ACCESS_KEY": credential,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
