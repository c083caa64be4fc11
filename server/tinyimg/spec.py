"""The one schema: a model's spec and the server's config.

A ``ModelSpec`` is one ``models:`` entry of config.yaml, the ``spec`` of an ImageModel resource
(minus ``name``, which is the resource's ``metadata.name``), the ConfigMap a model pod reads, and
part of what ``/models`` reports. The CRD's schema is generated from it. Wire names are camelCase.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from tinyimg.http.limits import EdgeLimits

if TYPE_CHECKING:
    from tinyimg.families.family import Family

# Model names become Kubernetes object names and label values (DNS-1035 label, room for suffixes).
MODEL_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
DevicePolicy = Literal["auto", "cuda", "cpu"]
OffloadMode = Literal["none", "model", "sequential"]


class _Schema(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """camelCase JSON-able dict, leaving out unset optionals (what YAML and the CR carry)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class DefaultsSpec(_Schema):
    """Request defaults; an unset field takes the family's default (see ``ModelSpec.resolved``)."""

    steps: int | None = Field(None, ge=1, le=1000, description="Denoising steps; unset: the family's.")
    guidance_scale: float | None = Field(None, ge=0.0, le=50.0, description="Classifier-free guidance; unset: the family's.")
    width: int | None = Field(None, ge=16, le=8192, description="Pixels; unset: the family's default size.")
    height: int | None = Field(None, ge=16, le=8192, description="Pixels; unset: the family's default size.")
    negative_prompt: str | None = Field(None, max_length=10_000, description="Used when a request gives none (families that support one).")


class ResolvedDefaults(DefaultsSpec):
    """``ModelSpec.resolved_defaults()``: every field but ``negative_prompt`` is set."""

    steps: int
    guidance_scale: float
    width: int
    height: int


class LimitsSpec(_Schema):
    """What one request may ask for; anything beyond is a 422 naming the field."""

    max_width: int = Field(2048, ge=16, le=8192, description="Pixels.")
    max_height: int = Field(2048, ge=16, le=8192, description="Pixels.")
    max_steps: int = Field(100, ge=1, le=1000, description="Denoising steps per request.")
    max_images: int = Field(4, ge=1, le=64, description="Images per request.")
    max_prompt_length: int = Field(2000, ge=1, le=100_000, description="Characters.")
    max_input_pixels: int = Field(
        16_777_216, ge=256, le=89_478_485,  # Pillow refuses more than this on its own
        description="Largest img2img/inpaint input (width x height, read from its header before decoding).",
    )
    max_adapters: int = Field(4, ge=0, le=16, description="LoRA adapters per request.")


CompileMode = Literal["none", "regional", "full"]
QuantizeMode = Literal["none", "int8", "fp8"]
StepCacheMode = Literal["none", "first-block"]
# diffusers' attention backends (diffusers.models.attention_dispatch.AttentionBackendName) a model
# may ask for, and "sdpa" (PyTorch's scaled_dot_product_attention, diffusers' default). Listed here
# so the schema stays import-light; tests/unit/server/test_acceleration.py checks each against diffusers.
ATTENTION_BACKENDS = (
    "sdpa", "native", "flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "flex", "sage", "sage_varlen",
    "xformers", "_native_cudnn", "_native_efficient", "_native_flash", "_native_math",
)


class StepCacheSpec(_Schema):
    """diffusers' first-block cache: when the first transformer block's output barely changes from
    the previous step, the remaining blocks are skipped and their last residual reused."""

    mode: StepCacheMode = Field("none", description="none, or first-block (transformer families; batches of one image only).")
    threshold: float = Field(0.08, gt=0.0, le=1.0, description="Relative change of the first block's output below which a step reuses the cache: higher skips more.")


