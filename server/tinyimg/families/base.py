"""What every model family shares: what a handler is called with and answers (one request, fully
resolved: ``GenerationParams``; one image made: ``GeneratedImage``; which requests may share one
call: ``batch_key``), loading a diffusers pipeline onto its device, and one pipeline call for a
whole batch of requests. The engine queues ``GenerationParams``; the job service builds them.

A family subclass says how to encode the prompts (of one request, or of a whole batch at once) and
which extra call arguments it needs; its ``Family`` declaration (same file) names the pipeline class. torch and diffusers are imported
inside methods only, and the registry imports this module, so it imports nothing heavy or circular
at the top.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyimg.families.acceleration import apply_acceleration, find_compiler, resolve_acceleration, use_step_cache
from tinyimg.families.memory import estimate_memory_gb, resolve_dtype_name
from tinyimg.families.variants import CallVariants
from tinyimg.safety.checkers import ContentChecker, load_checker

if TYPE_CHECKING:
    from tinyimg.families.preview import LatentRGBMap
    from tinyimg.spec import ModelSpec

log = logging.getLogger("tinyimg.engine")


@dataclass(frozen=True)
class GenerationParams:
    """One request, fully resolved (defaults applied, limits checked)."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    seeds: tuple[int, ...]  # one per image; len(seeds) == number of images
    request_id: str = ""
    mode: str = "txt2img"  # txt2img | img2img | inpaint
    strength: float | None = None  # img2img and inpaint: how much of the input is re-noised
    scheduler: str | None = None  # a name of the family's table; None: the model's own
    loras: tuple[tuple[str, float], ...] = ()  # (adapter, scale), sorted by name
    # The adapters of ``loras`` fetched at run time (by URL or registered): where each one's file
    # is, for the replica that does not hold it yet. Their names come from their content's hash,
    # so equal names are equal adapters and the batch key needs only ``loras``.
    adapter_files: tuple[AdapterFile, ...] = field(default=(), compare=False)
    # img2img/inpaint inputs (PIL images, already width x height): each request keeps its own in a
    # batch, so they are not part of equality or the batch key.
    image: Any = field(default=None, compare=False, repr=False)
    mask: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class AdapterFile:
    """A LoRA file fetched at run time (tinyimg.runtime.adapters): ``name`` is what the pipeline
    holds it as (from its SHA-256); ``label`` what the request named (its URL, or a registered name)."""

    name: str
    path: str
    sha256: str
    label: str = ""


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image.Image
    seed: int
    content_score: float | None = None  # the model's content checker's (tinyimg.safety), when it has one


def batch_key(params: GenerationParams) -> tuple[Any, ...]:
    """What must match for requests to share one pipeline call: everything that changes the
    computation for the whole call. Prompts, seeds and input images may differ (each image gets
    its own embeddings, generator and input)."""
    return (
        params.mode,
        params.width,
        params.height,
        params.steps,
        params.guidance_scale,
        params.scheduler,
        params.loras,
        params.strength,
    )

# What a step callback hands ``on_latents``: (first image, image count) -> those images' previews.
RenderPreviews = Callable[[int, int], list[Any]]
# ``on_latents(step, total, render)``: told after each step; calls ``render`` only when it wants previews.
LatentsHook = Callable[[int, int, RenderPreviews], None]


