"""Issue 11 items 2 (validation) and 7: text that is not valid Unicode is a 422 naming the field,
and inputs that used to produce bare 500s (JSON nested deeper than Python recurses, a non-ASCII
byte in a header, a malformed request line) get the JSON error shape with a request id, on both
services, which keep serving. Real processes."""

import httpx
import pytest

from tests.support.hostile_edge import API_KEY, RawAnswer, edge_processes, exchange

AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_model_dirs):
    with edge_processes(tmp_path_factory.mktemp("edge-input"), tiny_model_dirs) as (server, router):
        yield {"server": server, "router": router}


def assert_shape(status: int, body: dict, request_id: str) -> dict:
    error = body["error"]
    assert error["code"] and error["message"] and error["request_id"] == request_id
    return error


@pytest.mark.parametrize("service", ["server", "router"])
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/generate", b'{"model": "tiny-sdxl", "prompt": "x\\ud800"}', "prompt"),
        ("/generate", b'{"model": "tiny-sdxl", "prompt": "x", "negative_prompt": "\\udfff y"}', "negative_prompt"),
        ("/v1/images/generations", b'{"prompt": "\\ud83d"}', "prompt"),
    ],
    ids=["prompt", "negative-prompt", "openai-prompt"],
)
def test_a_lone_surrogate_is_422_naming_the_field(services, service, path, body, field):
    response = httpx.post(services[service].url + path, content=body, headers=AUTH, timeout=30)
    assert response.status_code == 422, response.text
    error = assert_shape(response.status_code, response.json(), response.headers["x-request-id"])
    assert error["field"] == field
    assert "Unicode" in error["message"]


@pytest.mark.parametrize("service", ["server", "router"])
def test_json_nested_too_deep_is_a_422_in_the_error_shape(services, service):
    body = b'{"model": "tiny-sdxl", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = httpx.post(services[service].url + "/generate", content=body, headers=AUTH, timeout=30)
    # 400 from the server (FastAPI cannot parse it), 422 from the router (it names the body).
    assert response.status_code in (400, 422)
    assert_shape(response.status_code, response.json(), response.headers["x-request-id"])
    assert httpx.get(services[service].url + "/health", timeout=5).status_code == 200


@pytest.mark.parametrize("service", ["server", "router"])
@pytest.mark.parametrize("path", ["/models", "/generate"])
def test_a_non_ascii_header_byte_gets_the_error_shape_or_an_answer(services, service, path):
    body = b'{"model": "tiny-sdxl", "prompt": "a red cube", "steps": 1}'
    method = b"POST" if path == "/generate" else b"GET"
    request = (
        method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
        + b"\r\nX-Odd: caf\xe9\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % len(body) + (body if path == "/generate" else b"")
    )
    answer: RawAnswer = exchange(services[service].url, request, timeout=30)
    assert answer.headers.get("x-request-id"), answer
    # The router forwards the client's own header bytes (or refuses them with a 400): never a 5xx,
    # and no answer leaves without the error shape and the request id.
    assert answer.status < 500, answer
    if answer.status >= 400:
        assert_shape(answer.status, answer.json(), answer.headers["x-request-id"])
    assert httpx.get(services[service].url + "/health", timeout=5).status_code == 200


@pytest.mark.parametrize("service", ["server", "router"])
def test_a_malformed_request_line_is_400_in_the_error_shape(services, service):
    answer = exchange(services[service].url, b"GET /\x00bad HTTP/9\r\n\r\n")
    assert answer.status == 400
    error = answer.json()["error"]
    assert (error["code"], error["request_id"]) == ("bad_request", answer.headers["x-request-id"])