class AccelerationSpec(_Schema):
    """Speed-ups applied at load, each checked at warm-up against the plain pipeline (``minQuality``).
    An unset field takes the device's default: on a GPU the lossless tier (fused QKV, channels_last,
    regional compile); on the CPU the plain pipeline (none of them measurably helps there:
    BENCHMARKS.md, "Acceleration")."""

    compile: CompileMode | None = Field(None, description="torch.compile: regional (the repeated blocks, and the VAE decoder's blocks: fast to compile), full (whole modules), none; unset: regional on a GPU, none on the CPU.")
    fuse_qkv: bool | None = Field(None, description="Fuse the attention's query/key/value projections into one matmul; unset: on for a GPU.")
    channels_last: bool | None = Field(None, description="channels_last memory format for the convolutions (UNet, VAE); unset: on for a GPU.")
    quantize: QuantizeMode = Field("none", description="torchao weights of the denoiser: int8 (weight-only), fp8 (dynamic fp8 activations and weights: GPUs with compute capability 8.9+, with compile).")
    attention: str = Field("sdpa", description=f"The attention backend: sdpa (PyTorch's), or one of diffusers': {', '.join(ATTENTION_BACKENDS[1:])}.")
    step_cache: StepCacheSpec = Field(default_factory=StepCacheSpec, description="Skip transformer blocks on steps that change little (off by default: it trades quality for speed).")
    min_quality: float = Field(30.0, ge=0.0, le=100.0, description="Lowest PSNR (dB) of the accelerated pipeline's image against the plain one at warm-up (same seed); below it the model is Degraded (AccelerationQuality) and does not serve.")

    @field_validator("attention")
    @classmethod
    def _known_backend(cls, attention: str) -> str:
        if attention not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {attention!r}; known: {', '.join(ATTENTION_BACKENDS)}")
        return attention

    @model_validator(mode="after")
    def _fp8_needs_compile(self) -> AccelerationSpec:
        if self.quantize == "fp8" and self.compile == "none":
            raise ValueError("quantize fp8 needs compile (regional or full): uncompiled fp8 is slower than bf16")
        return self


class WarmupShape(_Schema):
    width: int = Field(ge=16, le=8192, description="Pixels.")
    height: int = Field(ge=16, le=8192, description="Pixels.")
    batch: int = Field(1, ge=1, le=64, description="Images in one pipeline call.")


class RuntimeSpec(_Schema):
    """How the model server runs the model on its machine."""

    device: DevicePolicy = Field("auto", description="auto: a GPU that can hold the model; cuda: GPUs only; cpu: the CPU.")
    cpu_fallback: bool = Field(False, description="Run on CPU when no GPU can hold the model.")
    offload: OffloadMode = Field("none", description="CPU offload for a model that does not fit: model (whole modules) or sequential (layers, slowest).")
    vae_tiling: bool = Field(False, description="Decode in tiles: lower peak memory at large sizes.")
    compile: bool = Field(False, description="Deprecated: true means acceleration.compile full (when that is unset).")
    acceleration: AccelerationSpec = Field(default_factory=AccelerationSpec, description="Compile, fused attention, quantization, step caching: measured at warm-up.")
    warmup_shapes: list[WarmupShape] = Field(default_factory=list, max_length=32, description="Shapes (size x batch) run at warm-up, so none compiles in the middle of traffic; unset: the default size at batch 1. Another shape still works (a compiled model recompiles for it, counted in tinyimg_shape_recompiles_total).")
    max_batch_size: int = Field(4, ge=1, le=64, description="Images per pipeline call.")
    max_batch_wait_ms: int = Field(20, ge=0, le=10_000, description="How long a request may wait for batch mates recently answered clients are expected to send.")
    queue_size: int = Field(64, ge=1, le=100_000, description="Requests waiting for this model (one queue per model, whichever of its replicas is free takes the next batch).")
    request_timeout_seconds: float = Field(300.0, gt=0, le=86_400, description="Queue wait plus generation, at most; past it 504 deadline_exceeded.")
    memory_gb: float | None = Field(None, gt=0, description="Override the memory estimate.")
    max_resident_adapters: int = Field(8, ge=1, le=256, description="LoRA adapters named by URL or registered at run time kept loaded per replica (least recently used dropped first); declared adapters stay loaded and do not count.")


class ResourcesSpec(_Schema):
    """Per replica, in the cluster."""

    gpus: int = Field(1, ge=0, le=16, description="nvidia.com/gpu per replica: one model replica per GPU.")
    cpu: str | None = Field("2", pattern=QUANTITY_PATTERN, description="CPU request (a Kubernetes quantity).")
    memory: str | None = Field("16Gi", pattern=QUANTITY_PATTERN, description="Memory request; also the limit unless memoryLimit is set.")
    cpu_limit: str | None = Field(None, pattern=QUANTITY_PATTERN, description="CPU limit; unset: none.")
    memory_limit: str | None = Field(None, pattern=QUANTITY_PATTERN, description="Memory limit; unset: the request.")


