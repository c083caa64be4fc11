"""tinyimg.safety: flags against the threshold, each policy's verdict (flag keeps, blur changes only
flagged images, block refuses with content_blocked), the prompt deny-list on whole words, a
tenant's policy over the model's, and a classifier whose labels do not include the flagged ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tinyimg.core.tenants import TenantSpec, build_tenant, read_tenant_description
from tinyimg.make_tiny import run_make_tiny_classifier
from tinyimg.safety.checkers import CHECKERS, CheckerLoadError, load_checker
from tinyimg.safety.policy import ContentBlocked, apply_policy, build_flag, check_prompts, compile_deny_list
from tinyimg.spec import SafetySpec


def noise(seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((64, 64, 3)) * 255).astype("uint8"))


def test_flags_follow_the_threshold_and_policies_do_what_they_say():
    images = [noise(1), noise(2)]
    flags = [build_flag(0.7, 0.5, "classifier"), build_flag(0.2, 0.5, "classifier")]
    assert [f["flagged"] for f in flags] == [True, False] and flags[0]["score"] == 0.7
    assert apply_policy("flag", images, flags) == images
    blurred = apply_policy("blur", images, flags)
    assert blurred[1] is images[1]
    assert np.abs(np.asarray(blurred[0], dtype=int) - np.asarray(images[0], dtype=int)).mean() > 20
    with pytest.raises(ContentBlocked) as blocked:
        apply_policy("block", images, flags)
    assert blocked.value.status == 422 and blocked.value.code == "content_blocked"
    assert apply_policy("block", images[1:], flags[1:]) == images[1:]


@pytest.mark.parametrize("prompt, refused", [
    ("a forbidden fruit", True), ("A FORBIDDEN FRUIT!", True), ("forbidden fruits", False),
    ("unforbidden fruit", False), ("xyzzy", True), ("xyzzyx", False), ("nothing here", False),
])
def test_the_deny_list_matches_whole_words_case_insensitively(prompt, refused):
    pattern = compile_deny_list(("forbidden fruit", "xyzzy", " "))
    if refused:
        with pytest.raises(ContentBlocked, match="prompt"):
            check_prompts(pattern, prompt, None)
    else:
        check_prompts(pattern, prompt, None)
    assert compile_deny_list(()) is None


def test_a_negative_prompt_is_checked_too():
    with pytest.raises(ContentBlocked) as blocked:
        check_prompts(compile_deny_list(("xyzzy",)), "fine", "no XYZZY please")
    assert blocked.value.extra["field"] == "negative_prompt"


def test_a_tenants_policy_travels_with_it_and_its_header():
    tenant = build_tenant(TenantSpec.model_validate({"name": "kids", "keys": ["sk-" + "a" * 30], "safetyPolicy": "block"}))
    assert tenant.safety_policy == "block"
    assert read_tenant_description(tenant.describe()).safety_policy == "block"
    plain = build_tenant(TenantSpec.model_validate({"name": "adults", "keys": ["sk-" + "b" * 30]}))
    assert plain.safety_policy is None and "safety_policy" not in plain.describe()


def test_the_registry_names_the_spec_allows_and_a_checker_needs_its_labels(tmp_path):
    assert set(CHECKERS) == set(SafetySpec.model_fields["checker"].annotation.__args__[0].__args__)
    with pytest.raises(ValueError, match=r"safety\.source"):
        SafetySpec(checker="classifier")
    run_make_tiny_classifier(tmp_path / "c")
    with pytest.raises(CheckerLoadError, match="flaggedLabels"):
        load_checker(SafetySpec(checker="classifier", source=str(tmp_path / "c"), flaggedLabels=["gore"]), "cpu")
    with pytest.raises(CheckerLoadError, match=r"safety\.source"):
        load_checker(SafetySpec(checker="classifier", source=str(tmp_path / "missing")), "cpu")
    checker = load_checker(SafetySpec(checker="classifier", source=str(tmp_path / "c"), flaggedLabels=["NSFW"]), "cpu")
    scores = checker.score([noise(s) for s in range(6)])
    assert all(0 <= s <= 1 for s in scores) and len(set(scores)) > 1
    assert checker.score([noise(3)]) == pytest.approx([scores[3]], abs=1e-5)  # batched or alone: the same score


@pytest.mark.parametrize("flag_all", [True, False])
def test_the_stable_diffusion_checker_gives_its_verdict_per_image_and_never_blacks_them_out(tmp_path, flag_all):
    from tests.support.safety import write_tiny_sd_checker

    source = write_tiny_sd_checker(tmp_path / "sd", flag_all)
    checker = load_checker(SafetySpec(checker="sd-safety-checker", source=str(source)), "cpu")
    images = [noise(s) for s in range(3)]
    before = [np.asarray(i).copy() for i in images]
    assert checker.score(images) == [1.0 if flag_all else 0.0] * 3
    assert all((np.asarray(i) == b).all() for i, b in zip(images, before, strict=True))  # the pixels are ours to decide
