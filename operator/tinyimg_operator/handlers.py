"""kopf glue: settings, login, and the handlers that run the reconcile.

Run: ``kopf run -m tinyimg_operator.handlers --standalone --namespace NS`` (or
``--all-namespaces``), or ``tinyimg-operator run``. Handlers are sync: kopf runs them in its
thread pool, where the API client's blocking calls belong.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, cast

import httpx
import kopf

from tinyimg.core import labels
from tinyimg.core.tracing import configure_tracing
from tinyimg.kube.connection import KubeConfigError, KubeConnection, load_kube_connection
from tinyimg.kube.errors import KubeApiError
from tinyimg_operator.applier import post_event as write_event
from tinyimg_operator.autoscaler import load_autoscaler_settings, run_autoscaler
from tinyimg_operator.autoscaling import Decision
from tinyimg_operator.imagemodel import InvalidSpecError
from tinyimg_operator.kubeapi import KubeApi
from tinyimg_operator.locks import ModelLocks
from tinyimg_operator.reconcile import read_imagemodel, reconcile_imagemodel, utc_now
from tinyimg_operator.settings import load_build_settings

log = logging.getLogger("tinyimg_operator")
RETRY_DELAY_SECONDS = 10
# How often each ImageModel's pods are read (their config generation, a canary's counters) and
# its rollout moves on: TINYIMG_ROLLOUT_INTERVAL_SECONDS (short in tests), read at start.
ROLLOUT_INTERVAL_SECONDS = float(os.environ.get("TINYIMG_ROLLOUT_INTERVAL_SECONDS") or 5.0)
# Values: a label value or kopf.PRESENT (whose type kopf does not export).
OWNED: dict[str, Any] = {labels.MANAGED_BY: labels.OPERATOR_NAME, labels.MODEL: kopf.PRESENT}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """All operator settings, in one place (env: TINYIMG_SERVER_IMAGE, TINYIMG_IMAGE_PULL_POLICY,
    TINYIMG_ALLOWED_IMAGES; traces: the standard OTEL_* variables, tinyimg.core.tracing)."""
    configure_tracing("tinyimg-operator")
    memo.build = load_build_settings()
    memo.autoscaler = load_autoscaler_settings()
    memo.api = KubeApi()  # connected by login(); shared by every handler's memo copy
    memo.locks = ModelLocks()
    memo.models = set()  # (namespace, name) of every ImageModel seen (track_imagemodel)
    memo.rollouts_stopped = threading.Event()
    memo.rollouts = threading.Thread(target=follow_rollouts, args=(memo, memo.rollouts_stopped),
                                     name="rollouts", daemon=True)
    memo.rollouts.start()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=labels.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=labels.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{labels.GROUP}/finalizer"
    settings.posting.level = logging.WARNING  # Events for warnings and errors only
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.execution.max_workers = 16
    # The namespaces to serve are named exactly (--namespace) or all (--all-namespaces, a
    # cluster-wide watch): never scan for them. Scanning lists namespaces cluster-wide, which the
    # namespaced Role does not allow (a 403 in a cluster; found by tests/cluster's RBAC check).
    settings.scanning.disabled = True


@kopf.on.cleanup()
def stop_rollouts(memo: kopf.Memo, **_: Any) -> None:
    memo.rollouts_stopped.set()
    memo.rollouts.join(timeout=10)


@kopf.on.login()
def login(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else KUBECONFIG / ~/.kube/config, read by the reader the router
    uses too (``tinyimg.kube.connection``); kopf and our client get the same credentials. kopf
    calls this again when the API answers 401 (an expired or rotated token)."""
    try:
        connection = load_kube_connection()
        memo.api.connect(connection)
    except (KubeConfigError, KubeApiError) as err:
        logger.error(str(err))
        return None  # kopf: no credentials, the operator stops and says so
    return build_connection_info(connection)


def build_connection_info(connection: KubeConnection) -> kopf.ConnectionInfo:
    """kopf's view of the same connection (pure but for reading a token file)."""
    scheme, _, token = (connection.authorization or "").partition(" ")
    if connection.token_file is not None:
        scheme, token = "Bearer", connection.bearer_token() or ""
    return kopf.ConnectionInfo(
        server=connection.server, insecure=connection.insecure, ca_path=connection.ca_file,
        certificate_path=connection.cert_file, private_key_path=connection.key_file,
        scheme=scheme or None, token=token or None, default_namespace=connection.namespace,
    )


