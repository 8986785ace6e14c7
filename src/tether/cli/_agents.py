"""Loading agents named on the command line: `module:attr` or `path/to/file.py:attr`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from ..agent import Agent
from ..errors import UsageError

__all__ = ["load_agent"]


def _load_attr(spec: str) -> Any:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(f"bad agent {spec!r}: write module:attr or path/to/file.py:attr")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"agent file not found: {target}")
        name = f"_tether_agent_{abs(hash(str(path.resolve())))}"
        loader = importlib.util.spec_from_file_location(name, path)
        if loader is None or loader.loader is None:
            raise UsageError(f"cannot import {target}")
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        try:
            loader.loader.exec_module(module)
        except Exception as exc:
            raise UsageError(f"importing {target} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"cannot import module {target!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"{target} has no attribute {attr!r}") from None


def load_agent(spec: str, args: dict[str, Any] | None = None) -> Agent:
    """The Agent a spec names; a callable is called (with `args`) to build it."""
    value = _load_attr(spec)
    if not isinstance(value, Agent) and callable(value):
        value = value(**(args or {}))
    if not isinstance(value, Agent):
        raise UsageError(f"{spec} is not an Agent (got {type(value).__name__})")
    return value
