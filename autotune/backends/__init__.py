"""The registry of targets: ``get(name)``, ``detect()`` for ``--backend auto``, and ``register()`` for a target that
lives outside this package (or in an installed package's ``autotune.backends`` entry point).

A new target is one package under ``autotune/backends/`` implementing :class:`~autotune.backends.base.Backend`,
plus its line in ``BUILTIN``. ``wait_for_quiet`` is what the search needs of the host's load (``_host_load``): a
quiet host before measuring a disturbed candidate again.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

from autotune.backends._host_load import wait_for_quiet
from autotune.backends.base import Backend
from autotune.errors import AutotuneError

BUILTIN = (
    "autotune.backends.qaic:QaicBackend",
    "autotune.backends.tensorrt:TensorrtBackend",
    "autotune.backends.ort:OrtBackend",
    "autotune.backends.openvino:OpenVinoBackend",
)
ENTRY_POINT_GROUP = "autotune.backends"

_registry: dict[str, type[Backend]] = {}
_loaded = False


def register(cls: type[Backend]) -> type[Backend]:
    """Add a backend class (usable as a decorator); a class lacking part of the protocol is refused."""
    missing = sorted(name for name in _protocol_names() if not hasattr(cls, name))
    if missing:
        raise TypeError(f"backend {cls.__name__} lacks {', '.join(missing)} of the Backend protocol")
    _registry[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a backend registered earlier (tests register their own)."""
    _registry.pop(name, None)


def available() -> list[type[Backend]]:
    """Every registered backend, in ``--backend auto``'s order of preference."""
    _load()
    return sorted(_registry.values(), key=lambda cls: (cls.priority, cls.name))


def names() -> list[str]:
    """The names ``--backend`` accepts (besides ``auto``)."""
    return [cls.name for cls in available()]


def get(name: str) -> type[Backend]:
    """The backend called ``name``; an unknown name gets an error listing the known ones."""
    _load()
    if name not in _registry:
        raise AutotuneError(f"unknown backend {name!r}: known backends are {', '.join(names())}")
    return _registry[name]


def detect(args: argparse.Namespace) -> tuple[type[Backend], list[str]]:
    """The backend for ``--backend auto`` and why the ones before it were passed over.

    A backend whose own options the user gave (``--sdk-root`` ...) is chosen outright; otherwise the first, in
    order of preference, that can be set up here.
    """
    asked = [cls for cls in available() if cls.requested(args)]
    if len(asked) > 1:
        raise AutotuneError(f"options of several backends were given ({', '.join(c.name for c in asked)}): "
                            f"pick one with --backend")
    if asked:
        return asked[0], []
    passed_over = []
    for cls in available():
        why = cls.probe(args)
        if why is None:
            return cls, passed_over
        passed_over.append(f"{cls.name}: {why}")
    raise AutotuneError("no backend can run here: " + "; ".join(passed_over))


def choose(requested: str, args: argparse.Namespace) -> tuple[type[Backend], str]:
    """The backend class for ``--backend REQUESTED`` and a line saying which it is and why."""
    if requested != "auto":
        cls = get(requested)
        return cls, f"backend: {cls.name} ({cls.title})"
    cls, passed_over = detect(args)
    return cls, f"backend: {cls.name} ({'; '.join([cls.title, *passed_over])})"


def _protocol_names() -> set[str]:
    names = set(getattr(Backend, "__annotations__", {}))
    names |= {name for name, value in vars(Backend).items()
              if not name.startswith("_") and (callable(value) or isinstance(value, classmethod))}
    return names


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for spec in BUILTIN:
        module, _, attr = spec.partition(":")
        register(getattr(importlib.import_module(module), attr))
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register(point.load())
        except Exception as exc:  # a broken third-party plug-in must not take the built-in targets with it
            print(f"autotune: warning: backend plug-in {point.name!r} not loaded: {exc}", file=sys.stderr)