class Handler(CallVariants):
    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.pipe: Any = None
        self.device = "cpu"
        self.offload = "none"
        # (pipeline, its execution device): diffusers' ``_execution_device`` walks every module on each
        # read, so it is read once per pipeline; only load() places a pipeline or sets its offload.
        self._placed: tuple[Any, Any] | None = None
        # The fixed latent->RGB map for previews, fitted at load; None: this model has no previews.
        self.preview_map: LatentRGBMap | None = None
        self.checker: ContentChecker | None = None  # spec.safety's, loaded with the model
        self.acceleration = resolve_acceleration(spec, "cpu", compiler=False)  # resolved for the device at load
        self.phases: dict[str, float] = {}  # startup phase -> seconds (download, load; the warm-up adds its own)

    @classmethod
    def estimate_memory_gb(cls, spec: ModelSpec, device_kind: str = "cuda") -> float:
        return estimate_memory_gb(spec, cls.family, device_kind)

    def torch_dtype(self, device: str) -> Any:
        import torch

        return getattr(torch, resolve_dtype_name(self.spec, self.family, device.split(":")[0]))

    def load(self, device: str, offload: str = "none") -> None:
        """Load the weights (local directory or Hub repo id) and put the pipeline on ``device``."""
        import diffusers
        import transformers

        # Load progress goes to the structured log, not to tqdm bars on stderr.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        spec = self.spec
        local = spec.is_local_source()
        if local and not Path(spec.source).expanduser().is_dir():
            raise FileNotFoundError(f"model directory {spec.source} does not exist")
        pipeline_class = getattr(diffusers, self.family.pipeline_class)
        started = time.perf_counter()
        source = str(Path(spec.source).expanduser()) if local else download_pipeline(spec)
        loading = time.perf_counter()
        with warnings.catch_warnings():
            # diffusers 0.42 renamed torch_dtype to dtype; older releases (>= 0.35 is allowed) only
            # know torch_dtype, and silently load float32 when given dtype.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = pipeline_class.from_pretrained(
                source, variant=spec.variant, torch_dtype=self.torch_dtype(device), local_files_only=True,
            )
        pipe.set_progress_bar_config(disable=True)
        if device.startswith("cuda") and offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif device.startswith("cuda") and offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
        if spec.runtime.vae_tiling:
            pipe.vae.enable_tiling()
        self.pipe, self.device, self.offload = pipe, device, offload
        kind = device.split(":")[0]
        compiler = find_compiler(kind) is not None
        if not compiler and spec.runtime.acceleration.compile is None:
            log.warning("no C compiler on PATH: the model runs uncompiled", extra={"model": spec.name, "device": device})
        self.acceleration = resolve_acceleration(spec, kind, compiler=compiler)
        self._placed = None
        self.preview_map = self.fit_preview_map()
        self.load_adapters()
        self.checker = load_checker(spec.safety, device)
        self.phases = {"download": round(loading - started, 3), "load": round(time.perf_counter() - loading, 3)}

    def accelerate(self) -> None:
        """``runtime.acceleration`` (resolved for this device at load) on the loaded pipeline. The
        warm-up calls it after its reference image (tinyimg.runtime.warmup)."""
        apply_acceleration(self.pipe, self.family, self.acceleration, self.device)

    def fit_preview_map(self) -> LatentRGBMap | None:
        """The latent->RGB map for previews, from this model's own VAE (tinyimg.families.preview).
        Milliseconds for the tiny models; a failed fit only means no previews, never a failed load."""
        from tinyimg.families.preview import fit_vae_preview_map

        started = time.perf_counter()
        try:
            mapping = fit_vae_preview_map(self.pipe.vae, self.execution_device())
        except Exception as err:
            log.warning("no previews for this model: fitting its latent->RGB map failed",
                        extra={"model": self.spec.name, "error": f"{type(err).__name__}: {err}"})
            return None
        log.info("preview map fitted", extra={"model": self.spec.name,
                                              "seconds": round(time.perf_counter() - started, 4)})
        return mapping

    def preview_latents(self, latents: Any, params: GenerationParams) -> Any:
        """The step callback's latents (some images of the batch) as (N, C, h, w) in the
        pipeline's latent space. Families whose pipelines pack latents unpack them here."""
        return latents

    def render_previews(self, latents: Any, params: GenerationParams) -> list[Any]:
        """Preview images (PIL, longest side at most 128 px) of the step callback's ``latents``."""
        from tinyimg.families.preview import apply_linear_map, build_preview_images, build_preview_size

        if self.preview_map is None:
            raise RuntimeError(f"model {self.spec.name!r} has no preview map (its fit failed at load)")
        rgb = apply_linear_map(self.preview_map, self.preview_latents(latents, params))
        return build_preview_images(rgb, build_preview_size(params.width, params.height))

    def generate(
        self,
        batch: list[GenerationParams],
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        on_latents: LatentsHook | None = None,
        on_phase: Callable[[str], None] | None = None,
        tiled: bool = False,
    ) -> list[list[GeneratedImage]]:
        """ONE pipeline call for every image of every request in ``batch`` (equal batch keys).

        Each image gets its own CPU generator seeded with its seed, and each request keeps its own
        prompt and negative prompt (all encoded together, see ``encode_prompts``), so an image does
        not depend on its batch neighbours (up to float rounding in batched kernels: at most 1/255
        per pixel). ``should_stop`` is asked after every denoising step; once it says yes the
        remaining steps are skipped (the images that come back are unfinished: for callers that
        have gone, deadline passed or hung up).
        ``on_step(step, total)`` hears each finished step (1-based), for progress reports;
        ``on_latents(step, total, render)`` too, right after it, with ``render(start, count)``
        making the previews of the batch's images ``start .. start + count - 1`` at that step.
        ``on_phase(name)`` hears "prepared" once the batch's adapters are in place and "encoded"
        once its prompts are (the trace's phases: tinyimg.runtime.batchtrace). ``tiled`` decodes in
        tiles for this call (the last try of an image that ran out of memory: tinyimg.runtime.oom)."""
        import torch

        head = batch[0]
        if any(batch_key(p) != batch_key(head) for p in batch):
            raise ValueError("a batch must share its batch key (tinyimg.families.base.batch_key)")
        generators = [torch.Generator("cpu").manual_seed(seed) for p in batch for seed in p.seeds]
        hooked = should_stop is not None or on_step is not None or on_latents is not None
        render = self.build_preview_renderer(head) if on_latents is not None else None
        stop = {"callback_on_step_end": build_stop_callback(should_stop, on_step, on_latents, render)} if hooked else {}
        with torch.inference_mode():
            # First: the adapters this batch names may adapt the text encoders too.
            pipeline, mode_arguments = self.prepare_call(batch)
            if on_phase is not None:
                on_phase("prepared")
            embeddings = self.encode_prompts(batch)
            if on_phase is not None:
                on_phase("encoded")
            if self.acceleration.step_cache != "none":
                use_step_cache(self.pipe, self.family, self.acceleration, len(generators))
            with self.tiling(tiled):
                images = pipeline(
                    **embeddings,
                    **self.call_arguments(head),
                    **mode_arguments,
                    num_inference_steps=head.steps,
                    generator=generators,
                    output_type="pil",
                    **stop,
                ).images
        # The content check: every image of the call at once, on this (the device's) thread.
        scores: list[float | None] = list(self.checker.score(images)) if self.checker is not None else [None] * len(images)
        results, start = [], 0
        for p in batch:
            mine = images[start : start + len(p.seeds)]
            results.append([GeneratedImage(img, seed, score)
                            for img, seed, score in zip(mine, p.seeds, scores[start : start + len(p.seeds)], strict=True)])
            start += len(p.seeds)
        return results

    @contextlib.contextmanager
    def tiling(self, on: bool) -> Iterator[None]:
        """VAE tiling for one call, when the model does not tile always."""
        if not on or self.spec.runtime.vae_tiling:
            yield
            return
        self.pipe.vae.enable_tiling()
        try:
            yield
        finally:
            self.pipe.vae.disable_tiling()

    def build_preview_renderer(self, params: GenerationParams) -> Callable[[Any, int, int], list[Any]]:
        """(latents of the whole batch, start, count) -> previews of those images (one batch
        shares width and height, so ``params`` of its head serve every image)."""
        return lambda latents, start, count: self.render_previews(latents[start : start + count], params)

    def execution_device(self) -> Any:
        """Where the text encoders run (with offload: where the hooks move them), read once per pipeline."""
        if self._placed is None or self._placed[0] is not self.pipe:
            self._placed = (self.pipe, self.pipe._execution_device)
        return self._placed[1]

    def encode_prompts(self, batch: list[GenerationParams]) -> dict[str, Any]:
        """The pipeline's embedding arguments for every image of ``batch``, in order (a request's
        rows repeated once per seed). This default encodes one request at a time with
        ``encode_prompt``; SDXL and Flux override it with one text-encoder call per batch."""
        import torch

        embeddings = [self.encode_prompt(p, len(p.seeds)) for p in batch]
        return {key: torch.cat([e[key] for e in embeddings]) for key in embeddings[0]}

    def encode_prompt(self, params: GenerationParams, count: int) -> dict[str, Any]:
        """The pipeline's embedding arguments for one request, repeated ``count`` times."""
        raise NotImplementedError

    def call_arguments(self, params: GenerationParams) -> dict[str, Any]:
        return {"guidance_scale": params.guidance_scale}


