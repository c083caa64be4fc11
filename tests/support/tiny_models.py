"""Tiny SDXL and Flux pipelines on disk, built once per test session.

``tiny_model_dirs`` reuses ``.demo/tiny-*`` when ``make run`` already built them, else builds both
into a session temp dir with ``tinyimg.tiny.run_make_tiny_model`` (a few seconds). ``tiny_config``
makes a CPU ServerConfig serving both at 64x64, 4 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tinyimg.spec import ServerConfig, parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ("sdxl", "flux")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tinyimg.tiny import run_make_tiny_model

    dirs = {}
    for family in FAMILIES:
        demo = REPO_ROOT / ".demo" / f"tiny-{family}"
        if (demo / "model_index.json").is_file():
            dirs[family] = demo
        else:
            dirs[family] = tmp_path_factory.mktemp("tiny-models") / f"tiny-{family}"
            run_make_tiny_model(family, dirs[family])
    return dirs


def tiny_model_entry(family: str, source: Path) -> dict[str, Any]:
    return {
        "name": f"tiny-{family}",
        "family": family,
        "source": str(source),
        "dtype": "float32",
        "defaults": {"steps": 4, "width": 64, "height": 64},
        "limits": {"maxWidth": 256, "maxHeight": 256, "maxSteps": 20, "maxImages": 4},
        "runtime": {"device": "cpu", "cpuFallback": True, "maxBatchSize": 4, "maxBatchWaitMs": 20, "queueSize": 16},
        "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
    }


def tiny_config(
    dirs: dict[str, Path], families: tuple[str, ...] = FAMILIES, **overrides: Any
) -> ServerConfig:
    """Both tiny models (or ``families``) on CPU. ``overrides`` are wire-named model fields applied
    to every model; dict values merge into the defaults, e.g. ``runtime={"maxBatchSize": 1}``."""
    models = []
    for family in families:
        entry = tiny_model_entry(family, dirs[family])
        for key, value in overrides.items():
            entry[key] = {**entry[key], **value} if isinstance(value, dict) and key in entry else value
        models.append(entry)
    return parse_config({"models": models}, "<tiny_config>")
