"""The operator's HTTP client for the Kubernetes API: JSON in and out, errors as ApiError.

It rides on the kubernetes client's connection handling (auth, TLS, pooling). Credentials kopf
hands over as data (not paths) are written to files in one private directory, because the client
reads certificates from files when it opens each connection; the directory is removed when the
client is replaced (a new login) or closed, and at exit.
"""

from __future__ import annotations

import atexit
import base64
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

REQUEST_TIMEOUT = (10, 30)  # connect, read (seconds): a stuck call must not hold a handler thread


class ApiError(Exception):
    """A failed API call; ``transient`` says whether retrying later can help."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.transient = status not in (400, 404, 422)


class CredentialFiles:
    """PEM data written to files in one private (0700) directory, removed by ``remove()``."""

    def __init__(self) -> None:
        self.directory: Path | None = None

    def write(self, name: str, data: str | bytes | None) -> str | None:
        if not data:
            return None
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="tinyimg-operator-"))
        path = self.directory / name
        path.touch(mode=0o600)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def remove(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


class KubeApi:
    """JSON over the kubernetes client; thread-safe (the client pools connections)."""

    def __init__(self) -> None:
        self._client: kubernetes.client.ApiClient | None = None
        self._files = CredentialFiles()
        atexit.register(self.close)

    def connect(self, info: Any) -> None:
        """Configure from kopf's ``ConnectionInfo`` (what the login handler got)."""
        self.close()
        cfg = kubernetes.client.Configuration()
        cfg.host = info.server.rstrip("/")
        cfg.verify_ssl = not info.insecure
        cfg.ssl_ca_cert = info.ca_path or self._files.write("ca.pem", info.ca_data)
        cfg.cert_file = info.certificate_path or self._files.write("cert.pem", info.certificate_data)
        cfg.key_file = info.private_key_path or self._files.write("key.pem", info.private_key_data)
        cfg.connection_pool_maxsize = 32
        if info.token:
            cfg.api_key = {"authorization": f"{info.scheme or 'Bearer'} {info.token}"}
        elif info.username:
            basic = base64.b64encode(f"{info.username}:{info.password or ''}".encode()).decode()
            cfg.api_key = {"authorization": f"Basic {basic}"}
        self._client = kubernetes.client.ApiClient(cfg)

    def close(self) -> None:
        """Drop the connection pool and the credential files written for it."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._files.remove()

    @property
    def credential_dir(self) -> Path | None:
        return self._files.directory

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict[str, Any] | None:
        if self._client is None:
            raise ApiError(0, "not logged in yet")
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            _, url, headers, payload, _ = self._client.param_serialize(
                method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
            )
            response = self._client.call_api(
                method, url, header_params=headers, body=payload, _request_timeout=REQUEST_TIMEOUT
            )
            response.read()
        except (ApiException, OSError) as err:
            raise ApiError(getattr(err, "status", 0) or 0, str(err)) from None
        except Exception as err:  # urllib3 connection errors and the like: retry later
            raise ApiError(0, f"{type(err).__name__}: {err}") from None
        if response.status == 404 and method == "GET":
            return None
        if response.status >= 400:
            raise ApiError(response.status, _message(response.data or b""))
        return json.loads(response.data) if response.data else {}

    def get(self, path: str) -> dict[str, Any] | None:
        return self.request("GET", path)


def _message(data: bytes) -> str:
    try:
        return json.loads(data).get("message") or data.decode(errors="replace")
    except ValueError:
        return data.decode(errors="replace")[:500]