def download_pipeline(spec: ModelSpec) -> str:
    """A Hub model's files into the cache (HF_HOME; nothing when they are there): their local
    directory. The loader and ``tinyimg preload`` (tinyimg.runtime.preload) both fetch through it."""
    import diffusers

    from tinyimg.families import family_info

    pipeline_class = getattr(diffusers, family_info(spec.family).pipeline_class)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return str(pipeline_class.download(spec.source, revision=spec.revision, variant=spec.variant))


def repeat_per_image(rows: Any, batch: list[GenerationParams]) -> Any:
    """One row per request -> one row per image: request i's row repeated once per seed."""
    import torch

    counts = [len(p.seeds) for p in batch]
    if all(count == 1 for count in counts):
        return rows
    return rows.repeat_interleave(torch.tensor(counts, device=rows.device), dim=0)


def build_stop_callback(
    should_stop: Callable[[], bool] | None,
    on_step: Callable[[int, int], None] | None = None,
    on_latents: LatentsHook | None = None,
    render: Callable[[Any, int, int], list[Any]] | None = None,
) -> Callable[..., dict[str, Any]]:
    """A diffusers ``callback_on_step_end`` that reports each finished step to ``on_step(step,
    total)`` and interrupts the denoising loop (diffusers' own switch: the pipeline skips the
    remaining steps, then decodes) once ``should_stop()`` is true. ``total`` is the pipeline's own
    count of timesteps (fewer than ``steps`` when a strength below 1 skips some). ``on_latents``
    hears each step too, with a function rendering previews of that step's latents (``render``
    given the latents, the first image and the image count); it renders only what it asks for."""

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = int(getattr(pipe, "num_timesteps", 0) or step + 1)
        if on_step is not None:
            on_step(step + 1, total)
        if on_latents is not None and render is not None:
            latents = tensors["latents"]
            on_latents(step + 1, total, lambda start, count: render(latents, start, count))
        if should_stop is not None and should_stop():
            pipe._interrupt = True
        return tensors

    return on_step_end