@kopf.on.resume(labels.GROUP, labels.VERSION, labels.PLURAL)
@kopf.on.create(labels.GROUP, labels.VERSION, labels.PLURAL)
@kopf.on.update(labels.GROUP, labels.VERSION, labels.PLURAL)
def reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    obj = _plain(body)
    with memo.locks(obj["metadata"]["namespace"], obj["metadata"]["name"]):
        try:
            outcome = reconcile_imagemodel(memo.api, memo.build, obj, on_event=post_event)
        except InvalidSpecError as err:
            kopf.warn(obj, reason=err.reason, message=str(err))
            raise kopf.PermanentError(f"invalid spec: {err}") from None
        except KubeApiError as err:
            if not err.transient:
                raise kopf.PermanentError(str(err)) from None
            raise kopf.TemporaryError(str(err), delay=RETRY_DELAY_SECONDS) from None
    changed = {k: v for k, v in outcome.changes.items() if v != "unchanged"}
    if changed:
        logger.info(f"applied {changed}")


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("", "v1", "configmaps", labels=OWNED)
@kopf.on.event("", "v1", "services", labels=OWNED)
@kopf.on.event("", "v1", "persistentvolumeclaims", labels=OWNED)
@kopf.on.event("", "v1", "pods", labels=OWNED)  # a crash-looping pod leaves the Deployment's status as it was
def child_changed(namespace: str | None, meta: kopf.Meta, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """A child was changed, deleted or got new status: reconcile its ImageModel (level-based)."""
    model = meta.get("labels", {}).get(labels.MODEL)
    if not namespace or not model:
        return
    with memo.locks(namespace, model):
        try:
            body = read_imagemodel(memo.api, namespace, model)
            if body is not None:
                reconcile_imagemodel(memo.api, memo.build, body, on_event=post_event, traced=False)
        except InvalidSpecError:
            pass  # reported by the ImageModel's own handler
        except KubeApiError as err:
            logger.warning(f"reconcile of {namespace}/{model} after a child event failed: {err}")


@kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL)
def track_imagemodel(type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """The ImageModels the rollout loop follows (an event handler needs no finalizer: a timer or
    a daemon for every model would put kopf's finalizer on each, and with the operator gone they
    could not be deleted)."""
    if namespace is None:
        return
    if type == "DELETED":
        memo.models.discard((namespace, name))
    else:
        memo.models.add((namespace, name))


def follow_rollouts(memo: kopf.Memo, stopped: threading.Event) -> None:
    """Every ``ROLLOUT_INTERVAL_SECONDS``, each model: read its pods (status.pods: revision and
    config generation of each) and move its canary rollout on (start a step's clock, judge a
    step, promote, roll back: tinyimg_operator.rollout), under the model's lock."""
    with httpx.Client() as http:
        while not stopped.wait(ROLLOUT_INTERVAL_SECONDS):
            for namespace, name in sorted(memo.models):
                if stopped.is_set():
                    return
                with memo.locks(namespace, name):
                    try:
                        body = read_imagemodel(memo.api, namespace, name)
                        if body is not None:
                            reconcile_imagemodel(memo.api, memo.build, body, http=http, traced=False,
                                                 on_event=lambda *event: post_event_via_api(memo.api, *event))
                    except InvalidSpecError:
                        pass  # reported by the ImageModel's own handler
                    except Exception as err:  # the API not connected yet, a 5xx: the next round tries again
                        log.warning("rollout of %s/%s: %s", namespace, name, err)


def post_event_via_api(api: KubeApi, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """An Event from outside kopf's handlers (the rollout loop): posted by our own client."""
    try:
        write_event(api, body, kind, reason, message, utc_now())
    except KubeApiError as err:
        log.warning("event %s on %s not posted: %s", reason, body["metadata"]["name"], err)


def post_event(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """A rollout's step as an Event on the ImageModel (kopf.event: posting.level filters kopf.info)."""
    kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message)


def autoscaling_enabled(spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> bool:
    """The model asks for autoscaling and the operator is the autoscaler (TINYIMG_AUTOSCALER)."""
    return bool((spec.get("autoscaling") or {}).get("enabled")) and memo.build.builtin_autoscaler


@kopf.daemon(labels.GROUP, labels.VERSION, labels.PLURAL, when=autoscaling_enabled, cancellation_timeout=10)
def autoscale(stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: kopf.Memo, logger: kopf.Logger,
              **_: Any) -> None:
    """One autoscaler per ImageModel with autoscaling on; kopf stops it when the switch goes off
    (then spec.replicas rules again, as before) or the resource goes."""

    def report(body: dict[str, Any], decision: Decision) -> None:
        message = f"{decision.previous} -> {decision.replicas} replicas: {decision.message}"
        # kopf.event, not kopf.info: posting.level (WARNING) filters kopf.info, and a scale is news.
        kopf.event(cast(kopf.Body, body), type="Normal", reason=decision.reason, message=message)
        logger.info(message)

    assert namespace is not None  # ImageModels are namespaced
    run_autoscaler(memo.api, memo.locks, memo.build, memo.autoscaler, namespace, name, stopped, report, logger.warning)


def _plain(value: Any) -> Any:
    """kopf's read-only body views -> plain dicts and lists (JSON-serialisable)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
