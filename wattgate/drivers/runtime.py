"""The one place that imports a TFLite runtime.

Two wheels provide the same ``Interpreter``/``load_delegate`` API (REFERENCE.md, "TFLite
runtimes"): ``ai-edge-litert`` (LiteRT, Python 3.10-3.14, numpy 2 fine) and ``tflite-runtime``
2.14 (the last release, Python <= 3.11, numpy < 2). LiteRT is preferred because it is the one
still maintained; tflite-runtime keeps armv7l boards and older images working. Everything else
in wattgate imports the interpreter from here, so swapping runtimes touches one file.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType
from typing import Any

# Also Interpreter, load_delegate and RUNTIME_NAME, by __getattr__ (imported on first use).
__all__ = ["RuntimeMissing"]

log = logging.getLogger("wattgate.runtime")

#: (importable module, PyPI package that provides it), in order of preference.
CANDIDATES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)


class RuntimeMissing(ImportError):
    """No TFLite runtime is importable; the message names the packages that provide one."""


@functools.cache
def _runtime() -> tuple[ModuleType, str]:
    errors: list[str] = []
    for module_name, package in CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except (ImportError, AttributeError) as exc:
            # tflite-runtime under numpy 2 fails inside its C extension with
            # "_ARRAY_API not found" (REFERENCE.md, "TFLite runtimes"): treat it as absent.
            errors.append(f"{package}: {exc}")
            continue
        log.info("TFLite runtime: %s (%s)", package, module_name)
        return module, package
    raise RuntimeMissing(
        "no TFLite runtime installed: install 'ai-edge-litert' (Python >= 3.10) or "
        "'tflite-runtime' (Python <= 3.11, numpy < 2); import errors: " + "; ".join(errors)
    )


def __getattr__(name: str) -> Any:
    """``Interpreter``, ``load_delegate`` and ``RUNTIME_NAME``, imported on first use: this
    module imports without a runtime, so a machine without one (a fresh Debian install:
    README.Debian) gets RuntimeMissing where a model is made, which `wattgate run` and
    `check-config` report as exit 69, not an ImportError's traceback at import."""
    if name == "RUNTIME_NAME":
        return _runtime()[1]
    if name in ("Interpreter", "load_delegate"):
        return getattr(_runtime()[0], name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
