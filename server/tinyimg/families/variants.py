"""What a request may vary over the one loaded text-to-image pipeline: its mode (image-to-image,
inpainting), its sampler, and its LoRA adapters. A mixin of ``Handler`` (tinyimg.families.base).

No second copy of any weight: the img2img and inpaint pipelines are built with diffusers'
``from_pipe`` from the loaded pipeline's components (the same module objects, hence the same
parameter storage), once, when a request first asks for that mode. Schedulers are built from the
model's own scheduler config once per name and cached. Adapters load with the model; every call
states exactly which adapters are active, so nothing carries over to the next call.

All of this runs on the device's one worker thread (one pipeline call at a time), so swapping a
pipeline's scheduler or the active adapters between calls is safe.

Adapters fetched at run time (named by URL, or registered with ``POST /v1/adapters``) are loaded
when a batch first names them, from the file ``tinyimg.runtime.adapters`` fetched and checked
before the request was queued, and kept as a least-recently-used set of at most
``runtime.maxResidentAdapters`` per replica: one more is loaded only after the least recently used
one beyond the bound is deleted from the pipeline (diffusers' ``delete_adapters``), so memory stays
bounded however many adapters the clients name.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tinyimg.families.schedulers import build_scheduler

if TYPE_CHECKING:
    from tinyimg.families.base import AdapterFile, GenerationParams
    from tinyimg.families.family import Family
    from tinyimg.spec import AdapterSpec, ModelSpec

log = logging.getLogger("tinyimg.engine")


class AdapterLoadError(Exception):
    """A run-time adapter that does not load into this model (not a LoRA of its family, a broken
    file): the requests that name it fail with it, nothing else does."""

    def __init__(self, label: str, reason: str):
        super().__init__(f"adapter {label} failed to load: {reason}")
        self.label, self.reason = label, reason


# What happened to run-time adapters on one replica, ever (read by /metrics and /status).
ADAPTER_EVENTS = ("loads", "hits", "evictions", "failures")


class CallVariants:
    spec: ModelSpec
    pipe: Any
    # The family this handler serves: set by its ``Family`` declaration (``Family.__post_init__``),
    # so a handler knows its family without reading the registry that lists it.
    family: ClassVar[Family]

    # -- modes ------------------------------------------------------------------------------
    def pipeline_for(self, mode: str) -> Any:
        """The pipeline of ``mode``, sharing every component with the loaded one."""
        if mode == "txt2img":
            return self.pipe
        cache = self.__dict__.setdefault("_mode_pipelines", {})
        if mode not in cache:
            import diffusers

            class_name = self.family.mode_pipeline_class(mode)
            if class_name is None:
                raise ValueError(f"{self.spec.family} models do not offer {mode}")
            pipeline = getattr(diffusers, class_name).from_pipe(self.pipe)
            pipeline.set_progress_bar_config(disable=True)
            cache[mode] = pipeline
        return cache[mode]

    # -- schedulers -------------------------------------------------------------------------
    def scheduler_for(self, name: str | None) -> Any:
        """The scheduler ``name`` (the family's table), or the model's own for None."""
        cache = self.__dict__.setdefault("_schedulers", {})
        if None not in cache:
            cache[None] = self.pipe.scheduler  # the one the model was loaded with
        if name not in cache:
            assert name is not None  # the model's own is cached above
            try:
                choice = self.family.schedulers[name]
            except KeyError:
                raise ValueError(f"unknown scheduler {name!r} for {self.spec.family} models") from None
            cache[name] = build_scheduler(choice, cache[None].config)
        return cache[name]

    # -- adapters ---------------------------------------------------------------------------
    @property
    def adapter_failures(self) -> dict[str, str]:
        """Adapter name -> why it did not load (the others are usable)."""
        failures: dict[str, str] = self.__dict__.setdefault("_adapter_failures", {})
        return failures

    @property
    def loaded_adapters(self) -> list[str]:
        loaded: list[str] = self.__dict__.setdefault("_loaded_adapters", [])
        return loaded

    def load_adapters(self) -> None:
        """Load every adapter the spec declares; one that fails is recorded, not raised."""
        self._load_adapter_specs(self.spec.adapters)

    def _load_adapter_specs(self, adapters: list[AdapterSpec]) -> None:
        for adapter in adapters:
            local = adapter.is_local_source()
            source = str(Path(adapter.source).expanduser()) if local else adapter.source
            try:
                if local and not Path(source).is_dir():
                    raise FileNotFoundError(f"adapter directory {adapter.source} does not exist")
                self.pipe.load_lora_weights(
                    source, weight_name=adapter.weight_name, adapter_name=adapter.name, local_files_only=local
                )
            except Exception as err:  # a bad adapter fails itself, not its model
                reason = f"{type(err).__name__}: {err}"
                self.adapter_failures[adapter.name] = reason
                log.error("adapter failed to load", extra={"model": self.spec.name, "adapter": adapter.name,
                                                           "reason": reason})
                continue
            self.loaded_adapters.append(adapter.name)
            log.info("adapter loaded", extra={"model": self.spec.name, "adapter": adapter.name})
        if self.loaded_adapters:
            self.pipe.disable_lora()  # off until a request names them

    def sync_adapters(self, adapters: list[AdapterSpec]) -> dict[str, str]:
        """The declared adapters become ``adapters`` (a config reload, between batches): those
        removed or changed are deleted from the pipeline, new and changed ones loaded. Returns the
        failures (adapter -> why), as after loading."""
        before = {a.name: a for a in self.spec.adapters}
        wanted = {a.name: a for a in adapters}
        dropped = [name for name, a in before.items() if wanted.get(name) != a]
        loaded_dropped = [name for name in dropped if name in self.loaded_adapters]
        if loaded_dropped:
            self.pipe.delete_adapters(loaded_dropped)
        for name in dropped:
            if name in self.loaded_adapters:
                self.loaded_adapters.remove(name)
            self.adapter_failures.pop(name, None)
        self.spec = self.spec.model_copy(update={"adapters": list(adapters)})
        self._load_adapter_specs([a for name, a in wanted.items() if before.get(name) != a])
        return dict(self.adapter_failures)

    # -- adapters fetched at run time ------------------------------------------------------
    @property
    def resident_adapters(self) -> OrderedDict[str, AdapterFile]:
        """Run-time adapters in the pipeline, least recently used first."""
        resident: OrderedDict[str, AdapterFile] = self.__dict__.setdefault("_resident_adapters", OrderedDict())
        return resident

    @property
    def adapter_events(self) -> dict[str, int]:
        events: dict[str, int] = self.__dict__.setdefault("_adapter_events", dict.fromkeys(ADAPTER_EVENTS, 0))
        return events

    @property
    def resident_view(self) -> tuple[AdapterFile, ...]:
        """The resident adapters as last published: a tuple replaced whole, so the event loop reads
        it while the device thread changes the set."""
        view: tuple[AdapterFile, ...] = self.__dict__.get("_resident_view", ())
        return view

    def hold_adapters(self, files: tuple[AdapterFile, ...]) -> None:
        """Every adapter of ``files`` in the pipeline: a hit when it is there already, else loaded
        (after the least recently used others beyond ``runtime.maxResidentAdapters`` are deleted).
        One that does not load raises ``AdapterLoadError`` (and again at once for later batches)."""
        resident, events = self.resident_adapters, self.adapter_events
        failures: dict[str, str] = self.__dict__.setdefault("_runtime_adapter_failures", {})
        wanted = {f.name for f in files}
        try:
            for file in files:
                if file.name in resident:
                    resident.move_to_end(file.name)
                    events["hits"] += 1
                    continue
                if file.name in failures:
                    raise AdapterLoadError(file.label, failures[file.name])
                self._evict_adapters(keep=wanted, room=1)
                self._load_adapter_file(file, failures)
                resident[file.name] = file
        finally:
            self.__dict__["_resident_view"] = tuple(resident.values())

    def _load_adapter_file(self, file: AdapterFile, failures: dict[str, str]) -> None:
        from safetensors.torch import load_file

        started = time.perf_counter()
        try:
            self.pipe.load_lora_weights(load_file(file.path), adapter_name=file.name)
            if not self._holds_adapter(file.name):  # diffusers skips keys it does not know, silently
                raise ValueError(f"no LoRA layers of a {self.spec.family} model in the file")
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            failures[file.name] = reason[:500]
            self.adapter_events["failures"] += 1
            self._forget_adapter(file.name)  # a half-loaded adapter leaves no layers behind
            log.error("adapter failed to load", extra={"model": self.spec.name, "adapter": file.label, "reason": reason})
            raise AdapterLoadError(file.label, failures[file.name]) from None
        self.adapter_events["loads"] += 1
        log.info("adapter loaded", extra={"model": self.spec.name, "adapter": file.label, "sha256": file.sha256,
                                          "seconds": round(time.perf_counter() - started, 4)})

    def _evict_adapters(self, keep: set[str], room: int = 0) -> None:
        """Delete the least recently used run-time adapters (not those in ``keep``) until ``room``
        more fit within ``runtime.maxResidentAdapters``."""
        resident = self.resident_adapters
        bound = self.spec.runtime.max_resident_adapters
        for name in [n for n in resident if n not in keep]:
            if len(resident) + room <= bound:
                break
            self._forget_adapter(name)
            dropped = resident.pop(name)
            self.adapter_events["evictions"] += 1
            log.info("adapter evicted", extra={"model": self.spec.name, "adapter": dropped.label})

    def _holds_adapter(self, name: str) -> bool:
        return any(name in names for names in self.pipe.get_list_adapters().values())

    def _forget_adapter(self, name: str) -> None:
        if self._holds_adapter(name):
            self.pipe.delete_adapters([name])

    def drop_adapters(self, names: set[str]) -> None:
        """Run-time adapters deleted now (an admin unregistered them); absent ones are ignored."""
        resident = self.resident_adapters
        for name in [n for n in resident if n in names]:
            self._forget_adapter(name)
            resident.pop(name)
            self.adapter_events["evictions"] += 1
        self.__dict__["_resident_view"] = tuple(resident.values())

    def activate_adapters(self, loras: tuple[tuple[str, float], ...]) -> None:
        """Exactly ``loras`` active at their scales for the next call; none when empty."""
        if not self.loaded_adapters and not self.resident_adapters:
            if loras:
                raise ValueError(f"adapters {[n for n, _ in loras]} are not loaded")
            return
        if not loras:
            self.pipe.disable_lora()
            return
        self.pipe.enable_lora()
        self.pipe.set_adapters([name for name, _ in loras], adapter_weights=[scale for _, scale in loras])

    # -- one call ---------------------------------------------------------------------------
    def prepare_call(self, batch: list[GenerationParams]) -> tuple[Any, dict[str, Any]]:
        """The pipeline for ``batch`` (equal batch keys) with its scheduler and adapters set, and
        the mode's call arguments: size, and per image its own input and mask."""
        head = batch[0]
        pipeline = self.pipeline_for(head.mode)
        pipeline.scheduler = self.scheduler_for(head.scheduler)
        self.hold_adapters(head.adapter_files)
        self.activate_adapters(head.loras)
        arguments: dict[str, Any] = {}
        accepted = inspect.signature(pipeline.__call__).parameters
        if "width" in accepted:  # SDXL's img2img takes its size from the input image
            arguments |= {"width": head.width, "height": head.height}
        if head.mode != "txt2img":
            arguments["image"] = [p.image for p in batch for _ in p.seeds]
            arguments["strength"] = head.strength
        if head.mode == "inpaint":
            arguments["mask_image"] = [p.mask for p in batch for _ in p.seeds]
        return pipeline, arguments
