"""Static discovery: model -> backend URLs from ``--backend MODEL=URL`` flags and a YAML file.

File format (a model may list no backend yet: it is still known, and answers 503)::

    backends:
      tiny-sdxl: [http://127.0.0.1:8001, http://127.0.0.1:8002]
      tiny-flux: http://127.0.0.1:8001
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tinyimg.router.discovery import Discovery
from tinyimg.router.table import BackendRef, BackendTable, ModelBackends
from tinyimg.spec import MODEL_NAME_PATTERN


class BackendsError(Exception):
    pass


def parse_backend_url(url: str, where: str) -> str:
    """A backend's base URL, without a trailing slash; http(s) with a host only."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendsError(f"{where}: {url!r} is not an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise BackendsError(f"{where}: {url!r} must not have a query or fragment")
    return url.strip().rstrip("/")


def _check_model_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise BackendsError(f"{where}: {name!r} is not a valid model name (lowercase letters, digits, '-')")
    return name


def parse_backend_flag(flag: str) -> tuple[str, str]:
    """``MODEL=URL`` -> (model, url)."""
    model, sep, url = flag.partition("=")
    where = f"--backend {flag}"
    if not sep:
        raise BackendsError(f"{where}: expected MODEL=URL")
    return _check_model_name(model.strip(), where), parse_backend_url(url, where)


def parse_backends_document(data: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(data, dict) or not isinstance(data.get("backends"), dict):
        raise BackendsError(f"{where}: expected a mapping 'backends: {{model: [url, ...]}}'")
    out: dict[str, list[str]] = {}
    for model, urls in data["backends"].items():
        _check_model_name(model, f"{where}: backends")
        if urls is None:
            urls = []
        elif isinstance(urls, str):
            urls = [urls]
        elif not isinstance(urls, list):
            raise BackendsError(f"{where}: backends.{model}: expected a URL or a list of URLs")
        out[model] = [parse_backend_url(str(u), f"{where}: backends.{model}") for u in urls]
    return out


def load_backends_file(path: str | Path) -> dict[str, list[str]]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise BackendsError(f"{path}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise BackendsError(f"{path}: not valid YAML: {err}") from None
    return parse_backends_document(data, str(path))


def merge_backends(*sources: dict[str, list[str]]) -> dict[str, list[str]]:
    """Union of several model -> URLs maps, order kept, duplicates dropped."""
    out: dict[str, list[str]] = {}
    for source in sources:
        for model, urls in source.items():
            known = out.setdefault(model, [])
            known.extend(u for u in urls if u not in known)
    return out


class StaticDiscovery(Discovery):
    mode = "static"

    def __init__(self, backends: dict[str, list[str]]):
        self.backends = backends

    async def start(self, table: BackendTable) -> None:
        table.sync({m: ModelBackends(backends=tuple(BackendRef(u, u) for u in urls)) for m, urls in self.backends.items()})
        table.synced = True

    async def stop(self) -> None:
        return None

    async def record_demand(self, model: str) -> None:
        return None  # static backends cannot be asked for another pod: a request waits for none
