"""Reading the backends' own answers (/status, /models) for the router's aggregated ones, each
checked against the one contract (tinyimg.wire.contract): a pod that answers something else is
reported with the reason, not guessed at."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from tinyimg.router.table import BackendTable
from tinyimg.wire.contract import ModelInfoResponse, ModelsResponse

Doc = TypeVar("Doc", bound=BaseModel)


async def read_pod_documents(
    client: httpx.AsyncClient, urls: list[str], path: str, shape: type[Doc], timeout: float
) -> dict[str, Doc | str]:
    """url -> the pod's answer at ``path`` as ``shape``, or the error text when there is none."""

    async def read(url: str) -> Doc | str:
        try:
            response = await client.get(url + path, timeout=timeout)
            response.raise_for_status()
            return shape.model_validate_json(response.content)
        except httpx.HTTPError as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        except ValidationError as err:
            return f"{path} does not match the contract: {err.errors()[0]['msg']}"

    results = await asyncio.gather(*(read(u) for u in urls))
    return dict(zip(urls, results, strict=True))


async def read_model_infos(client: httpx.AsyncClient, table: BackendTable, timeout: float) -> dict[str, ModelInfoResponse]:
    """model -> what one reachable backend of it says in /models (defaults, limits, family)."""
    asked = {}
    for name in table.models:
        pod = next((p for p in table.pods_of(name) if p.reachable), None)
        if pod is not None:
            asked[name] = pod.url
    answers = await read_pod_documents(client, sorted(set(asked.values())), "/models", ModelsResponse, timeout)
    infos = {}
    for name, url in asked.items():
        doc = answers[url]
        if isinstance(doc, ModelsResponse):
            info = next((m for m in doc.models if m.name == name), None)
            if info is not None:
                infos[name] = info
    return infos
