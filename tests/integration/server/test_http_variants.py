"""Image-to-image, inpainting, samplers and OpenAI's edits over real HTTP (uvicorn on loopback)
against the real tiny pipelines; the OpenAI part through the real ``openai`` client."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

FAST = {"steps": 2}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def noise(seed: int, size=(64, 64), mode="RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode)


def generate(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/generate", json={"seed": 3, "prompt": "a lighthouse", **FAST, **body}, timeout=120)


def pixels(answer: httpx.Response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]["b64"]))), dtype=np.int16)


def test_models_lists_modes_schedulers_and_adapters(live):
    models = {m["name"]: m for m in httpx.get(f"{live.url}/models").json()["models"]}
    assert models["tiny-sdxl"]["modes"] == ["txt2img", "img2img", "inpaint"]
    assert models["tiny-sdxl"]["schedulers"] == ["euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc"]
    assert models["tiny-flux"]["schedulers"] == ["flow_match_euler"]
    assert models["tiny-flux"]["adapters"] == []


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-flux"])
def test_img2img_over_http_is_reproducible_and_reports_its_mode(live, model):
    body = {"model": model, "image": b64(png(noise(1, (80, 48)))), "strength": 0.5}
    first, second = generate(live.url, **body), generate(live.url, **body)
    assert first.status_code == 200, first.text
    params = first.json()["parameters"]
    assert (params["mode"], params["strength"], params["width"], params["height"]) == ("img2img", 0.5, 80, 48)
    assert first.json()["images"][0]["b64"] == second.json()["images"][0]["b64"]  # identical bytes


def test_inpaint_over_http_and_a_scheduler_change_the_image(live):
    image = b64(png(noise(2)))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpainted = generate(live.url, model="tiny-sdxl", image=image, mask=b64(png(mask)))
    assert inpainted.status_code == 200 and inpainted.json()["parameters"]["mode"] == "inpaint"
    plain = generate(live.url, model="tiny-sdxl")
    ddim = generate(live.url, model="tiny-sdxl", scheduler="ddim")
    assert ddim.json()["parameters"]["scheduler"] == "ddim"
    assert np.abs(pixels(plain) - pixels(ddim)).mean() > 1


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        pytest.param({"image": b64(b"GIF89a not really")}, 422, "image", id="not-an-image"),
        pytest.param({"image": b64(png(noise(3))[:300])}, 422, "image", id="truncated"),
        pytest.param({"image": b64(png(noise(3))), "mask": b64(png(Image.new("L", (32, 32))))}, 422, "mask",
                     id="wrong-mask-size"),
        pytest.param({"scheduler": "k_lms"}, 422, "scheduler", id="unknown-scheduler"),
        pytest.param({"loras": [{"name": "none-declared"}]}, 422, "loras.0.name", id="unknown-adapter"),
    ],
)
def test_bad_inputs_over_http_are_4xx_naming_the_field(live, body, status, field):
    answer = generate(live.url, model="tiny-sdxl", **body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["field"] == field


def test_a_100000_square_png_header_is_413_before_decoding(live):
    from tests.unit.server.test_requests_variants import png_header_only

    answer = generate(live.url, model="tiny-sdxl", image=png_header_only(100_000, 100_000))
    assert answer.status_code == 413 and answer.json()["error"]["field"] == "image"


def openai_client(live):
    from openai import OpenAI

    return OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_the_openai_client_edits_with_an_alpha_mask(live):
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 64))  # the left half transparent: repaint it
    answer = openai_client(live).images.edit(
        model="tiny-sdxl", image=("in.png", png(noise(4)), "image/png"), mask=("mask.png", png(mask), "image/png"),
        prompt="a red door", n=2, size="64x64", response_format="b64_json",
    )
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in answer.data]
    assert [i.size for i in images] == [(64, 64), (64, 64)]


def test_the_openai_client_edits_and_gets_image_urls_as_generations_do(live):
    answer = openai_client(live).images.edit(model="tiny-flux", image=("in.png", png(noise(7)), "image/png"),
                                              prompt="sky", n=2, size="64x64", response_format="url")
    urls = [d.url for d in answer.data]
    assert [u.rsplit("/", 1)[-1] for u in urls] == ["0", "1"] and urls[0].startswith(f"{live.url}/v1/jobs/job_")
    assert all(Image.open(io.BytesIO(httpx.get(u, timeout=30).content)).size == (64, 64) for u in urls)


def test_the_openai_client_edits_the_transparent_pixels_of_an_image_without_a_mask(live):
    image = noise(5, mode="RGBA")
    image.paste((0, 0, 0, 0), (0, 0, 64, 32))
    answer = openai_client(live).images.edit(model="tiny-flux", image=("in.png", png(image), "image/png"), prompt="sky")
    assert Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json))).size == (64, 64)


def test_the_openai_client_generates_with_no_scheduler_field(live):
    answer = openai_client(live).images.generate(model="tiny-flux", prompt="a fox", size="64x64")
    assert Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json))).size == (64, 64)


@pytest.mark.parametrize(
    ("files", "data", "field"),
    [
        pytest.param({}, {"prompt": "x"}, "image", id="no-image"),
        pytest.param({"image": ("a.png", png(noise(6)))}, {}, "prompt", id="no-prompt"),
        pytest.param({"image": ("a.png", png(noise(6))), "mask": ("m.png", png(Image.new("L", (64, 64))))},
                     {"prompt": "x"}, "mask", id="mask-without-transparency"),
        pytest.param({"image": ("a.png", png(noise(6)))}, {"prompt": "x", "n": "99"}, "n", id="too-many-images"),
        pytest.param({"image": ("a.png", png(noise(6)))}, {"prompt": "x", "size": "big"}, "size", id="bad-size"),
        pytest.param({"image": ("a.png", b"not an image")}, {"prompt": "x"}, "image", id="not-an-image"),
    ],
)
def test_bad_edits_are_422_naming_the_openai_field(live, files, data, field):
    answer = httpx.post(f"{live.url}/v1/images/edits", files=files or None, data={"model": "tiny-sdxl", **data},
                        timeout=60)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
