"""One replica's load and warm-up in a fresh process (``python -m tests.support.warm_start SPEC_JSON``):
prints, as one JSON line, its startup phases and Inductor's cache counters, so a test can start a
model twice with one TORCHINDUCTOR_CACHE_DIR and see the second start take the compiled kernels."""

from __future__ import annotations

import json
import sys

from tinyimg.families import load_handler_class
from tinyimg.runtime.warmup import warm_up
from tinyimg.spec import ModelSpec


def main(argv: list[str]) -> None:
    spec = ModelSpec.model_validate(json.loads(argv[0]))
    handler = load_handler_class(spec.family)(spec)
    handler.load("cpu")
    report = warm_up(handler)
    from torch._dynamo.utils import counters

    print(json.dumps({"phases": report.phases, "quality": report.quality, "inductor": dict(counters["inductor"])}))


if __name__ == "__main__":
    main(sys.argv[1:])
