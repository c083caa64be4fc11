"""Whether this process can honour the models' provenance settings: the libraries they need
(the server's ``provenance`` extra) and, for C2PA, a signing key loaded at start. Checked at
start-up and on every live reload, so a setting that cannot be honoured is refused with its model
and field named, never served silently (unsigned images from a model that asks for signatures)."""

from __future__ import annotations

import importlib.util

from tinyimg.spec import ConfigError, ServerConfig

MODULES = {"watermark": "imwatermark", "c2pa": "c2pa"}


def check_provenance_support(config: ServerConfig, signing_loaded: bool | None = None) -> None:
    """ConfigError when a model's provenance needs a missing library, or (``signing_loaded`` False:
    a running server whose key was not loaded at start) asks for C2PA signatures."""
    for model in config.models:
        for setting, module in MODULES.items():
            if getattr(model.provenance, setting) and importlib.util.find_spec(module) is None:
                raise ConfigError(f"model {model.name!r}: provenance.{setting} needs the {module!r} module: "
                                  "install tinyimg-server[provenance]")
        if signing_loaded is False and model.provenance.c2pa:
            raise ConfigError(f"model {model.name!r}: provenance.c2pa needs the signing key, which is loaded at start "
                              "(c2paCertFile, c2paKeyFile): restart the server to turn it on")
