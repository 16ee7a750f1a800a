"""Camera control on GPU profiles through camera LoRAs.

A profile maps Kling camera moves to LoRAs (keys in :data:`~.profiles.CAMERA_KEYS`)::

    camera = { zoom_in = "Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-In/ltx-2-19b-lora-camera-control-dolly-in.safetensors",
               horizontal_left = "loras/dolly-left.safetensors" }

Each LoRA is loaded once as a named adapter next to the base weights (never fused: requests differ
in the move they ask for). Per request, the adapter of the asked move is activated with weight
``|value| / 10`` (Kling's -10..10 strength; 1.0 for presets), and every camera adapter is switched
off for requests without camera control, so one loaded pipeline serves both. A move the profile
does not map is refused (:class:`~reelserve.engines.capabilities.Capability` says so at submit).

A value is a local ``.safetensors`` file or folder (resolved against the profile's folder), a hub
repo id (``owner/name``, loaded from the hub cache), or a repo id followed by the file in it
(``owner/name/file.safetensors``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reelserve.engines.diffusers.options import LoraOption, load_lora_adapter
from reelserve.engines.diffusers.profiles import camera_key

if TYPE_CHECKING:
    from reelserve.tasks import CameraControl

log = logging.getLogger(__name__)

#: Every camera adapter's name starts with this (the static LoRAs are fused and unloaded).
ADAPTER_PREFIX = "camera_"


def lora_option(source: str) -> LoraOption:
    """The :class:`LoraOption` a ``camera`` table value names (see the module docstring)."""
    local = Path(source)
    if local.exists():
        return LoraOption(path=local)
    parts = source.split("/")
    if len(parts) > 2 and parts[-1].endswith((".safetensors", ".bin")):
        return LoraOption(repo="/".join(parts[:2]), weight_name="/".join(parts[2:]))
    return LoraOption(repo=source)


def adapter_name(key: str, source: str) -> str:
    """The adapter a move's LoRA loads as; the source's hash keeps two profiles that share a
    pipeline but map a move to different LoRAs apart."""
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:8]
    return f"{ADAPTER_PREFIX}{key}_{digest}"


def _loaded_adapters(pipe: Any) -> set[str]:
    names: set[str] = set()
    for adapters in pipe.get_list_adapters().values():
        names.update(adapters)
    return names


def load_camera_loras(pipe: Any, camera: Mapping[str, str]) -> None:
    """Load the LoRAs of a profile's ``camera`` table not yet in ``pipe``, then switch them off.

    Called when the pipeline loads and again before a camera request (a pipeline shared by
    several profiles gets each profile's LoRAs on first use).
    """
    if not camera:
        return
    have = _loaded_adapters(pipe)
    added = False
    for key, source in camera.items():
        name = adapter_name(key, source)
        if name not in have:
            load_lora_adapter(pipe, lora_option(source), name)
            log.info("loaded camera LoRA %s for %s as adapter %s", source, key, name)
            added = True
    if added:
        # A freshly loaded adapter is active at weight 1: off until a request asks for it.
        pipe.disable_lora()


def apply_camera(pipe: Any, camera_map: Mapping[str, str], camera: CameraControl | None) -> tuple[str, float] | None:
    """Activate the adapter of ``camera`` (or none); returns ``(adapter, weight)`` when active.

    The caller has checked that the move is mapped (:meth:`Capability.check`).
    """
    if camera is None or not camera_map:
        if camera_map and _loaded_adapters(pipe):
            pipe.disable_lora()
        return None
    load_camera_loras(pipe, camera_map)
    if camera.type == "simple":
        axis, value = next(((a, v) for a, v in camera.config.items() if v), ("", 0.0))
        if not value:
            pipe.disable_lora()
            return None
        key, weight = camera_key(axis, value), min(1.0, abs(float(value)) / 10.0)
    else:
        key, weight = camera.type, 1.0
    name = adapter_name(key, camera_map[key])
    pipe.enable_lora()
    pipe.set_adapters([name], [weight])
    return name, weight