class TolerationSpec(_Schema):
    key: str | None = Field(None, description="The taint key tolerated; unset with Exists: every taint.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Equal (the default) or Exists.")
    value: str | None = Field(None, description="The taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="The taint effect; unset: every effect.")
    toleration_seconds: int | None = Field(None, description="With NoExecute: how long the pod stays after the taint appears.")


CacheAccessMode = Literal["ReadWriteOnce", "ReadWriteMany"]


class CacheSpec(_Schema):
    """The model-cache volume (HF_HOME): a PVC when ``size`` is set, else an emptyDir."""

    # One PVC is shared by every replica, so more than one replica needs ReadWriteMany: a
    # ReadWriteOnce volume attaches to one node only, and replicas on other nodes would never start.
    size: str | None = Field(None, pattern=QUANTITY_PATTERN, description="A PVC of this size caches the weights across restarts; unset: an emptyDir.")
    storage_class_name: str | None = Field(None, description="The PVC's StorageClass; unset: the cluster's default.")
    access_mode: CacheAccessMode = Field(
        "ReadWriteOnce",
        description="ReadWriteMany (NFS, CephFS, ...) lets several replicas share one cache PVC;"
        " ReadWriteOnce allows one replica.",
    )

    preload: bool = Field(
        False,
        description="Fill the cache once with a loader Job (`tinyimg preload`) before any pod loads: pods wait for it;"
        " status.cache tells what it holds. Needs size and accessMode ReadWriteMany.",
    )

    def shareable_by(self, replicas: int) -> bool:
        return not self.size or replicas <= 1 or self.access_mode == "ReadWriteMany"


class SecretKeySpec(_Schema):
    name: str = Field(min_length=1, description="The Secret, in the ImageModel's namespace.")
    key: str = Field("token", min_length=1, description="The data key holding the value.")


# A request's adapter scale: beyond this a LoRA only burns the image.
ADAPTER_SCALE_RANGE = (-2.0, 2.0)


class AdapterSpec(_Schema):
    """A LoRA adapter the model may use: loaded with the model, active only for the requests that
    name it (``loras`` in a request)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$", description="What a request's `loras` names it by.")
    source: str = Field(min_length=1, description="A Hugging Face repo id (org/name) or a local directory.")
    weight_name: str | None = Field(None, description="The weight file in source, when it holds several.")
    scale: float = Field(
        1.0, ge=ADAPTER_SCALE_RANGE[0], le=ADAPTER_SCALE_RANGE[1], description="When a request gives none."
    )

    def is_local_source(self) -> bool:
        return self.source.startswith(("/", "./", "../", "~"))


class AdapterSourcesSpec(_Schema):
    """Where a request may fetch a LoRA adapter from by URL (``loras: [{url, sha256}]``) and how
    much of them the model server keeps on disk. No hosts: adapters by URL are off."""

    allowed_hosts: list[str] = Field(default_factory=list, max_length=100, description="Hosts adapter URLs may name: an https:// URL's host (host or host:port), `huggingface.co` for hf:// URLs, the bucket for s3:// URLs.")
    allow_http: bool = Field(False, description="Also accept plain http:// URLs from the allowed hosts (an in-cluster mirror; the sha256 still checks every byte).")
    max_adapter_bytes: int = Field(1 << 30, ge=1024, le=1 << 36, description="Largest adapter file fetched, in bytes.")
    max_cache_bytes: int = Field(20 << 30, ge=1 << 20, le=1 << 44, description="Adapter files kept on disk for this model (least recently used removed first), in bytes.")

    @field_validator("allowed_hosts")
    @classmethod
    def _plain_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?(:[0-9]{1,5})?", host):
                raise ValueError(f"{host!r} is not a host name (host or host:port, no scheme or path)")
        return [h.lower() for h in hosts]


class CanarySpec(_Schema):
    """A new revision (a change of weights) first takes a share of the router's traffic, step by
    step, and is promoted after the last step, or rolled back when it does worse than the running one."""

    steps: list[int] = Field([10, 50, 100], min_length=1, max_length=10, description="The new revision's share of requests (percent) at each step, increasing; after the last it is promoted.")
    interval_seconds: int = Field(60, ge=1, le=86_400, description="How long each step lasts (from the new revision's first Ready pod) before it is judged.")
    max_error_ratio: float = Field(0.05, ge=0, le=1, description="Rolled back when its failed/answered requests in a step exceed the running revision's by more than this.")
    max_latency_ratio: float = Field(1.5, gt=1, le=100, description="Rolled back when its seconds per denoising step in a step exceed the running revision's times this.")

    @field_validator("steps")
    @classmethod
    def _increasing_percentages(cls, steps: list[int]) -> list[int]:
        if any(not 1 <= s <= 100 for s in steps) or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must be increasing percentages from 1 to 100")
        return steps


DEFAULT_WATERMARK_TEXT = "tinyimg"


class ProvenanceSpec(_Schema):
    """What each image says about itself (``tinyimg.provenance``): generation parameters in the
    file and an invisible watermark. Off by default: the image bytes are the pipeline's alone."""

    parameters: bool = Field(False, description="Generation parameters (model, revision, seed, steps, sampler, adapters; the prompt only with includePrompt) in the file: a PNG text chunk and XMP (JPEG, WebP), with the IPTC mark 'trainedAlgorithmicMedia'.")
    include_prompt: bool = Field(False, description="With parameters: the prompt and negative prompt too.")
    watermark: bool = Field(False, description="An invisible watermark (invisible-watermark's DWT-DCT-SVD) in every image at least 256 pixels on a side; it survives PNG and JPEG at quality 90.")
    watermark_text: str = Field(DEFAULT_WATERMARK_TEXT, min_length=1, max_length=200, description="What the watermark encodes (a hash of it): one text per deployment, so `tinyimg audit verify --config` recognises its images.")
    c2pa: bool = Field(False, alias="c2pa", description="A C2PA manifest (content credentials) signed with the deployment's key (c2paCertFile, c2paKeyFile; in a cluster the chart's provenance.c2paSecret), declaring the image AI-generated by this model.")


SafetyPolicy = Literal["flag", "blur", "block"]


class SafetySpec(_Schema):
    """Content checks (``tinyimg.safety``): a checker scores every image after decoding, on the
    device thread, for the whole batch at once; the policy says what a flagged image becomes."""

    checker: Literal["classifier", "sd-safety-checker"] | None = Field(None, description="A registered content checker: classifier (an image classifier, given as source) or sd-safety-checker (the Stable Diffusion safety checker); unset: images are not checked.")
    source: str | None = Field(None, description="The checker's weights: a local directory or a Hugging Face repo id.")
    policy: SafetyPolicy = Field("flag", description="flag: answered with content_flags; blur: flagged images blurred (and flagged); block: a request with a flagged image is refused 422 content_blocked and none of its bytes are kept. A tenant's safetyPolicy wins.")
    threshold: float = Field(0.5, ge=0, le=1, description="An image is flagged when its score (the flagged labels' probability; sd-safety-checker: 0 or 1) reaches it.")
    flagged_labels: list[str] = Field(["nsfw"], min_length=1, max_length=100, description="classifier: the labels that count as flagged (case-insensitive).")
    deny_prompts: list[str] = Field(default_factory=list, max_length=1000, description="Words or phrases refused in prompts and negative prompts (case-insensitive, whole words): 422 content_blocked before the request is queued.")

    @model_validator(mode="after")
    def _checker_needs_a_source(self) -> SafetySpec:
        if self.checker is not None and not self.source:
            raise ValueError("safety.checker is set but safety.source is not: the checker's weights")
        return self


class RolloutSpec(_Schema):
    """How a change that needs new pods reaches them."""

    strategy: Literal["recreate", "surge"] | None = Field(None, description="recreate: replace pods one at a time (no spare GPU needed, a one-replica model is down meanwhile); surge: start the new pod before the old one stops (needs a spare GPU; says so while none is free). Unset: surge without GPUs, recreate with them.")
    canary: CanarySpec | None = Field(None, description="A change of weights (source, revision, variant, dtype, family, image) becomes a new revision that takes traffic step by step.")


class AutoscalingSpec(_Schema):
    """Replicas follow load (queued + in-flight requests); off by default: then ``replicas`` is the
    manual value, exactly as before. With it on, ``replicas`` is only the first value (clamped)."""

    enabled: bool = Field(False, description="Scale with load (the chart's autoscaling.controller decides who scales).")
    min_replicas: int = Field(1, ge=0, le=100, description="0 allows scale to zero.")
    max_replicas: int = Field(4, ge=1, le=100, description="The most replicas load may bring.")
    target_queue_per_replica: float = Field(
        2.0, gt=0, le=10_000,
        description="Queued + in-flight requests one replica should carry (an image takes seconds: keep it small).",
    )
    scale_up_stabilization_seconds: int = Field(0, ge=0, le=3600, description="How long load must stay high before adding replicas.")
    scale_down_delay_seconds: int = Field(300, ge=0, le=86_400, description="How long load must stay low before removing replicas.")
    scale_to_zero_after_seconds: int = Field(900, ge=0, le=86_400, description="Idle time before going to 0 (with minReplicas 0).")
    cold_start_timeout_seconds: int = Field(
        600, ge=1, le=86_400, description="How long the router holds a request for a model with no ready pod."
    )

    @model_validator(mode="after")
    def _min_within_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas {self.min_replicas} is over maxReplicas {self.max_replicas}")
        return self


class S3StoreSpec(_Schema):
    """An S3-compatible bucket for job results (AWS S3, GCS interoperability, MinIO, R2). Credentials
    come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ...), never the config."""

    bucket: str = Field(min_length=3, max_length=63, description="The bucket's name.")
    endpoint: str | None = Field(None, description="The service's URL (MinIO, R2, GCS); unset = AWS S3 for the region.")
    region: str = Field("us-east-1", description="The bucket's region (what presigned URLs are signed for).")
    prefix: str = Field("", description="Key prefix of every object this server writes.")


class ResultStoreSpec(_Schema):
    """Where finished jobs and their images are written: a directory (one machine, or a
    ReadWriteMany volume shared by the pods and the router) or an S3-compatible bucket."""

    dir: str | None = Field(None, description="A directory (created when missing).")
    s3: S3StoreSpec | None = Field(None, description="An S3-compatible bucket.")

    @model_validator(mode="after")
    def _one_backend(self) -> ResultStoreSpec:
        if (self.dir is None) == (self.s3 is None):
            raise ValueError("give exactly one of dir or s3")
        return self


class JobsConfig(_Schema):
    """The jobs API (``/v1/jobs``): how long results stay, how much memory they may take, how
    progress is streamed, and where webhooks may go."""

    result_ttl_seconds: float = Field(3600.0, gt=0, le=7 * 86_400, description="Finished jobs are kept this long.")
    max_result_bytes: int = Field(
        256 * 2**20, ge=1024, description="Encoded images kept, all finished jobs together; oldest evicted first."
    )
    progress_interval_ms: int = Field(100, ge=0, le=60_000, description="At most one progress event this often.")
    preview_interval_ms: int = Field(
        1000, ge=0, le=60_000, description="At most one preview event this often, per job that asked for previews."
    )
    keepalive_seconds: float = Field(15.0, gt=0, le=300, description="SSE comment sent after this much silence.")
    max_streams_per_job: int = Field(16, ge=1, le=10_000, description="Event streams open at once on one job.")
    max_streams_per_client: int = Field(
        64, ge=1, le=100_000, description="Event streams open at once per API key (per client address without keys)."
    )
    max_streams: int = Field(256, ge=1, le=100_000, description="Event streams open at once in the process.")
    webhook_allowed_hosts: list[str] | None = Field(
        None, description="Host names (or addresses) webhooks may call; unset = no webhooks."
    )
    webhook_secret_file: str | None = Field(
        None, description="HMAC secret for webhook signatures (whsec_<base64> or raw bytes); needed for webhooks."
    )
    webhook_max_attempts: int = Field(5, ge=1, le=20, description="Deliveries tried per webhook (retried on 5xx, 429 and no answer).")
    webhook_backoff_seconds: float = Field(1.0, ge=0, le=600, description="First retry delay; doubles each time.")
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120, description="How long one delivery may take.")
    redis_url: str | None = Field(
        None, pattern=r"^rediss?://", description="A Redis for the shared job queue, state and events; unset = in-process."
    )
    result_store: ResultStoreSpec | None = Field(
        None, description="Where results are written; unset = the directory .tinyimg/results under the working directory."
    )
    url_ttl_seconds: int = Field(
        3600, ge=1, le=7 * 86_400, description="How long an image URL (presigned, no Authorization) stays valid."
    )
    max_attempts: int = Field(3, ge=1, le=20, description="Times a job is taken by a pod before it fails worker_lost.")
    max_queued_jobs: int = Field(
        10_000, ge=1, le=10_000_000,
        description="Jobs in a model's shared queue (waiting or running) before POST /v1/jobs answers 429 queue_full.",
    )
    visibility_timeout_seconds: float = Field(
        30.0, ge=1, le=3600, description="A job taken by a pod that stops answering is taken again after this long."
    )


