"""The kopf glue maps failures to kopf's retry semantics."""

import logging

import kopf
import pytest

from tinyimg.kube.errors import KubeApiError
from tinyimg_operator.handlers import reconcile
from tinyimg_operator.kubeapi import KubeApi
from tinyimg_operator.locks import ModelLocks
from tinyimg_operator.settings import BuildSettings

BODY = {
    "apiVersion": "tinyimg.io/v1alpha1", "kind": "ImageModel",
    "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
    "spec": {"family": "sdxl", "source": "org/m"},
}


class FailingApi(KubeApi):
    def __init__(self, status: int):
        super().__init__()
        self.status = status

    def request(self, method, path, body=None, content_type="application/json"):
        raise KubeApiError(self.status, "boom")


@pytest.mark.parametrize("status", [0, 409, 429, 500, 503])
def test_transient_api_errors_retry_with_a_delay(status):
    memo = kopf.Memo(api=FailingApi(status), build=BuildSettings(), locks=ModelLocks())
    with pytest.raises(kopf.TemporaryError) as err:
        reconcile(body=BODY, memo=memo, logger=logging.getLogger("t"))
    assert err.value.delay == 10


def test_rejected_objects_are_permanent_errors():
    memo = kopf.Memo(api=FailingApi(422), build=BuildSettings(), locks=ModelLocks())
    with pytest.raises(kopf.PermanentError):
        reconcile(body=BODY, memo=memo, logger=logging.getLogger("t"))
