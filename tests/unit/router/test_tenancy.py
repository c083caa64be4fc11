"""What a request costs at the router (tinyimg.router.tenancy.estimate_cost): its own fields,
OpenAI's size and n, multipart form strings, and the model's defaults for what it leaves out."""

from __future__ import annotations

import pytest

from tinyimg.router.tenancy import FALLBACK_DEFAULTS, estimate_cost

DEFAULTS = (512, 512, 4)


@pytest.mark.parametrize(("fields", "defaults", "expected"), [
    ({}, DEFAULTS, 1.0),
    ({"width": 1024, "height": 1024, "steps": 50, "num_images": 8}, DEFAULTS, 400.0),
    ({"size": "1024x512", "n": 2}, DEFAULTS, 4.0),  # OpenAI's shape: 0.5 x 4 steps x 2
    ({"size": "1024x1024", "n": "3"}, DEFAULTS, 12.0),  # a multipart form's strings
    ({}, None, 30.0),  # no pod has said the model's defaults yet: 1024², 30 steps
    # Malformed values count as unset (the pod refuses the request; its work is given back).
    ({"width": "wide", "steps": -3, "num_images": True, "size": "hugex1"}, DEFAULTS, 1.0),
    ({"size": "999999x999999"}, DEFAULTS, 1.0),
])
def test_a_request_costs_its_image_steps(fields, defaults, expected):
    assert estimate_cost(fields, defaults) == pytest.approx(expected)
    assert FALLBACK_DEFAULTS == (1024, 1024, 30)