class PodServerSettings(_Schema):
    """The settings of ``tinyimg serve`` besides its models, as a cluster sets them for a model's
    pods: the chart's ``server`` value for every model, then a model's own ``spec.server`` over it
    (a field given in both takes the model's; ``jobs`` is merged field by field). Unset: the
    server's defaults. Keys (``apiKeysFile``) are checked by the router, so pods have none."""

    max_body_bytes: int | None = Field(None, ge=1024, description="Largest accepted request body.")
    max_body_bytes_total: int | None = Field(None, ge=1024, description="Request bodies held at once, all requests.")
    max_connections: int | None = Field(None, ge=1, description="Open connections per pod.")
    trusted_proxies: list[str] | None = Field(None, description="Whose X-Forwarded-For/-Proto are believed.")
    jobs: JobsConfig | None = Field(None, description="The jobs API (webhook allow-list, result TTL and bound, ...).")

    def wire_set(self) -> dict[str, Any]:
        """Only what was given, camelCase (for merging two layers)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)


def merge_server_settings(*layers: PodServerSettings | None) -> dict[str, Any]:
    """Later layers win, field by field (``jobs`` too): the wire dict of the merged settings."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer.wire_set() if layer is not None else {}).items():
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


def read_families() -> Mapping[str, Family]:
    """The family registry (``tinyimg.families``), read when a spec is checked. The registry stands
    above the schema (its handlers are built from a ``ModelSpec``), so the schema names a family by
    its key and imports the registry on use, not with itself: the router and the operator load the
    schema without the families."""
    from tinyimg.families import FAMILIES

    return FAMILIES


