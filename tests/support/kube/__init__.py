"""The emulated Kubernetes API for tests, in four parts with one job each:

- ``selectors``: label- and field-selector semantics (pure);
- ``emulator``: the API server itself (HTTP, the object store, watches), built from the pure
  ``discovery``, ``patches`` and ``crd`` modules;
- ``client``: test-side helpers (``Kube``, the ``kube`` fixture, ``running_kube``, kubeconfigs);
- ``kopf_runner``: a real kopf operator in the test's event loop.

The names most tests need are re-exported here.
"""

from tests.support.kube.client import HELPER_AGENT, Kube, kube, kubeconfig, running_kube
from tests.support.kube.emulator import KubeEmulator, Served, running_emulator
from tests.support.kube.kopf_runner import KopfOperator
from tests.support.kube.selectors import match_field_selector, match_label_selector

__all__ = [
    "HELPER_AGENT", "KopfOperator", "Kube", "KubeEmulator", "Served", "kube", "kubeconfig", "match_field_selector",
    "match_label_selector", "running_emulator", "running_kube",
]
