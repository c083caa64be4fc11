"""A model's state, as the model server reports it and an ImageModel's status carries it."""

from __future__ import annotations

from typing import Literal

ModelState = Literal["loading", "ready", "failed"]