def read_family(key: str) -> Family:
    from tinyimg.families import family_info

    return family_info(key)


class ModelSpec(_Schema):
    name: str = Field(min_length=1, max_length=50, pattern=MODEL_NAME_PATTERN)
    # Checked against the registry when a spec is read (not frozen into the class), so a family
    # registered later (a test's fixture family) is valid too; the schema lists the registered keys.
    family: str = Field(description="The model family (its pipeline and prompt handling): a key of the family registry.",
                        json_schema_extra=lambda schema: schema.update(enum=list(read_families())))
    source: str = Field(
        min_length=1, description="A Hugging Face repo id (org/name) or a local directory."
    )
    revision: str | None = Field(None, description="A Hub branch, tag or commit; unset: main.")
    variant: str | None = Field(None, description='Weight file variant, e.g. "fp16".')
    dtype: Dtype = Field("auto", description="Weights' precision on a GPU; auto: the family's (CPUs always run float32).")
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    adapters: list[AdapterSpec] = Field(default_factory=list, max_length=64, description="LoRA adapters loaded with the model; a request names the ones it uses.")
    adapter_sources: AdapterSourcesSpec = Field(default_factory=AdapterSourcesSpec, description="Adapters a request names by URL: the hosts allowed and the disk cache.")
    # Cluster fields: read by the operator, ignored by a standalone server.
    replicas: int = Field(1, ge=0, le=100, description="Pods of this model; with autoscaling on, only the first value.")
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the model's pods must run on (a GPU pool).")
    tolerations: list[TolerationSpec] = Field(default_factory=list, description="Taints the model's pods tolerate (tainted GPU nodes).")
    cache: CacheSpec = Field(default_factory=CacheSpec)
    startup_timeout_seconds: int = Field(1800, ge=10, le=86_400, description="How long a pod may take to download, load and warm up before it is restarted.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables of the model-server container.")
    image: str | None = Field(None, description="Override the operator's model-server image.")
    hf_token_secret: SecretKeySpec | None = Field(None, description="A Secret holding a Hugging Face token (gated repos such as FLUX.1-dev).")
    server: PodServerSettings | None = Field(None, description="Server settings for this model's pods, over the chart's.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How pods are replaced, and canary revisions.")
    provenance: ProvenanceSpec = Field(default_factory=ProvenanceSpec, description="Parameters in the file and an invisible watermark (live).")
    safety: SafetySpec = Field(default_factory=SafetySpec, description="Content checks after decoding and a prompt deny-list.")

    def weight_revision(self) -> str:
        """The revision of the model's weights: equal for two specs that load the same weights in
        the same image (a change of anything in ``WEIGHT_FIELDS`` is a new revision)."""
        key = {f: getattr(self, f) for f in WEIGHT_FIELDS}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        known = read_families()
        if family not in known:
            raise ValueError(f"unknown family {family!r}; known: {', '.join(known)}")
        return family

    @field_validator("adapters")
    @classmethod
    def _unique_adapters(cls, adapters: list[AdapterSpec]) -> list[AdapterSpec]:
        names = [a.name for a in adapters]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"adapter name {name!r} appears twice")
        return adapters

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"env name {key!r} is not a valid variable name")
        return env

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> ModelSpec:
        d, lim, multiple = self.resolved_defaults(), self.limits, read_family(self.family).size_multiple
        for field, value, top in (("width", d.width, lim.max_width), ("height", d.height, lim.max_height)):
            if value > top:
                raise ValueError(f"defaults.{field} {value} is over limits.max{field.title()} {top}")
            if value % multiple:
                raise ValueError(f"defaults.{field} {value} is not a multiple of {multiple}")
        if d.steps > lim.max_steps:
            raise ValueError(f"defaults.steps {d.steps} is over limits.maxSteps {lim.max_steps}")
        self._check_acceleration(read_family(self.family))
        if self.cache.preload and not (self.cache.size and self.cache.access_mode == "ReadWriteMany"):
            raise ValueError("cache.preload fills one volume every pod reads: it needs cache.size and"
                             " cache.accessMode ReadWriteMany")
        if self.runtime.device == "cpu" and self.resources.gpus:
            raise ValueError("runtime.device is cpu but resources.gpus is not 0")
        # The autoscaler may run up to maxReplicas pods: each would need the one volume.
        pods = max(self.replicas, self.autoscaling.max_replicas if self.autoscaling.enabled else 0)
        if not self.cache.shareable_by(pods):
            field = "replicas" if pods == self.replicas else "autoscaling.maxReplicas"
            raise ValueError(
                f"cache.accessMode ReadWriteOnce cannot be shared by {pods} pods ({field}): set"
                " cache.accessMode: ReadWriteMany, or drop cache.size (a per-pod emptyDir)"
            )
        return self

    def _check_acceleration(self, family: Family) -> None:
        """What the family cannot do: a step cache without transformer blocks, warm-up shapes its
        VAE cannot make or its limits refuse."""
        runtime, lim = self.runtime, self.limits
        if runtime.acceleration.step_cache.mode != "none" and family.denoiser != "transformer":
            raise ValueError(f"runtime.acceleration.stepCache: {runtime.acceleration.step_cache.mode} caches transformer"
                             f" blocks; family {self.family!r} denoises with a {family.denoiser}")
        for i, shape in enumerate(runtime.warmup_shapes):
            for field, value, top in (("width", shape.width, lim.max_width), ("height", shape.height, lim.max_height)):
                if value > top or value % family.size_multiple:
                    raise ValueError(f"runtime.warmupShapes[{i}].{field} {value} must be a multiple of"
                                     f" {family.size_multiple} and at most limits.max{field.title()} {top}")
            if shape.batch > runtime.max_batch_size:
                raise ValueError(f"runtime.warmupShapes[{i}].batch {shape.batch} is over runtime.maxBatchSize {runtime.max_batch_size}")

    def resolved_defaults(self) -> ResolvedDefaults:
        """The defaults with the family's values filled in where the spec leaves them unset."""
        info = read_family(self.family)
        d = self.defaults
        return ResolvedDefaults(
            steps=d.steps if d.steps is not None else info.default_steps,
            guidance_scale=d.guidance_scale if d.guidance_scale is not None else info.default_guidance,
            width=d.width if d.width is not None else info.default_size,
            height=d.height if d.height is not None else info.default_size,
            negative_prompt=d.negative_prompt,
        )

    def is_local_source(self) -> bool:
        return self.source.startswith(("/", "./", "../", "~"))


