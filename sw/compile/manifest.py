"""The manifest of a generated design (``manifest.json``): its configuration, config
hash, memory map and predicted cycles; and reading it back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ... import __version__
from ...hw.config import AcceleratorConfig, ConfigError
from .cycles import build_cycles, layer_cycles
from .image import Image

__all__ = ["MANIFEST_FORMAT", "load_manifest", "manifest"]

MANIFEST_FORMAT = "shiftpool-manifest"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest(image: Image, model_path: Path | None = None) -> dict:
    """What :func:`generate` records about a design: enough to rebuild and drive it."""
    per_layer = layer_cycles(image)
    extra = {"bits": {str(i): b for i, b in image.planes.items()},
             "modes": {str(i): m for i, m in image.modes.items()}} if image.planes else {}
    return {**extra,
        "format": MANIFEST_FORMAT, "version": 1, "shiftpool": __version__,
        "toplevel": "shiftpool_top", "verilog": "shiftpool_top.v",
        "config": image.config.as_dict(), "config_hash": image.config.hash,
        "model": {
            "file": str(model_path) if model_path else None,
            "sha256": _sha256(model_path) if model_path else None,
            "scheme": image.model.scheme,
            "input_shape": list(image.model.input_shape), "classes": image.model.classes,
        },
        "memory_map": image.memory_map(),
        "cycles": {"per_inference": sum(per_layer), "per_layer": per_layer,
                   # Pool engine: cycles writing the lookup table while the pool loads.
                   **({"table_build": build_cycles(image)}
                      if image.config.engine == "pool" else {})},
    }


def load_manifest(path: Path) -> AcceleratorConfig:
    """The configuration recorded in a ``manifest.json`` (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{path} is not a shiftpool manifest (field 'format' is not "
                          f"{MANIFEST_FORMAT!r})")
    config = AcceleratorConfig.from_dict(info.get("config", {}))
    if config.hash != info.get("config_hash"):
        raise ConfigError(f"{path}: field 'config_hash' does not match its 'config'; "
                          f"regenerate the design")
    return config
