"""Requests generated from the app's own OpenAPI schema (schemathesis): whatever arrives, the
answer is never a 5xx, and every error has the one error shape with the request id."""

import schemathesis
from hypothesis import HealthCheck, settings

from tests.support.fake_engine import FakeEngine
from tinyimg.api.app import create_app
from tinyimg.spec import parse_config

CONFIG = parse_config(
    {"models": [{"name": "tiny-sdxl", "family": "sdxl", "source": "/models/sdxl",
                 "defaults": {"steps": 4, "width": 64, "height": 64}}]}
)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(CONFIG, FakeEngine(CONFIG)))


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_never_get_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, response.text
    (request_id,) = response.headers["x-request-id"]  # schemathesis keeps every header as a list
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"] and error["request_id"] == request_id
