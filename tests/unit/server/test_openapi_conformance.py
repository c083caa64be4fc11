"""The OpenAPI documents match what the apps send: schemathesis generates requests from each app's
own document and checks every answer against it (documented status code, response schema, field
names), for the model server and for the router in front of one."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.support.fake_engine import FakeEngine
from tests.support.processes import free_port
from tinyimg.api.app import create_app
from tinyimg.router.app import create_router_app
from tinyimg.router.discovery_static import StaticDiscovery
from tinyimg.router.settings import RouterSettings
from tinyimg.serve import BackgroundServer
from tinyimg.spec import parse_config

CONFIG = parse_config(
    {"models": [{"name": "tiny-sdxl", "family": "sdxl", "source": "/models/sdxl",
                 "defaults": {"steps": 4, "width": 64, "height": 64}}]}
)
CHECKS = [status_code_conformance, response_schema_conformance, not_a_server_error]
server_schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(CONFIG, FakeEngine(CONFIG)))


@server_schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_server_answers_match_its_openapi_document(case):
    case.call_and_validate(checks=CHECKS)


# The router in front of a real server app on loopback, so what it relays is checked too. The
# port is fixed at import (schemathesis reads the app's document then); the backend starts with
# the module's tests.
BACKEND_PORT = free_port()
router_app = create_router_app(
    RouterSettings(), StaticDiscovery({"tiny-sdxl": [f"http://127.0.0.1:{BACKEND_PORT}"]})
)
router_schema = schemathesis.openapi.from_asgi("/openapi.json", router_app)


@pytest.fixture(scope="module", autouse=True)
def backend():
    with BackgroundServer(create_app(CONFIG, FakeEngine(CONFIG)), port=BACKEND_PORT) as server:
        yield server


@router_schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_router_answers_match_its_openapi_document(case):
    case.call_and_validate(checks=CHECKS)


@pytest.mark.parametrize("app", [router_app, create_app(CONFIG, FakeEngine(CONFIG))], ids=["router", "server"])
def test_every_reference_in_the_openapi_document_resolves(app):
    """The router's request bodies once pointed at #/$defs/LoraRequest, which an OpenAPI document
    does not have: generators and clients failed on it."""
    import json
    import re

    doc = app.openapi()
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(doc)))
    assert refs, "the document has references to check"
    for ref in refs:
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]
