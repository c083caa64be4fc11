"""The pure step from a /generate body to engine parameters: defaults, limits, seeds."""

import pytest
from pydantic import ValidationError

from tinyimg.api.generate import read_raw_format
from tinyimg.core.errors import InvalidField
from tinyimg.runtime.params import build_generation_params, build_model_rules
from tinyimg.spec import ModelSpec
from tinyimg.wire.requests import GenerateRequest, OpenAIImagesRequest, build_generate_request


def resolve(req, spec, *args):
    """``build_generation_params`` against the spec's rules (resolved once per model in the service)."""
    return build_generation_params(req, build_model_rules(spec), *args)


SDXL = ModelSpec(
    name="tiny-sdxl",
    family="sdxl",
    source="/models/sdxl",
    defaults={"steps": 4, "width": 64, "height": 64, "negativePrompt": "blurry"},
    limits={"maxWidth": 256, "maxHeight": 128, "maxSteps": 20, "maxImages": 4, "maxPromptLength": 50},
)
FLUX = ModelSpec(name="tiny-flux", family="flux", source="/models/flux", defaults={"width": 64, "height": 64})


def request(**fields) -> GenerateRequest:
    return GenerateRequest(model="tiny-sdxl", prompt="a red fox", **fields)


def test_absent_fields_take_the_models_resolved_defaults():
    params = resolve(request(seed=7), SDXL, "rid-1")
    assert (params.width, params.height, params.steps) == (64, 64, 4)
    assert params.guidance_scale == 5.0  # the sdxl family default, the spec leaves it unset
    assert params.negative_prompt == "blurry"
    assert params.seeds == (7,)
    assert params.request_id == "rid-1"


def test_image_i_gets_seed_plus_i():
    assert resolve(request(seed=100, num_images=3), SDXL).seeds == (100, 101, 102)


def test_an_absent_seed_is_drawn_and_consecutive_per_image():
    seeds = resolve(request(num_images=2), SDXL).seeds
    assert seeds[1] == seeds[0] + 1
    drawn = {resolve(request(), SDXL).seeds[0] for _ in range(5)}
    assert len(drawn) > 1


def test_flux_drops_the_spec_negative_prompt_it_cannot_use():
    assert resolve(GenerateRequest(model="tiny-flux", prompt="x"), FLUX).negative_prompt is None


@pytest.mark.parametrize(
    "fields, field, words",
    [
        pytest.param({"width": 60}, "width", "multiple of 8", id="width-not-multiple-of-8"),
        pytest.param({"height": 256}, "height", "maximum of 128", id="height-over-max"),
        pytest.param({"width": 512}, "width", "maximum of 256", id="width-over-max"),
        pytest.param({"steps": 21}, "steps", "maximum of 20", id="too-many-steps"),
        pytest.param({"num_images": 5}, "num_images", "maximum of 4", id="too-many-images"),
        pytest.param({"prompt": "x" * 51}, "prompt", "51 characters", id="prompt-too-long"),
        pytest.param({"negative_prompt": "y" * 51}, "negative_prompt", "51 characters", id="negative-too-long"),
    ],
)
def test_limits_name_the_field(fields, field, words):
    body = GenerateRequest(**{"model": "tiny-sdxl", "prompt": "a red fox", **fields})
    with pytest.raises(InvalidField) as caught:
        resolve(body, SDXL)
    assert caught.value.status == 422
    assert caught.value.extra == {"field": field}
    assert caught.value.message.startswith(f"{field}: ") and words in caught.value.message


def test_flux_width_must_be_a_multiple_of_16():
    with pytest.raises(InvalidField, match="multiple of 16"):
        resolve(GenerateRequest(model="tiny-flux", prompt="x", width=72), FLUX)


def test_a_negative_prompt_for_a_family_without_one_is_refused():
    with pytest.raises(InvalidField) as caught:
        resolve(GenerateRequest(model="tiny-flux", prompt="x", negative_prompt="no"), FLUX)
    assert caught.value.extra == {"field": "negative_prompt"}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"output_format": "gif"}, id="bad-format"),
        pytest.param({"width": "wide"}, id="width-not-int"),
        pytest.param({"seed": -1}, id="negative-seed"),
        pytest.param({"num_images": 0}, id="zero-images"),
        pytest.param({"colour": "red"}, id="unknown-field"),
    ],
)
def test_wire_types_are_checked_by_the_schema(fields):
    with pytest.raises(ValidationError):
        GenerateRequest(**{"model": "tiny-sdxl", "prompt": "x", **fields})


@pytest.mark.parametrize(
    "accept, expected",
    [
        pytest.param(None, None, id="absent"),
        pytest.param("*/*", None, id="anything"),
        pytest.param("application/json", None, id="json"),
        pytest.param("image/png", "png", id="png"),
        pytest.param("image/webp;q=0.9, application/json", "webp", id="webp-first"),
        pytest.param("application/json, image/jpeg", None, id="json-first"),
        pytest.param("text/html, image/jpeg", "jpeg", id="skips-unserved"),
    ],
)
def test_accept_header_chooses_raw_image_or_json(accept, expected):
    assert read_raw_format(accept) == expected


def test_openai_size_and_n_map_to_width_height_and_num_images():
    body = build_generate_request(OpenAIImagesRequest(prompt="fox", size="128x64", n=2), "tiny-sdxl")
    assert (body.model, body.width, body.height, body.num_images) == ("tiny-sdxl", 128, 64, 2)


def test_openai_size_must_be_width_x_height():
    with pytest.raises(ValidationError):
        OpenAIImagesRequest(prompt="fox", size="large")
