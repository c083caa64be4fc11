"""What a changed config file means for a running server (pure): which models take their new
settings at once (``LIVE_MODEL_FIELDS``: no weights involved) and which changes wait for a restart
(weights, devices, models added or removed, server settings but the live jobs settings,
``LIVE_JOBS_FIELDS``). ``tinyimg.api.reloader`` applies it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tinyimg.spec import LIVE_JOBS_FIELDS, JobsConfig, ModelSpec, ServerConfig, with_live_fields, without_live_fields


@dataclass(frozen=True)
class ReloadPlan:
    live: list[ModelSpec] = field(default_factory=list)  # running models with their new live settings: apply these
    restart: list[str] = field(default_factory=list)  # what changed that only a restart applies
    jobs: JobsConfig | None = None  # the running jobs settings with the new live ones, when those changed

    @property
    def empty(self) -> bool:
        return not self.live and not self.restart and self.jobs is None


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The wire paths (``models.x.runtime.offload``) where two wire documents differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += changed_paths(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [prefix or "(the whole config)"]


def plan_reload(old: ServerConfig, new: ServerConfig) -> ReloadPlan:
    old_models, new_models = {m.name: m for m in old.models}, {m.name: m for m in new.models}
    restart = [f"models.{n}: added" for n in new_models if n not in old_models]
    restart += [f"models.{n}: removed" for n in old_models if n not in new_models]
    live = []
    for name, edited in new_models.items():
        running = old_models.get(name)
        if running is None or running == edited:
            continue
        restart += changed_paths(without_live_fields(running).to_wire(), without_live_fields(edited).to_wire(),
                                 f"models.{name}")
        applied = with_live_fields(running, edited)
        if applied != running:
            live.append(applied)
    running_jobs, edited_jobs = old.jobs_config(), new.jobs_config()
    jobs = running_jobs.model_copy(update={f: getattr(edited_jobs, f) for f in LIVE_JOBS_FIELDS})
    server_old = {k: v for k, v in old.model_copy(update={"jobs": jobs}).to_wire().items() if k != "models"}
    server_new = {k: v for k, v in new.model_copy(update={"jobs": edited_jobs}).to_wire().items() if k != "models"}
    restart += changed_paths(server_old, server_new)
    return ReloadPlan(live, restart, jobs if jobs != running_jobs else None)
