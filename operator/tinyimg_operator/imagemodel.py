"""ModelSpec <-> ImageModel resource (pure)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tinyimg import labels
from tinyimg.spec import ModelSpec
from tinyimg_operator.objects import API_VERSION


class InvalidSpecError(ValueError):
    """An ImageModel whose spec fails ModelSpec validation; ``field`` is the first bad field path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def build_imagemodel(spec: ModelSpec, namespace: str | None = None) -> dict[str, Any]:
    """The ImageModel for one model; the spec carries only what the model sets (defaults apply)."""
    wire = spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)
    wire.pop("name", None)
    metadata: dict[str, Any] = {"name": spec.name, "labels": {labels.NAME: labels.APP_NAME}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": labels.KIND, "metadata": metadata, "spec": wire}


def read_model_spec(body: dict[str, Any]) -> ModelSpec:
    """Validate an ImageModel's spec; raise InvalidSpecError naming the field (as ``spec.x.y``)."""
    data = {**(body.get("spec") or {}), "name": body["metadata"]["name"]}
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        field = "metadata.name" if loc == "name" else f"spec.{loc}" if loc else "spec"
        raise InvalidSpecError(field, first["msg"]) from None
