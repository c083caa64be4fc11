"""The contract between the HTTP layer and the engine: what a generation asks and returns,
and the errors the engine raises (each knows its HTTP status). No torch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from tinyimg.errors import ApiError


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
    # img2img/inpaint inputs (PIL images, already width x height): each request keeps its own in a
    # batch, so they are not part of equality or the batch key.
    image: Any = field(default=None, compare=False, repr=False)
    mask: Any = field(default=None, compare=False, repr=False)

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call (tinyimg.runtime.batching.batch_key)."""
        from tinyimg.runtime.batching import batch_key

        return batch_key(self)


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image.Image
    seed: int


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    device: str
    queued_seconds: float
    inference_seconds: float
    batch_size: int  # images in the pipeline call this request rode in


class JobObserver(Protocol):
    """Told, in the event loop, what happens to one queued request (the jobs API listens)."""

    def started(self) -> None: ...

    def step(self, step: int, total: int) -> None: ...

    # Seconds between previews of this job (tinyimg.runtime.previews); None: it wants none.
    preview_interval: float | None

    def preview(self, data: dict[str, Any]) -> None: ...


class EngineError(ApiError):
    """An error the engine raises; it carries its HTTP answer (tinyimg.errors.ApiError)."""

    def __init__(self, message: str, status: int = 500, code: str = "generation_failed",
                 retry_after: float | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message, status, code, retry_after, extra)


class ModelNotFound(EngineError):
    def __init__(self, model: str, known: list[str]):
        super().__init__(
            f"unknown model {model!r}; known models: {', '.join(known) or 'none'}", 404, "model_not_found"
        )


class ModelNotReady(EngineError):
    def __init__(self, model: str, reason: str, retry_after: float = 5.0):
        super().__init__(f"model {model!r} is not ready: {reason}", 503, "model_not_ready", retry_after)


class Draining(EngineError):
    """The server is shutting down: refused before it was queued, or left unfinished when the
    drain ran out of time. Retryable: another replica of the model can answer it."""

    # Another replica behind the same Service can take the request at once.
    RETRY_AFTER = 1.0

    def __init__(self, model: str, what: str = "refused"):
        super().__init__(
            f"model {model!r}: request {what}, this server is shutting down; retry on another replica",
            503, "draining", self.RETRY_AFTER,
        )


class QueueFull(EngineError):
    def __init__(self, where: str, size: int, retry_after: float = 1.0):
        super().__init__(
            f"queue for {where} is full ({size} waiting); retry later", 429, "queue_full", retry_after
        )


class DeadlineExceeded(EngineError):
    def __init__(self, seconds: float, where: str):
        super().__init__(f"deadline of {seconds:.1f}s passed while {where}", 504, "deadline_exceeded")


class GenerationFailed(EngineError):
    def __init__(self, message: str, code: str = "generation_failed"):
        super().__init__(message, 500, code)