class ServerConfig(_Schema):
    """What ``tinyimg serve`` reads: listening options and the models."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(
        EdgeLimits.max_body_bytes, ge=1024,
        description="Largest accepted request body (8 MiB: a 1024² PNG and its mask as base64 JSON fit).",
    )
    max_body_bytes_total: int = Field(
        EdgeLimits.max_body_bytes_total, ge=1024,
        description="Request bodies held at once by the process, all requests together; past it 503 server_busy.",
    )
    api_keys_file: str | None = Field(
        None, description="One key per line, or YAML with tenants (docs/guides/tenants.md); unset = no auth.")
    router_secret_file: str | None = Field(
        None, description="The router's job secret: its job headers are then believed only when signed with it."
    )
    trusted_proxies: list[str] | None = Field(
        None, description="Addresses or networks whose X-Forwarded-For/-Proto are believed; unset = none."
    )
    max_connections: int | None = Field(None, ge=1, description="Open connections per process; unset = 1000.")
    adapter_cache_dir: str | None = Field(
        None, description="Where LoRA files fetched by URL are kept; unset: $HF_HOME/tinyimg-adapters (beside the models), else ~/.cache/tinyimg/adapters."
    )
    c2pa_cert_file: str | None = Field(
        None, alias="c2paCertFile", description="PEM certificate chain (end-entity first) that signs C2PA manifests (models with provenance.c2pa).")
    c2pa_key_file: str | None = Field(None, alias="c2paKeyFile", description="PEM private key of c2paCertFile (EC P-256/384/521, RSA or Ed25519).")
    models: list[ModelSpec] = Field(min_length=1)
    # None (not a default object) keeps the rendered config of a pod unchanged when unset.
    jobs: JobsConfig | None = Field(None, description="The jobs API; unset = the defaults.")

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> ServerConfig:
        jobs = self.jobs_config()
        if jobs.webhook_allowed_hosts and not jobs.webhook_secret_file:
            raise ValueError("jobs.webhookAllowedHosts is set but jobs.webhookSecretFile is not: webhooks are signed")
        signed = [m.name for m in self.models if m.provenance.c2pa]
        if signed and not (self.c2pa_cert_file and self.c2pa_key_file):
            raise ValueError(f"model {signed[0]!r} has provenance.c2pa but c2paCertFile and c2paKeyFile are not both set")
        return self

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        seen: set[str] = set()
        for m in models:
            if m.name in seen:
                raise ValueError(f"model name {m.name!r} appears twice")
            seen.add(m.name)
        return models

    def jobs_config(self) -> JobsConfig:
        return self.jobs if self.jobs is not None else JobsConfig()

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


# What a running server applies without loading the model again (tinyimg.runtime.reload): a
# model's request defaults and limits, its LoRA adapters (loaded and dropped between batches), the
# hosts adapters may be fetched from by URL, and its batching, queue and deadline settings. A change of nothing else leaves a pod running: the
# operator's pod-template checksum skips these.
LIVE_MODEL_FIELDS = ("defaults", "limits", "adapters", "adapter_sources", "provenance")
# What makes a new revision of a model's weights (``ModelSpec.weight_revision``; canary rollouts).
WEIGHT_FIELDS = ("family", "source", "revision", "variant", "dtype", "image")
LIVE_RUNTIME_FIELDS = ("max_batch_size", "max_batch_wait_ms", "queue_size", "request_timeout_seconds")


# The jobs settings a running server applies at once: how long results stay and how much memory
# they take, how often progress and previews are sent, and where and how webhooks go.
LIVE_JOBS_FIELDS = (
    "result_ttl_seconds", "max_result_bytes", "progress_interval_ms", "preview_interval_ms", "keepalive_seconds",
    "webhook_allowed_hosts", "webhook_max_attempts", "webhook_backoff_seconds", "webhook_timeout_seconds",
)


def without_live_fields(spec: ModelSpec) -> ModelSpec:
    """``spec`` with every live field at its default: two specs that differ only in live fields
    give the same value."""
    runtime = {f: RuntimeSpec.model_fields[f].default for f in LIVE_RUNTIME_FIELDS}
    model = {f: ModelSpec.model_fields[f].get_default(call_default_factory=True) for f in LIVE_MODEL_FIELDS}
    return spec.model_copy(update={**model, "runtime": spec.runtime.model_copy(update=runtime)})


def with_live_fields(running: ModelSpec, edited: ModelSpec) -> ModelSpec:
    """The running model with the edited spec's live fields: what a reload applies now."""
    runtime = {f: getattr(edited.runtime, f) for f in LIVE_RUNTIME_FIELDS}
    model = {f: getattr(edited, f) for f in LIVE_MODEL_FIELDS}
    return running.model_copy(update={**model, "runtime": running.runtime.model_copy(update=runtime)})


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file, the field and why."""


def format_validation_error(err: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid configuration"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {field}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, where: str = "<config>", base_dir: Path | None = None) -> ServerConfig:
    """Validate a loaded YAML document; local model sources are made relative to ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'models' list at the top level")
    try:
        config = ServerConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None
    if base_dir is not None:
        entries: list[ModelSpec | AdapterSpec] = [*config.models, *(a for m in config.models for a in m.adapters)]
        for entry in entries:
            if entry.source.startswith(("./", "../")):
                entry.source = str((base_dir / entry.source).resolve())
            elif entry.source.startswith("~"):
                entry.source = str(Path(entry.source).expanduser())
    return config


def load_config(path: str | Path) -> ServerConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(data, str(path), path.parent)
