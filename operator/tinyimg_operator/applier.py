"""The one place that writes to the Kubernetes API: create-or-patch children, patch status.

Writes happen only when the desired fields differ from the live object, so a reconcile of an
unchanged world sends no write. Patches are JSON merge patches of the desired object; fields the
operator set last time and no longer wants are removed with ``null`` (the previous desired
object is kept in an annotation, the way ``kubectl apply`` does it).
"""

from __future__ import annotations

import base64
import json
import tempfile
import threading
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from tinyimg import labels

LAST_APPLIED = f"{labels.GROUP}/last-applied"
PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Deployment": "deployments",
    labels.KIND: labels.PLURAL,
}
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = (10, 30)  # connect, read (seconds): a stuck call must not hold a handler thread


class ApiError(Exception):
    """A failed API call; ``transient`` says whether retrying later can help."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.transient = status not in (400, 404, 422)


def object_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{PLURALS[kind]}" if namespace else f"{base}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


def path_of(obj: dict[str, Any], with_name: bool = True) -> str:
    meta = obj["metadata"]
    return object_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"] if with_name else None)


class KubeApi:
    """JSON over the kubernetes client's connection handling (auth, TLS, pooling); thread-safe."""

    def __init__(self) -> None:
        self._client: kubernetes.client.ApiClient | None = None
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def connect(self, info: Any) -> None:
        """Configure from kopf's ``ConnectionInfo`` (what the login handler got)."""
        cfg = kubernetes.client.Configuration()
        cfg.host = info.server.rstrip("/")
        cfg.verify_ssl = not info.insecure
        cfg.ssl_ca_cert = info.ca_path or _to_file(info.ca_data)
        cfg.cert_file = info.certificate_path or _to_file(info.certificate_data)
        cfg.key_file = info.private_key_path or _to_file(info.private_key_data)
        cfg.connection_pool_maxsize = 32
        if info.token:
            cfg.api_key = {"authorization": f"{info.scheme or 'Bearer'} {info.token}"}
        elif info.username:
            basic = base64.b64encode(f"{info.username}:{info.password or ''}".encode()).decode()
            cfg.api_key = {"authorization": f"Basic {basic}"}
        self._client = kubernetes.client.ApiClient(cfg)

    def model_lock(self, namespace: str, name: str) -> threading.Lock:
        """One lock per ImageModel: its own handler and its children's handlers never race."""
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

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
            raise ApiError(response.status, _message(response.data))
        return json.loads(response.data) if response.data else {}

    def get(self, path: str) -> dict[str, Any] | None:
        return self.request("GET", path)


def _to_file(data: str | bytes | None) -> str | None:
    if not data:
        return None
    with tempfile.NamedTemporaryFile("wb", delete=False, suffix=".pem") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        return f.name


def _message(data: bytes) -> str:
    try:
        return json.loads(data).get("message") or data.decode(errors="replace")
    except ValueError:
        return data.decode(errors="replace")[:500]


def contains(desired: Any, actual: Any) -> bool:
    """Whether every field of ``desired`` has that value in ``actual`` (fields the server adds are ignored)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(contains(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(map(contains, desired, actual))
    return desired == actual


def removal_patch(previous: Any, desired: Any) -> Any:
    """``desired`` plus ``None`` for every dict key set in ``previous`` and gone from ``desired``."""
    if not (isinstance(previous, dict) and isinstance(desired, dict)):
        return desired
    patch = {k: removal_patch(previous.get(k), v) for k, v in desired.items()}
    patch.update({k: None for k in previous if k not in desired})
    return patch


def _owned(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields a patch may send: everything but identity (apiVersion/kind are in the URL)."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def apply_object(api: KubeApi, desired: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Create ``desired`` or bring the live object to it; returns (what happened, the live object)."""
    record = json.dumps(_owned(desired), sort_keys=True, separators=(",", ":"))
    stamped = {**desired, "metadata": {**desired["metadata"], "annotations": {
        **desired["metadata"].get("annotations", {}), LAST_APPLIED: record}}}
    actual = api.get(path_of(desired))
    if actual is None:
        try:
            return "created", api.request("POST", path_of(desired, with_name=False), stamped) or {}
        except ApiError as err:
            if err.status != 409:
                raise
            actual = api.get(path_of(desired)) or {}
    if contains(stamped, actual):
        return "unchanged", actual
    previous = json.loads(actual.get("metadata", {}).get("annotations", {}).get(LAST_APPLIED) or "{}")
    patch = removal_patch(previous, _owned(stamped))
    return "patched", api.request("PATCH", path_of(desired), patch, MERGE_PATCH) or {}


def apply_status(api: KubeApi, owner: dict[str, Any], status: dict[str, Any]) -> bool:
    """Patch the ImageModel's status through /status when it differs; True when written."""
    if contains(status, owner.get("status") or {}):
        return False
    api.request("PATCH", path_of(owner) + "/status", {"status": status}, MERGE_PATCH)
    return True
