"""ModelSpec <-> ImageModel resource (pure)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tinyimg.core import labels
from tinyimg.spec import ModelSpec
from tinyimg_operator.objects import API_VERSION
from tinyimg_operator.settings import BuildSettings


class InvalidSpecError(ValueError):
    """An ImageModel the operator will not run: its spec fails ModelSpec validation (reason
    ``InvalidSpec``) or the operator's policy (e.g. ``ImageNotAllowed``); ``field`` is the first bad
    field path."""

    def __init__(self, field: str, message: str, reason: str = "InvalidSpec"):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.reason = reason


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


def check_policy(spec: ModelSpec, settings: BuildSettings) -> None:
    """Refuse what the spec may express but this operator does not allow (InvalidSpecError)."""
    if spec.image and not settings.image_allowed(spec.image):
        raise InvalidSpecError(
            "spec.image",
            f"image {spec.image!r} is not allowed by this operator (allowed: the server image"
            f" {settings.server_image!r} and TINYIMG_ALLOWED_IMAGES {list(settings.allowed_images)})",
            reason="ImageNotAllowed",
        )
    if spec.provenance.c2pa and not settings.c2pa_secret:
        raise InvalidSpecError(
            "spec.provenance.c2pa",
            "C2PA manifests need a signing key, and this operator has none (the chart's provenance.c2paSecret:"
            " a kubernetes.io/tls Secret in the operator's namespace)",
            reason="SigningKeyMissing",
        )
