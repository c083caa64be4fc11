"""Where the Kubernetes API server is and how to prove who we are: one reader for the router and
the operator, and one way to turn it into an httpx client (sync or async).

In a pod: the service account (token re-read on every request, as Kubernetes rotates it in
place; the cluster CA; the pod's namespace). Elsewhere: the current kubeconfig context, read by
the kubernetes client's own loader (so every kubeconfig form it knows works: inline or file
certificates, tokens, basic auth, exec plugins), once, when called, so the current
``$KUBECONFIG`` counts. TLS material is loaded into an ``ssl.SSLContext`` when a client is built.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(ValueError):
    pass


class TokenFileAuth(httpx.Auth):
    """Bearer token read from a file on every request: Kubernetes rotates it in place."""

    def __init__(self, path: Path):
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.path.read_text().strip()}"
        yield request


@dataclass(frozen=True)
class KubeConnection:
    """How to reach one API server. ``authorization`` is a whole header value (``Bearer …``,
    ``Basic …``); ``token_file`` instead is read per request."""

    server: str
    namespace: str = "default"
    authorization: str | None = None
    token_file: Path | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext:
        """The CA to trust (or none, when ``insecure``) and the client certificate, loaded now."""
        try:
            if self.insecure:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            else:
                context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as err:
            raise KubeConfigError(f"cannot load the API server's TLS material: {err}") from None
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``: base URL, auth, TLS."""
        tls = self.server.startswith("https://")
        return {
            "base_url": self.server,
            "auth": TokenFileAuth(self.token_file) if self.token_file else None,
            "headers": {"Authorization": self.authorization} if self.authorization else {},
            "verify": self.ssl_context() if tls else True,
        }

    def bearer_token(self) -> str | None:
        """The bearer token as of now (read from ``token_file`` when there is one), else None."""
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        scheme, _, token = (self.authorization or "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None


def load_kube_connection(namespace: str | None = None) -> KubeConnection:
    """In-cluster service account when there is one, else the current kubeconfig context.
    ``namespace``: the one to work in; default the pod's own, or the context's, or ``default``."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if host and (SERVICE_ACCOUNT_DIR / "token").exists():
        own = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip()
        return KubeConnection(
            server=f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}",
            namespace=namespace or own,
            token_file=SERVICE_ACCOUNT_DIR / "token",
            ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
        )
    return load_kubeconfig(os.environ.get("KUBECONFIG"), namespace)


def load_kubeconfig(path: str | None, namespace: str | None = None) -> KubeConnection:
    """The current context of the kubeconfig at ``path`` (None: ``~/.kube/config``)."""
    try:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=path, client_configuration=configuration)
        _, active = config.list_kube_config_contexts(config_file=path)
    except Exception as err:  # the kubernetes client raises several unrelated types here
        raise KubeConfigError(f"no in-cluster service account and no usable kubeconfig: {err}") from None
    return KubeConnection(
        server=configuration.host.rstrip("/"),
        namespace=namespace or active.get("context", {}).get("namespace") or "default",
        authorization=configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken"),
        ca_file=configuration.ssl_ca_cert,
        cert_file=configuration.cert_file,
        key_file=configuration.key_file,
        insecure=not configuration.verify_ssl,
    )
