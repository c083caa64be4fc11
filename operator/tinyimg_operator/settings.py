"""Operator settings that shape what is built, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_SERVER_IMAGE = "ghcr.io/tinyimg/tinyimg-server:0.1.0"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class BuildSettings:
    server_image: str = DEFAULT_SERVER_IMAGE
    image_pull_policy: str | None = None


def load_build_settings(environ: Mapping[str, str] | None = None) -> BuildSettings:
    """TINYIMG_SERVER_IMAGE (default model-server image), TINYIMG_IMAGE_PULL_POLICY (optional)."""
    env = os.environ if environ is None else environ
    policy = env.get("TINYIMG_IMAGE_PULL_POLICY") or None
    if policy is not None and policy not in PULL_POLICIES:
        raise ValueError(f"TINYIMG_IMAGE_PULL_POLICY must be one of {', '.join(PULL_POLICIES)}, not {policy!r}")
    return BuildSettings(server_image=env.get("TINYIMG_SERVER_IMAGE") or DEFAULT_SERVER_IMAGE, image_pull_policy=policy)
