"""Real Redis and a real S3 double as processes on loopback, for the durable-jobs tests.

Redis is Debian's ``redis-server`` (``.ci/run`` installs it), started with no persistence in a
temporary directory; ``stop``/``start`` on the same port stand for an outage and its end. S3 is
``moto``'s server mode (no real S3 is reachable here), from its own virtual environment under
``.tools/moto`` (``make tools``): moto depends on botocore, whose python-dateutil bound excludes
the one the kubernetes client needs, so it cannot share the test venv. moto serves the S3 API
over HTTP, presigned GETs included, but does not verify signatures: a test of an altered S3 URL
would pass against it whatever the code did, so altered and expired URLs are tested on the
directory backend, whose checks are ours.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from bench.harness import free_port, wait_http

REPO = Path(__file__).resolve().parents[2]
MOTO_SERVER = REPO / ".tools" / "moto" / "bin" / "moto_server"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@dataclass
class RedisProcess:
    """``redis-server`` on a fixed port; stop and start it again to simulate an outage."""

    workdir: Path
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.popen = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=(self.workdir / "redis.log").open("a"), stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self.popen.poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {self.workdir / 'redis.log'}") from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    server = RedisProcess(tmp_path).start()
    yield server
    server.stop()


@dataclass
class S3Double:
    endpoint: str
    bucket: str
    popen: subprocess.Popen


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Double]:
    if not MOTO_SERVER.exists():
        pytest.skip(f"{MOTO_SERVER} is missing: run `make tools`")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    popen = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log.open("w"),
                             stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", 30, popen, log)
        assert httpx.put(f"{endpoint}/results").status_code == 200  # CreateBucket
        yield S3Double(endpoint, "results", popen)
    finally:
        popen.kill()
        popen.wait(10)
