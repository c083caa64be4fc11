"""The model server over real HTTP (uvicorn on loopback) with the real tiny SDXL and Flux pipelines."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tinyimg.http.limits import EdgeLimits

FAST = {"steps": 2}


def generate(url: str, headers: dict | None = None, **body) -> httpx.Response:
    return httpx.post(f"{url}/generate", json=body, headers=headers, timeout=60)


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def pixels(b64: str) -> np.ndarray:
    return np.asarray(decode(b64).convert("RGB"), dtype=np.int16)


def metric(text: str, name: str, **labels) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.mark.parametrize("output_format, pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
@pytest.mark.parametrize("model, width, height", [("tiny-sdxl", 64, 40), ("tiny-flux", 48, 32)])
def test_images_decode_in_the_requested_format_and_size(live, model, width, height, output_format, pil_format):
    r = generate(live.url, model=model, prompt="a lighthouse", width=width, height=height,
                 output_format=output_format, seed=3, **FAST)
    assert r.status_code == 200, r.text
    body = r.json()
    (image,) = body["images"]
    decoded = decode(image["b64"])
    assert (decoded.format, decoded.size) == (pil_format, (width, height))
    assert image == {"b64": image["b64"], "seed": 3, "format": output_format}
    assert body["parameters"]["width"] == width and body["parameters"]["steps"] == 2
    assert body["device"] == "cpu" and body["timings"]["inference_seconds"] > 0


def test_accept_image_png_returns_the_raw_png_with_its_seed(live):
    r = generate(live.url, {"Accept": "image/png"}, model="tiny-sdxl", prompt="a fox", seed=11, **FAST)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "11"
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-flux"])
def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_image(live, model):
    first, again, other = (
        generate(live.url, model=model, prompt="a red barn", seed=s, **FAST).json()["images"][0]["b64"]
        for s in (42, 42, 43)
    )
    assert first == again
    assert np.abs(pixels(first) - pixels(other)).mean() > 5


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-flux"])
def test_a_batched_request_matches_its_seeds_one_by_one(live, model):
    batched = generate(live.url, model=model, prompt="a boat", seed=100, num_images=3, **FAST).json()
    assert [i["seed"] for i in batched["images"]] == [100, 101, 102]
    assert batched["batch_size"] >= 3
    for image in batched["images"]:
        alone = generate(live.url, model=model, prompt="a boat", seed=image["seed"], **FAST).json()
        assert alone["batch_size"] == 1
        # Batched float kernels may round differently in the last bit; a different seed is far off.
        assert np.abs(pixels(image["b64"]) - pixels(alone["images"][0]["b64"])).max() <= 2


async def test_concurrent_requests_all_complete_and_share_batches(live):
    async with httpx.AsyncClient(base_url=live.url, timeout=120) as client:
        bodies = [{"model": m, "prompt": f"tree {i}", "seed": i, **FAST} for i in range(6) for m in ("tiny-sdxl", "tiny-flux")]
        answers = await asyncio.gather(*(client.post("/generate", json=b) for b in bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies)
    assert [a.json()["images"][0]["seed"] for a in answers] == [b["seed"] for b in bodies]
    assert max(a.json()["batch_size"] for a in answers) > 1


def test_an_unknown_model_is_404(live):
    r = generate(live.url, model="no-such-model", prompt="x")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert "tiny-sdxl" in r.json()["error"]["message"]


VALID = {"model": "tiny-sdxl", "prompt": "a cat", "steps": 2}


@pytest.mark.parametrize(
    "body, status, field",
    [
        pytest.param({**VALID, "width": 60}, 422, "width", id="width-not-multiple-of-8"),
        pytest.param({**VALID, "model": "tiny-flux", "height": 40}, 422, "height", id="flux-height-not-multiple-of-16"),
        pytest.param({**VALID, "width": 512}, 422, "width", id="width-too-big"),
        pytest.param({**VALID, "steps": 21}, 422, "steps", id="too-many-steps"),
        pytest.param({**VALID, "num_images": 5}, 422, "num_images", id="too-many-images"),
        pytest.param({**VALID, "prompt": "p" * 2001}, 422, "prompt", id="prompt-too-long"),
        pytest.param({**VALID, "output_format": "bmp"}, 422, "output_format", id="bad-output-format"),
        pytest.param({"model": "tiny-sdxl"}, 422, "prompt", id="missing-prompt"),
        pytest.param({**VALID, "steps": "many"}, 422, "steps", id="steps-wrong-type"),
        pytest.param({**VALID, "seed": -5}, 422, "seed", id="negative-seed"),
        pytest.param({**VALID, "prompt": "p" * (EdgeLimits.max_body_bytes + 1)}, 413, None, id="body-too-large"),
    ],
)
def test_invalid_input_is_refused_naming_the_field_and_the_server_still_serves(live, body, status, field):
    r = httpx.post(f"{live.url}/generate", json=body, headers={"X-Request-ID": "bad-input-1"}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["request_id"] == "bad-input-1" == r.headers["x-request-id"]
    if field is not None:
        assert error["field"] == field and error["message"].startswith(f"{field}: ")
    assert generate(live.url, model="tiny-flux", prompt="still here", steps=1).status_code == 200


def test_status_and_metrics_move_with_requests(live):
    before_status = httpx.get(f"{live.url}/status").json()
    before = httpx.get(f"{live.url}/metrics").text
    assert generate(live.url, model="tiny-flux", prompt="one", num_images=2, **FAST).status_code == 200
    assert generate(live.url, model="tiny-flux", prompt="two", **FAST).status_code == 200
    assert generate(live.url, model="tiny-flux", prompt="bad", steps=999).status_code == 422
    after_status = httpx.get(f"{live.url}/status").json()
    after = httpx.get(f"{live.url}/metrics").text

    flux_before, flux_after = before_status["models"]["tiny-flux"], after_status["models"]["tiny-flux"]
    assert flux_after["served"] - flux_before["served"] == 2
    assert flux_after["state"] == "ready" and flux_after["device"] == "cpu"
    assert after_status["uptime_seconds"] > before_status["uptime_seconds"]
    assert {d["kind"] for d in after_status["devices"]} >= {"cpu"}

    def delta(name: str, **labels) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("tinyimg_requests_total", model="tiny-flux", outcome="ok") == 2
    assert delta("tinyimg_requests_total", model="tiny-flux", outcome="invalid") == 1
    assert delta("tinyimg_images_generated_total", model="tiny-flux") == 3
    assert delta("tinyimg_request_duration_seconds_count", model="tiny-flux") == 3
    assert delta("tinyimg_inference_duration_seconds_count", model="tiny-flux") == 2
    assert delta("tinyimg_batch_size_sum", model="tiny-flux") == 3
    assert metric(after, "tinyimg_model_state", model="tiny-sdxl", state="ready") == 1
    assert metric(after, "tinyimg_device_memory_bytes", device="cpu", kind="total") > 0


def test_models_lists_both_tiny_models_ready_with_defaults_and_limits(live):
    models = {m["name"]: m for m in httpx.get(f"{live.url}/models").json()["models"]}
    assert set(models) == {"tiny-sdxl", "tiny-flux"}
    assert models["tiny-flux"]["state"] == "ready" and models["tiny-flux"]["device"] == "cpu"
    assert models["tiny-flux"]["negative_prompt_supported"] is False
    assert models["tiny-sdxl"]["defaults"]["steps"] == 4 and models["tiny-sdxl"]["limits"]["max_width"] == 256


def test_the_request_id_is_echoed_and_on_the_log_lines_of_that_request(live, server_log):
    r = generate(live.url, {"X-Request-ID": "trace-me-7"}, model="tiny-flux", prompt="x", **FAST)
    assert r.headers["x-request-id"] == "trace-me-7" == r.json()["request_id"]
    mine = [line for line in server_log.lines if line["request_id"] == "trace-me-7"]
    access = [line for line in mine if line["logger"] == "tinyimg.access"]
    assert access and access[0]["status"] == 200 and access[0]["model"] == "tiny-flux"
    assert access[0]["duration_seconds"] > 0
    generated = generate(live.url, model="tiny-flux", prompt="x", **FAST)
    assert len(generated.headers["x-request-id"]) == 32


def test_the_openai_client_gets_images(live):
    from openai import OpenAI

    client = OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
    answer = client.images.generate(model="tiny-flux", prompt="a kite", n=2, size="64x64", response_format="b64_json")
    assert len(answer.data) == 2
    assert decode(answer.data[0].b64_json).size == (64, 64)
