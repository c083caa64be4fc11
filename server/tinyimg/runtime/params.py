"""From a request to the engine's parameters and back: the model's defaults applied, its limits
checked (each refusal names the field), input images decoded; and the parameters as answered."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyimg.core.errors import InvalidField
from tinyimg.families import family_info
from tinyimg.families.base import AdapterFile, GenerationParams
from tinyimg.families.family import Family
from tinyimg.runtime.inputs import fit_size, open_image, read_base64
from tinyimg.spec import ModelSpec, ResolvedDefaults
from tinyimg.wire.requests import GenerateRequest, LoraRequest, OutputFormat, ParametersResponse

# What ``strength`` is when a request with an input image leaves it out.
DEFAULT_STRENGTH = {"img2img": 0.8, "inpaint": 1.0}


@dataclass(frozen=True)
class ModelRules:
    """What a request to one model is checked against, resolved once per model (not per request):
    its spec, its family's declaration, and its defaults with the family's values filled in."""

    spec: ModelSpec
    family: Family
    defaults: ResolvedDefaults


def build_model_rules(spec: ModelSpec) -> ModelRules:
    return ModelRules(spec, family_info(spec.family), spec.resolved_defaults())


def build_generation_params(
    req: GenerateRequest, rules: ModelRules, request_id: str = "", seed: int | None = None,
    fetched: Mapping[int, tuple[AdapterFile, float]] | None = None,
) -> GenerationParams:
    """Apply the model's defaults and check its limits; ``seed`` stands in for an absent request seed.
    ``fetched``: the request's run-time adapters (by index in ``loras``), already on local disk
    (``tinyimg.runtime.adapters``).

    With ``image``, this decodes it (a CPU step of milliseconds to tens of them: callers on an event
    loop run it in a thread) and sizes the output by the rule of ``tinyimg.runtime.inputs``."""
    spec, d, info = rules.spec, rules.defaults, rules.family
    lim = spec.limits
    inputs = read_inputs(req, rules)
    fitted = fit_size(inputs[0].size, (lim.max_width, lim.max_height), info.size_multiple) if inputs else None
    width = req.width if req.width is not None else fitted[0] if fitted else d.width
    height = req.height if req.height is not None else fitted[1] if fitted else d.height
    if inputs and min(width, height) < info.size_multiple:
        raise InvalidField("image", f"{inputs[0].size[0]}x{inputs[0].size[1]} is too small for this model")
    steps = req.steps if req.steps is not None else d.steps
    for field, value, top in (("width", width, lim.max_width), ("height", height, lim.max_height)):
        if value > top:
            raise InvalidField(field, f"{value} is over this model's maximum of {top}")
        if value % info.size_multiple:
            raise InvalidField(field, f"{value} is not a multiple of {info.size_multiple} ({spec.family} models)")
    if steps > lim.max_steps:
        raise InvalidField("steps", f"{steps} is over this model's maximum of {lim.max_steps}")
    if req.num_images > lim.max_images:
        raise InvalidField("num_images", f"{req.num_images} is over this model's maximum of {lim.max_images}")
    if len(req.prompt) > lim.max_prompt_length:
        raise InvalidField(
            "prompt", f"{len(req.prompt)} characters is over this model's maximum of {lim.max_prompt_length}"
        )
    negative = req.negative_prompt if req.negative_prompt is not None else d.negative_prompt
    if req.negative_prompt and not info.negative_prompt:
        raise InvalidField("negative_prompt", f"{spec.family} models do not support a negative prompt")
    if negative is not None and len(negative) > lim.max_prompt_length:
        raise InvalidField(
            "negative_prompt", f"{len(negative)} characters is over this model's maximum of {lim.max_prompt_length}"
        )
    mode = ("inpaint" if inputs[1] is not None else "img2img") if inputs else "txt2img"
    strength = build_strength(req, mode, steps)
    first = req.seed if req.seed is not None else (seed if seed is not None else new_seed())
    return GenerationParams(
        prompt=req.prompt,
        negative_prompt=negative if info.negative_prompt else None,
        width=width,
        height=height,
        steps=steps,
        guidance_scale=req.guidance_scale if req.guidance_scale is not None else d.guidance_scale,
        seeds=tuple(first + i for i in range(req.num_images)),
        request_id=request_id,
        mode=mode,
        strength=strength,
        scheduler=check_scheduler(req.scheduler, rules),
        loras=build_loras(req.loras, spec, fetched or {}),
        adapter_files=tuple(sorted({file for file, _ in (fetched or {}).values()}, key=lambda f: f.name)),
        image=inputs[0].convert("RGB").resize((width, height), LANCZOS) if inputs else None,
        mask=inputs[1].convert("L").resize((width, height), NEAREST) if inputs and inputs[1] is not None else None,
    )


# PIL.Image.Resampling values, named here so this module need not import Pillow.
LANCZOS, NEAREST = 1, 0


def read_inputs(req: GenerateRequest, rules: ModelRules) -> tuple[Any, Any | None] | None:
    """The decoded input image and mask, or None for text-to-image."""
    if req.image is None:
        for field in ("mask", "strength"):
            if getattr(req, field) is not None:
                raise InvalidField(field, "applies only with an input image (image)")
        return None
    spec, info = rules.spec, rules.family
    mode = "inpaint" if req.mask is not None else "img2img"
    if mode not in info.modes:
        raise InvalidField("mask" if req.mask is not None else "image", f"{spec.family} models do not offer {mode}")
    limit = spec.limits.max_input_pixels
    image = open_image("image", read_base64("image", req.image), limit)
    mask = None
    if req.mask is not None:
        mask = open_image("mask", read_base64("mask", req.mask), limit)
        if mask.size != image.size:
            raise InvalidField(
                "mask", f"{mask.size[0]}x{mask.size[1]} is not the image's size {image.size[0]}x{image.size[1]}"
            )
    return image, mask


def build_strength(req: GenerateRequest, mode: str, steps: int) -> float | None:
    if mode == "txt2img":
        return None
    strength = req.strength if req.strength is not None else DEFAULT_STRENGTH[mode]
    # diffusers runs int(steps * strength) of the steps; none at all is an error deep in the pipeline.
    if int(steps * strength) < 1:
        raise InvalidField("strength", f"{strength} x {steps} steps leaves no denoising step; raise either")
    return strength


def check_scheduler(name: str | None, rules: ModelRules) -> str | None:
    spec, allowed = rules.spec, rules.family.schedulers
    if name is not None and name not in allowed:
        listed = ", ".join(allowed) or "none (only the model's own)"
        raise InvalidField("scheduler", f"{name!r} is not offered for {spec.family} models; allowed: {listed}")
    return name


def build_loras(
    loras: list[LoraRequest] | None, spec: ModelSpec, fetched: Mapping[int, tuple[AdapterFile, float]]
) -> tuple[tuple[str, float], ...]:
    """(name, scale) per named adapter, sorted by name (the batch key compares them). A run-time
    adapter (``fetched``) goes by its pipeline name, from its content."""
    if not loras:
        return ()
    declared = {a.name: a for a in spec.adapters}
    if len(loras) > spec.limits.max_adapters:
        raise InvalidField("loras", f"{len(loras)} adapters is over this model's maximum of {spec.limits.max_adapters}")
    chosen: dict[str, float] = {}
    for index, lora in enumerate(loras):
        if index in fetched:
            file, default = fetched[index]
            name, label = file.name, file.label
        elif lora.name in declared:
            name, label, default = lora.name, lora.name, declared[lora.name].scale
        else:
            listed = ", ".join(declared) or "none"
            raise InvalidField(f"loras.{index}.name", f"unknown adapter {lora.name!r}; this model's adapters: {listed} "
                               "(and those registered with POST /v1/adapters)")
        if name in chosen:
            raise InvalidField("loras", f"adapter {label!r} is named twice")
        chosen[name] = lora.scale if lora.scale is not None else default
    return tuple(sorted(chosen.items()))


def describe_loras(params: GenerationParams) -> list[LoraRequest]:
    """The adapters as a request names them: a declared or registered name, or a URL with its hash."""
    files = {f.name: f for f in params.adapter_files}
    out = []
    for name, scale in params.loras:
        file = files.get(name)
        if file is None:
            out.append(LoraRequest(name=name, scale=scale))
        elif "://" in file.label:
            out.append(LoraRequest(url=file.label, sha256=file.sha256, scale=scale))
        else:
            out.append(LoraRequest(name=file.label, scale=scale))
    return out


def new_seed() -> int:
    return secrets.randbelow(2**32)


def build_parameters_response(params: GenerationParams, output_format: OutputFormat) -> ParametersResponse:
    return ParametersResponse(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=params.width,
        height=params.height,
        steps=params.steps,
        guidance_scale=params.guidance_scale,
        seed=params.seeds[0],
        num_images=len(params.seeds),
        output_format=output_format,
        mode=params.mode,
        strength=params.strength,
        scheduler=params.scheduler,
        loras=describe_loras(params),
    )
