"""The samplers a request may name, per family: a short name -> a diffusers scheduler class and
the config overrides that make it that sampler. Import-light (strings only): the family files
declare their tables, ``/models`` lists the names, and the handler builds the schedulers.

Each scheduler is built once per loaded model, from that model's own scheduler config (so the
beta schedule, timestep spacing and prediction type of the checkpoint carry over), and cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SchedulerChoice:
    class_name: str  # an attribute of diffusers
    overrides: dict[str, Any] = field(default_factory=dict)


# Noise-prediction (DDPM-trained) families: what AUTOMATIC1111 and ComfyUI users know by name.
DIFFUSION_SCHEDULERS: dict[str, SchedulerChoice] = {
    "euler": SchedulerChoice("EulerDiscreteScheduler"),
    "euler_a": SchedulerChoice("EulerAncestralDiscreteScheduler"),
    "dpmpp_2m": SchedulerChoice(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}
    ),
    "dpmpp_2m_karras": SchedulerChoice(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}
    ),
    "ddim": SchedulerChoice("DDIMScheduler"),
    "unipc": SchedulerChoice("UniPCMultistepScheduler"),
}

# Rectified-flow families (Flux) are trained for one sampler; the others do not apply.
FLOW_MATCHING_SCHEDULERS: dict[str, SchedulerChoice] = {
    "flow_match_euler": SchedulerChoice("FlowMatchEulerDiscreteScheduler"),
}


def build_scheduler(choice: SchedulerChoice, base_config: Any) -> Any:
    """A new scheduler of ``choice``'s class from a model's scheduler config (a diffusers
    ``FrozenDict``); keys the class does not know are ignored by ``from_config``."""
    import diffusers

    scheduler_class = getattr(diffusers, choice.class_name)
    return scheduler_class.from_config(base_config, **choice.overrides)
