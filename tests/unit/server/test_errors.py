"""The HTTP layer in-process (ASGI transport, a stand-in engine): error shape, status codes,
Retry-After, request ids, body limit, API keys. The network adds nothing to these."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_engine import FakeEngine
from tinyimg.api.app import create_app
from tinyimg.runtime.jobs import DeadlineExceeded, GenerationFailed, ModelNotReady, QueueFull
from tinyimg.spec import parse_config

CONFIG = {
    "maxBodyBytes": 2048,
    "models": [
        {
            "name": "tiny-sdxl",
            "family": "sdxl",
            "source": "/models/sdxl",
            "defaults": {"steps": 4, "width": 64, "height": 64},
            "limits": {"maxWidth": 256, "maxHeight": 256, "maxSteps": 20, "maxImages": 4, "maxPromptLength": 100},
        }
    ],
}
BODY = {"model": "tiny-sdxl", "prompt": "a red fox", "seed": 5}


def make_client(engine_options=None, **config_overrides) -> tuple[httpx.AsyncClient, FakeEngine]:
    config = parse_config({**CONFIG, **config_overrides})
    engine = FakeEngine(config, **(engine_options or {}))
    transport = httpx.ASGITransport(app=create_app(config, engine), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test"), engine


def metric_value(text: str, name: str, **labels) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name}{labels}")


async def test_generate_answers_images_parameters_and_timings():
    client, engine = make_client()
    async with client:
        r = await client.post("/generate", json={**BODY, "num_images": 2}, headers={"X-Request-ID": "abc-1"})
    assert r.status_code == 200
    body = r.json()
    assert [i["seed"] for i in body["images"]] == [5, 6]
    assert body["parameters"] == {
        "prompt": "a red fox", "negative_prompt": None, "width": 64, "height": 64, "steps": 4,
        "guidance_scale": 5.0, "seed": 5, "num_images": 2, "output_format": "png",
        "mode": "txt2img", "strength": None, "scheduler": None, "loras": [],
    }
    assert body["request_id"] == "abc-1" == r.headers["x-request-id"]
    assert body["device"] == "cpu" and body["timings"]["inference_seconds"] == 0.02
    assert engine.calls[0][1].request_id == "abc-1"


async def test_accept_image_returns_raw_bytes_with_seed_header():
    client, _ = make_client()
    async with client:
        r = await client.post("/generate", json=BODY, headers={"Accept": "image/webp"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/webp"
    assert r.headers["x-seed"] == "5"
    assert r.content[:4] == b"RIFF" and r.content[8:12] == b"WEBP"


async def test_accept_image_with_several_images_is_422_naming_num_images():
    client, engine = make_client()
    async with client:
        r = await client.post("/generate", json={**BODY, "num_images": 2}, headers={"Accept": "image/png"})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "num_images"
    assert engine.calls == []


@pytest.mark.parametrize(
    "error, status, code, retry_after",
    [
        pytest.param(QueueFull("cpu", 16, retry_after=2.5), 429, "queue_full", "3", id="queue-full"),
        pytest.param(ModelNotReady("tiny-sdxl", "loading"), 503, "model_not_ready", "5", id="not-ready"),
        pytest.param(DeadlineExceeded(3.0, "queued"), 504, "deadline_exceeded", None, id="deadline"),
        pytest.param(GenerationFailed("CUDA out of memory", "out_of_memory"), 500, "out_of_memory", None, id="oom"),
    ],
)
async def test_engine_errors_keep_their_status_code_and_retry_after(error, status, code, retry_after):
    client, _ = make_client({"fail_with": error})
    async with client:
        r = await client.post("/generate", json=BODY, headers={"X-Request-ID": "req-9"})
        still = await client.get("/health")
    assert r.status_code == status
    assert r.json() == {"error": {"code": code, "message": error.message, "request_id": "req-9"}}
    assert r.headers.get("retry-after") == retry_after
    assert still.status_code == 200


async def test_an_unexpected_exception_is_a_500_with_request_id_and_the_app_keeps_serving():
    client, engine = make_client({"fail_with": RuntimeError("boom")})
    async with client:
        r = await client.post("/generate", json=BODY)
        engine.fail_with = None
        after = await client.post("/generate", json=BODY)
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "internal_error" and "boom" not in error["message"]
    assert error["request_id"] == r.headers["x-request-id"] != ""
    assert after.status_code == 200


async def test_unknown_model_is_404_listing_the_known_ones():
    client, _ = make_client()
    async with client:
        r = await client.post("/generate", json={**BODY, "model": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert "tiny-sdxl" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body, field",
    [
        pytest.param({"model": "tiny-sdxl"}, "prompt", id="missing-prompt"),
        pytest.param({**BODY, "width": "wide"}, "width", id="width-wrong-type"),
        pytest.param({**BODY, "output_format": "gif"}, "output_format", id="bad-output-format"),
        pytest.param({**BODY, "width": 100}, "width", id="width-not-multiple"),
        pytest.param({**BODY, "steps": 99}, "steps", id="too-many-steps"),
    ],
)
async def test_invalid_input_is_422_naming_the_field(body, field):
    client, _ = make_client()
    async with client:
        r = await client.post("/generate", json=body, headers={"X-Request-ID": "bad-1"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == field and error["message"].startswith(f"{field}: ")
    assert error["code"] == "invalid_request" and error["request_id"] == "bad-1"


async def test_malformed_json_is_422():
    client, _ = make_client()
    async with client:
        r = await client.post("/generate", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"


async def test_body_over_the_limit_is_413_by_content_length():
    client, engine = make_client()
    async with client:
        r = await client.post("/generate", json={**BODY, "prompt": "x" * 3000})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    assert engine.calls == []


async def test_body_over_the_limit_is_413_when_streamed_without_content_length():
    client, _ = make_client()

    async def chunks():
        yield b'{"model": "tiny-sdxl", "prompt": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    async with client:
        r = await client.post("/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


async def test_unknown_route_and_wrong_method_use_the_error_shape():
    client, _ = make_client()
    async with client:
        missing = await client.get("/nope")
        wrong = await client.get("/generate")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_a_bad_request_id_header_is_replaced():
    client, _ = make_client()
    async with client:
        r = await client.get("/health", headers={"X-Request-ID": "has spaces\tand tabs"})
    assert r.headers["x-request-id"] != "has spaces\tand tabs" and len(r.headers["x-request-id"]) == 32


async def test_readiness_is_503_with_reason_and_retry_after_until_ready():
    client, engine = make_client({"ready": False})
    async with client:
        loading = await client.get("/health/ready")
        engine.ready = True
        ready = await client.get("/health/ready")
        live = await client.get("/health")
    assert loading.status_code == 503 and loading.headers["retry-after"] == "5"
    assert "loading" in loading.json()["error"]["message"]
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert live.json() == {"status": "ok"}


async def test_api_keys_guard_generation_but_not_probes_or_metrics(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nsecret-one\n\nsecret-two\n")
    client, _ = make_client(apiKeysFile=str(keys))
    async with client:
        none = await client.post("/generate", json=BODY)
        wrong = await client.post("/generate", json=BODY, headers={"Authorization": "Bearer nope"})
        right = await client.post("/generate", json=BODY, headers={"Authorization": "Bearer secret-two"})
        open_paths = [(await client.get(p)).status_code for p in ("/health", "/health/ready", "/metrics", "/models")]
    assert none.status_code == 401 and wrong.status_code == 401
    assert none.json()["error"]["code"] == "unauthorized" and none.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200
    assert open_paths == [200, 200, 200, 200]


async def test_models_lists_resolved_defaults_limits_and_state():
    client, _ = make_client()
    async with client:
        r = await client.get("/models")
    (model,) = r.json()["models"]
    assert model["name"] == "tiny-sdxl" and model["family"] == "sdxl" and model["state"] == "ready"
    assert model["defaults"]["guidance_scale"] == 5.0 and model["defaults"]["steps"] == 4
    assert model["limits"]["max_images"] == 4
    assert model["negative_prompt_supported"] is True


async def test_metrics_count_requests_by_outcome_and_read_engine_gauges():
    client, _ = make_client()
    async with client:
        await client.post("/generate", json={**BODY, "num_images": 3})
        await client.post("/generate", json={**BODY, "steps": 99})
        await client.post("/generate", json={**BODY, "model": "made-up"})
        text = (await client.get("/metrics")).text
    assert metric_value(text, "tinyimg_requests_total", model="tiny-sdxl", outcome="ok") == 1
    assert metric_value(text, "tinyimg_requests_total", model="tiny-sdxl", outcome="invalid") == 1
    assert metric_value(text, "tinyimg_requests_total", model="unknown", outcome="not_found") == 1
    assert metric_value(text, "tinyimg_images_generated_total", model="tiny-sdxl") == 3
    assert metric_value(text, "tinyimg_request_duration_seconds_count", model="tiny-sdxl") == 2
    assert metric_value(text, "tinyimg_device_memory_bytes", device="cpu", kind="used") == 400
    assert metric_value(text, "tinyimg_model_state", model="tiny-sdxl", state="ready") == 1
    assert metric_value(text, "tinyimg_model_state", model="tiny-sdxl", state="loading") == 0
    assert metric_value(text, "tinyimg_queue_depth", model="tiny-sdxl", device="cpu") == 0


async def test_openai_route_answers_b64_json_and_names_size_on_a_bad_one():
    client, engine = make_client()
    async with client:
        ok = await client.post("/v1/images/generations", json={"prompt": "fox", "size": "64x128", "n": 2})
        bad = await client.post("/v1/images/generations", json={"prompt": "fox", "size": "60x64"})
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2
    assert (engine.calls[0][1].width, engine.calls[0][1].height) == (64, 128)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "size"


async def test_playground_cannot_be_framed_and_no_cdn_docs_are_served():
    client, _ = make_client()
    async with client:
        ui = await client.get("/ui")
        assert ui.status_code == 200
        assert "frame-ancestors 'none'" in ui.headers["content-security-policy"]
        assert ui.headers["x-frame-options"] == "DENY"
        for page in ("/docs", "/redoc"):  # FastAPI's pages load scripts from a CDN
            assert (await client.get(page)).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 200
