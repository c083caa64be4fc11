"""One level-based reconcile of an ImageModel: validate, apply children, report status.

Safe to run any number of times: with nothing changed it reads and writes nothing new.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from tinyimg.core import labels
from tinyimg_operator.applier import apply_object, apply_status, path_of
from tinyimg_operator.autoscaling import read_state
from tinyimg_operator.children import build_children
from tinyimg_operator.imagemodel import InvalidSpecError, check_policy, read_model_spec
from tinyimg_operator.kubeapi import KubeApi
from tinyimg_operator.pods import read_pod_problem
from tinyimg_operator.settings import BuildSettings
from tinyimg_operator.status import build_invalid_status, build_status


@dataclass
class Outcome:
    changes: dict[str, str]  # "Kind/name" -> created | patched | unchanged
    status_written: bool


def utc_now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile_imagemodel(api: KubeApi, settings: BuildSettings, body: dict[str, Any]) -> Outcome:
    """Raises InvalidSpecError (after writing the Degraded status) or applier.KubeApiError."""
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation")
    try:
        spec = read_model_spec(body)
        check_policy(spec, settings)
    except InvalidSpecError as err:
        status = build_invalid_status(
            name, namespace, generation, err.field, err.message, body.get("status"), utc_now(), err.reason
        )
        apply_status(api, body, status)
        raise
    if spec.autoscaling.enabled and settings.builtin_autoscaler:
        # The autoscaler's last decision (status.autoscaling) is the Deployment's replicas, not spec.replicas.
        replicas = read_state(body.get("status"), spec.replicas, spec.autoscaling).replicas
        spec = spec.model_copy(update={"replicas": replicas})
    changes: dict[str, str] = {}
    deployment: dict[str, Any] | None = None
    for desired in build_children(spec, namespace, settings, owner=body):
        what, live = apply_object(api, desired)
        changes[f"{desired['kind']}/{desired['metadata']['name']}"] = what
        if desired["kind"] == "Deployment":
            deployment = live
    problem = read_pod_problem(api, namespace, name) if spec.replicas > 0 else None
    status = build_status(name, namespace, generation, spec.replicas, deployment, body.get("status"), utc_now(), problem)
    return Outcome(changes, apply_status(api, body, status))


def read_imagemodel(api: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    probe = {"apiVersion": f"{labels.GROUP}/{labels.VERSION}", "kind": labels.KIND,
             "metadata": {"namespace": namespace, "name": name}}
    return api.get(path_of(probe))
