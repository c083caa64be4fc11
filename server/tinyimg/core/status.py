"""A model's state, as the model server reports it, and an ImageModel's ``status``: one pydantic
model (``ImageModelStatus``) from which the CRD's status schema is generated (tinyimg_operator.crd)
and through which the operator writes it and the operator's autoscaler and the router's discovery
read it. Field names are the wire's (camelCase aliases); unknown fields are ignored on reading."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

ModelState = Literal["loading", "ready", "failed"]
# A model server's load failure that names its reason first ("AccelerationQuality: ..."): the
# ImageModel's Degraded condition carries that reason (tinyimg_operator.pods).
ACCELERATION_QUALITY = "AccelerationQuality"
SERVER_FAILURE_REASONS = (ACCELERATION_QUALITY,)
ConditionStatus = Literal["True", "False", "Unknown"]
# RFC 3339 in UTC, seconds (what the operator writes): "2026-12-04T23:46:57Z".
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        """The fields set, by their wire names (a field set to None stays: a merge patch clears it)."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class Condition(_Status):
    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: Time | None = None


class ScaleDecision(_Status):
    """One change of replicas the autoscaler made (``status.autoscaling.history``)."""

    time: Time | None = None
    from_: int | None = Field(None, alias="from")
    to: int | None = None
    load: float | None = None
    reason: str | None = None
    message: str | None = None


class AutoscalingStatus(_Status):
    """``status.autoscaling``: the built-in autoscaler's durable state and its last decisions."""

    desired_replicas: int | None = None
    load: float | None = None
    reason: str | None = None
    message: str | None = None
    last_scale_time: Time | None = None
    above_since: Time | None = None
    below_since: Time | None = None
    idle_since: Time | None = None
    demand_at: Time | None = None
    demand_token: str | None = None
    history: list[ScaleDecision] | None = None
    cold_start_seconds: float | None = Field(None, description="Measured: a pod's creation to Ready (the median of the ready pods')")


class RevisionCounters(_Status):
    """A revision's pods' counters (their /status, summed): what a canary step is judged on."""

    served: int = 0
    failed: int = 0
    generate_seconds: float = 0.0
    denoise_steps: int = 0


class RevisionStatus(_Status):
    """``status.revisions[]``: a revision of the model's weights and its share of the router's traffic."""

    name: str  # ModelSpec.weight_revision()
    source: str | None = None
    phase: str = "stable"  # stable | canary | promoting | rolled-back | superseded
    weight: int = 100  # percent of the router's requests for the model
    step: int | None = None  # canary: the index in rollout.canary.steps
    created: Time | None = None
    step_started: Time | None = None  # canary: when its current step began (its first Ready pod, then each step)
    reason: str | None = None
    message: str | None = None
    window: dict[str, RevisionCounters] | None = None  # canary: each revision's counters when the step began
    error_ratio: float | None = None  # canary: at the last judged step
    seconds_per_step: float | None = None


# The phases of a revision that takes requests (tinyimg_operator.rollout).
LIVE_PHASES = ("stable", "canary", "promoting")


class AccelerationStatus(_Status):
    """What a pod's warm-up measured (its /status): seconds per image of the default request and the
    PSNR (dB) of the accelerated pipeline's image against the plain one's (null: nothing accelerated)."""

    seconds_per_image: float | None = None
    quality: float | None = None


class CacheStatus(_Status):
    """``status.cache``: what the preload Job (``cache.preload``) put in the model's cache."""

    loaded: bool = False
    bytes: int | None = None
    files: int | None = None
    revision: str | None = Field(None, description="The weights' revision it holds (pods wait for theirs)")
    message: str | None = None


class PodRevision(_Status):
    """``status.pods[]``: which revision and config generation each pod of the model runs."""

    name: str
    revision: str | None = None
    config_generation: int | None = None
    ready: bool = False
    acceleration: AccelerationStatus | None = None
    startup_seconds: dict[str, float] | None = Field(None, description="Startup phase (download, load, compile, warmup) -> seconds")


class ImageModelStatus(_Status):
    replicas: int | None = None
    ready_replicas: int | None = None
    desired_replicas: int | None = Field(
        None, description="What the operator applies: spec.replicas, or the autoscaler's decision"
    )
    observed_generation: int | None = None
    selector: str | None = None
    url: str | None = None
    conditions: list[Condition] | None = None
    autoscaling: AutoscalingStatus | None = None
    revisions: list[RevisionStatus] | None = None
    rollout: str | None = Field(None, description="The revisions and their weights, in short (kubectl get -o wide)")
    pods: list[PodRevision] | None = None
    acceleration: AccelerationStatus | None = Field(None, description="The first ready pod's warm-up measurements")
    cache: CacheStatus | None = None

    @classmethod
    def read(cls, obj: dict[str, Any] | None) -> ImageModelStatus:
        """The status of an ImageModel object."""
        return cls.parse((obj or {}).get("status"))

    @classmethod
    def parse(cls, status: dict[str, Any] | None) -> ImageModelStatus:
        """A status document (empty when there is none, or none this can read: the API server
        checks it against the CRD, so that is someone's hand edit, not the operator's)."""
        try:
            return cls.model_validate(status or {})
        except ValidationError:
            return cls()

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions or [] if c.type == kind), None)

    def revision_weights(self) -> dict[str, int]:
        """revision -> percent of requests, while more than one revision is live (a canary
        rollout); empty otherwise (the router then needs no split)."""
        live = {r.name: r.weight for r in self.revisions or [] if r.phase in LIVE_PHASES}
        return live if len(live) > 1 else {}

    def is_true(self, kind: str) -> bool:
        found = self.condition(kind)
        return found is not None and found.status == "True"
