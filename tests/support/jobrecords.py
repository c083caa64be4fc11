"""Job records for the job store and job service tests: a fake clock and a record whose images are
made up (only the bookkeeping is under test)."""

from __future__ import annotations

from tinyimg.core.jobs import new_job_id
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.jobstore import JobRecord

PARAMS = GenerationParams("p", None, 64, 64, 2, 0.0, (1,))


class Clock:
    """A monotonic clock the test moves by hand (``clock.now += seconds``)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def build_record(status: str = "queued", image_bytes: int = 0, model: str = "tiny-sdxl") -> JobRecord:
    record = JobRecord(new_job_id(), model, params=PARAMS, output_format="png")
    record.status = status
    record.images = [b"x" * image_bytes] if image_bytes else []
    return record
