"""The operator's API client over real HTTP on loopback (a small stand-in API server): JSON in and
out, the API server's Status message in errors, 404 on GET as None, no answer as transient."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tinyimg.kube.connection import KubeConnection
from tinyimg.kube.errors import KubeApiError
from tinyimg_operator.kubeapi import KubeApi


class Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None, str | None, bytes]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        Handler.seen.append((self.command, self.path, self.headers.get("authorization"),
                             self.headers.get("content-type"), body))
        status, payload = {
            "/api/v1/namespaces/a/configmaps/x": (200, {"kind": "ConfigMap", "metadata": {"name": "x"}}),
            "/api/v1/namespaces/a/configmaps": (201, {"kind": "ConfigMap", "metadata": {"name": "y"}}),
            "/api/v1/namespaces/a/configmaps/bad": (422, {"kind": "Status", "message": "data: Invalid value"}),
            "/api/v1/namespaces/a/configmaps/busy": (409, {"kind": "Status", "message": "the object has been modified"}),
        }.get(self.path, (404, {"kind": "Status", "message": "not found"}))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture()
def api_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Handler.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_json_in_and_out_with_the_connections_credentials(api_server):
    api = KubeApi()
    api.connect(KubeConnection(api_server, "a", authorization="Bearer t0ken"))
    assert api.get("/api/v1/namespaces/a/configmaps/x") == {"kind": "ConfigMap", "metadata": {"name": "x"}}
    created = api.request("POST", "/api/v1/namespaces/a/configmaps", {"metadata": {"name": "y"}})
    assert created == {"kind": "ConfigMap", "metadata": {"name": "y"}}
    api.request("PATCH", "/api/v1/namespaces/a/configmaps/x", {"data": {"k": "v"}}, "application/merge-patch+json")
    assert [(m, auth, ctype, json.loads(body) if body else None) for m, _, auth, ctype, body in Handler.seen] == [
        ("GET", "Bearer t0ken", "application/json", None),
        ("POST", "Bearer t0ken", "application/json", {"metadata": {"name": "y"}}),
        ("PATCH", "Bearer t0ken", "application/merge-patch+json", {"data": {"k": "v"}}),
    ]
    api.close()


def test_errors_carry_the_api_servers_message_and_whether_to_retry(api_server):
    api = KubeApi()
    api.connect(KubeConnection(api_server, "a"))
    assert api.get("/api/v1/namespaces/a/configmaps/missing") is None  # 404 on GET: not there
    with pytest.raises(KubeApiError) as err:
        api.request("PUT", "/api/v1/namespaces/a/configmaps/bad", {})
    assert (err.value.status, err.value.message, err.value.transient) == (422, "data: Invalid value", False)
    with pytest.raises(KubeApiError) as err:
        api.request("PUT", "/api/v1/namespaces/a/configmaps/busy", {})
    assert (err.value.status, err.value.transient) == (409, True)
    with pytest.raises(KubeApiError) as err:
        api.request("DELETE", "/api/v1/namespaces/a/configmaps/missing")
    assert (err.value.status, err.value.message) == (404, "not found")


def test_no_answer_is_transient():
    api = KubeApi()
    api.connect(KubeConnection("http://127.0.0.1:9", "a"))  # the discard port: nothing listens
    with pytest.raises(KubeApiError) as err:
        api.get("/api/v1/namespaces")
    assert err.value.status == 0 and err.value.transient


def test_requests_before_login_fail_as_transient():
    with pytest.raises(KubeApiError, match="not logged in") as err:
        KubeApi().get("/api/v1/namespaces")
    assert err.value.transient
