"""One credentials reader for the router and the operator (tinyimg.kube.connection), exercised
against real loopback servers: kubeconfig forms, the in-cluster service account with a token
rotated in place, and TLS with a client certificate that both clients present."""

import base64
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from tests.support.tls import make_certificates
from tinyimg.kube import connection as kubeconn
from tinyimg.kube.connection import KubeConfigError, KubeConnection, load_kube_connection
from tinyimg.router.discovery_kube import build_watch_client
from tinyimg_operator.handlers import build_connection_info
from tinyimg_operator.kubeapi import KubeApi


class Echo(BaseHTTPRequestHandler):
    """Answers who asked: the Authorization header and the client certificate's common name."""

    def do_GET(self):
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        data = json.dumps({"authorization": self.headers.get("authorization"), "cn": subject.get("commonName")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def serve(tls: ssl.SSLContext | None = None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


def write_kubeconfig(path, server, user, cluster_extra=None, namespace="models"):
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, **(cluster_extra or {})}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": namespace}}],
    }))
    return path


@pytest.fixture()
def outside_a_cluster(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return monkeypatch


def test_kubeconfig_token_and_namespace(tmp_path, outside_a_cluster):
    outside_a_cluster.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1/", {"token": "abc"})))
    conn = load_kube_connection()
    assert (conn.server, conn.namespace, conn.authorization, conn.insecure) == ("http://127.0.0.1:1", "models", "Bearer abc", False)
    assert load_kube_connection("elsewhere").namespace == "elsewhere"
    info = build_connection_info(conn)  # what kopf is handed: the same server and credentials
    assert (info.server, info.scheme, info.token, info.default_namespace) == ("http://127.0.0.1:1", "Bearer", "abc", "models")


def test_kubeconfig_basic_auth_becomes_a_basic_header(tmp_path, outside_a_cluster):
    outside_a_cluster.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", {"username": "ann", "password": "pw"})))
    conn = load_kube_connection()
    assert conn.authorization == "Basic " + base64.b64encode(b"ann:pw").decode()
    assert (build_connection_info(conn).scheme, conn.bearer_token()) == ("Basic", None)


def test_no_kubeconfig_is_a_clear_error(tmp_path, outside_a_cluster):
    outside_a_cluster.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(KubeConfigError, match="no in-cluster service account and no usable kubeconfig"):
        load_kube_connection()


def test_in_cluster_token_is_read_on_every_request(tmp_path, monkeypatch):
    server, url = serve()
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "namespace").write_text("models\n")
    monkeypatch.setattr(kubeconn, "SERVICE_ACCOUNT_DIR", tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    conn = load_kube_connection()
    assert (conn.server, conn.namespace, conn.ca_file) == ("https://127.0.0.1:443", "models", str(tmp_path / "ca.crt"))
    conn = KubeConnection(url, conn.namespace, token_file=conn.token_file)  # the same auth, on the loopback server
    api = KubeApi()
    api.connect(conn)
    assert api.get("/")["authorization"] == "Bearer first"
    (tmp_path / "token").write_text("rotated\n")  # the kubelet rotates it in place
    assert api.get("/")["authorization"] == "Bearer rotated"
    assert build_connection_info(conn).token == "rotated"
    api.close()
    server.shutdown()


async def test_tls_with_a_client_certificate_for_both_clients(tmp_path, outside_a_cluster):
    certs = make_certificates(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs.server_cert, certs.server_key)
    tls.load_verify_locations(certs.ca)
    tls.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
    server, url = serve(tls)
    inline = {
        "client-certificate-data": base64.b64encode(certs.client_cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(certs.client_key.read_bytes()).decode(),
    }
    ca = {"certificate-authority-data": base64.b64encode(certs.ca.read_bytes()).decode()}
    outside_a_cluster.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", url, inline, ca)))
    conn = load_kube_connection()

    api = KubeApi()  # the operator's client
    api.connect(conn)
    assert api.get("/") == {"authorization": None, "cn": "tinyimg-test-client"}
    api.close()
    async with build_watch_client(conn) as router_client:  # the router's
        assert (await router_client.get("/")).json()["cn"] == "tinyimg-test-client"

    # Without the CA the server's certificate is refused; with insecure-skip-tls-verify it is not checked.
    untrusting = KubeConnection(url, cert_file=conn.cert_file, key_file=conn.key_file)
    with httpx.Client(**untrusting.client_options()) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get("/")
    outside_a_cluster.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc2", url, inline, {"insecure-skip-tls-verify": True})))
    with httpx.Client(**load_kube_connection().client_options()) as client:
        assert client.get("/").json()["cn"] == "tinyimg-test-client"
    server.shutdown()


def test_unreadable_tls_material_is_a_clear_error(tmp_path):
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(KubeConfigError, match="TLS material"):
        KubeConnection("https://127.0.0.1:1", ca_file=str(tmp_path / "bad.pem")).client_options()
