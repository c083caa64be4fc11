"""The playground page (``GET /ui`` on the model server and the router): one HTML file with its
script inline, shipped as package data. It loads nothing from outside (it must work in a cluster
without internet) and calls only the public API: /models, /status, /v1/jobs and its events."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def read_page() -> str:
    return resources.files(__package__).joinpath("playground.html").read_text(encoding="utf-8")
