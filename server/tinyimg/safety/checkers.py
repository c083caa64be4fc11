"""Content checkers: small registered classes, like model families. Each loads its weights once
(on the model's device, on its device thread) and scores a whole batch of images in one call:
a score in [0, 1] per image, compared with ``safety.threshold``.

- ``classifier``: any image classifier transformers loads (``AutoModelForImageClassification``
  with its image processor); the score is the summed probability of ``safety.flaggedLabels``.
- ``sd-safety-checker``: the Stable Diffusion safety checker (diffusers'
  ``StableDiffusionSafetyChecker`` with its CLIP image processor); its verdict is 0 or 1. Its own
  habit of blacking out images is not used: the policy decides.

torch, transformers and diffusers are imported inside methods only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinyimg.spec import SafetySpec


class CheckerLoadError(ValueError):
    """The checker's weights cannot be used (the message names the field)."""


class ContentChecker:
    name = ""

    def __init__(self, spec: SafetySpec):
        self.spec = spec
        self.device = "cpu"

    def source_options(self) -> dict[str, Any]:
        local = Path(str(self.spec.source)).expanduser()
        return {"pretrained_model_name_or_path": str(local) if local.is_dir() else self.spec.source,
                "local_files_only": local.is_dir()}

    def load(self, device: str) -> None:
        raise NotImplementedError

    def score(self, images: list[Any]) -> list[float]:
        raise NotImplementedError


class ClassifierChecker(ContentChecker):
    name = "classifier"

    def load(self, device: str) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        options = self.source_options()
        self.processor = AutoImageProcessor.from_pretrained(**options)
        self.model = AutoModelForImageClassification.from_pretrained(**options, dtype=torch.float32).to(device).eval()
        labels = {str(label).lower(): int(index) for index, label in self.model.config.id2label.items()}
        wanted = [label.lower() for label in self.spec.flagged_labels]
        self.flagged = [labels[label] for label in wanted if label in labels]
        if not self.flagged:
            raise CheckerLoadError(f"safety.flaggedLabels: none of {self.spec.flagged_labels} is a label of the classifier "
                                   f"(its labels: {sorted(labels)})")
        self.device = device

    def score(self, images: list[Any]) -> list[float]:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            probabilities = self.model(**inputs).logits.float().softmax(dim=-1)
        return [float(p) for p in probabilities[:, self.flagged].sum(dim=-1).clamp(0, 1).cpu()]


class StableDiffusionChecker(ContentChecker):
    name = "sd-safety-checker"

    def load(self, device: str) -> None:
        import torch
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        options = self.source_options()
        self.processor = CLIPImageProcessor.from_pretrained(**options)
        loaded: Any = StableDiffusionSafetyChecker.from_pretrained(**options, torch_dtype=torch.float32)
        self.model = loaded.to(device).eval()
        self.device = device

    def score(self, images: list[Any]) -> list[float]:
        import numpy as np
        import torch

        clip_input = self.processor(images=images, return_tensors="pt").pixel_values.to(self.device)
        arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255 for image in images])
        with torch.inference_mode():
            _, flagged = self.model(images=arrays.copy(), clip_input=clip_input)
        return [1.0 if f else 0.0 for f in flagged]


CHECKERS: dict[str, type[ContentChecker]] = {c.name: c for c in (ClassifierChecker, StableDiffusionChecker)}


def load_checker(spec: SafetySpec, device: str) -> ContentChecker | None:
    """The model's checker, loaded on ``device`` (None when it has none)."""
    if spec.checker is None:
        return None
    checker = CHECKERS[spec.checker](spec)
    try:
        checker.load(device)
    except CheckerLoadError:
        raise
    except (OSError, ValueError) as err:
        raise CheckerLoadError(f"safety.source: the {spec.checker} checker cannot be loaded from {spec.source!r}: {err}") from err
    return checker
