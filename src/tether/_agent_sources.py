"""Where workers find agents: built in, installed entry points, or modules they are given.

A run names its agent and version; a worker serves only the versions it has, so a run of
another version is left for a worker that has it instead of being driven by wrong code.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .agent import Agent
from .errors import UsageError

__all__ = [
    "BUILTIN_AGENTS",
    "ENTRY_POINT_GROUP",
    "AgentRegistry",
    "AgentSource",
    "AgentUnavailable",
    "import_target",
]

log = logging.getLogger("tether.worker")

ENTRY_POINT_GROUP = "tether.agents"
"""Installed packages offer agents to workers under this entry point group."""

BUILTIN_AGENTS = ("tether.demo:demo_agent",)


class AgentUnavailable(UsageError):
    """This worker does not have the agent (name and version) a run was started with."""


# -- agents ---------------------------------------------------------------------------------


def import_target(spec: str) -> Any:
    """The object a `module:attr` or `path/to/file.py:attr` spec names."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(f"bad agent {spec!r}: write module:attr or path/to/file.py:attr")
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise UsageError(f"agent file not found: {target}")
        name = f"_tether_agent_{abs(hash(str(path)))}"
        module = sys.modules.get(name)
        if module is None:
            loader = importlib.util.spec_from_file_location(name, path)
            if loader is None or loader.loader is None:
                raise UsageError(f"cannot import {target}")
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            try:
                loader.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise UsageError(
                    f"importing {target} failed: {type(exc).__name__}: {exc}"
                ) from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"cannot import module {target!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"{target} has no attribute {attr!r}") from None


@dataclass(frozen=True, kw_only=True)
class AgentSource:
    """An agent a worker can drive: an Agent, or a factory called with a run's agent_args."""

    name: str
    version: str
    spec: str
    """Where it came from (`module:attr`, `file.py:attr` or `entry point NAME`)."""
    target: Agent | Callable[..., Agent]

    @classmethod
    def load(cls, spec: str, *, origin: str | None = None) -> AgentSource:
        """Import `spec` and learn the agent's name and version (a factory is called once
        without arguments to find out)."""
        return cls.of(import_target(spec), origin or spec)

    @classmethod
    def of(cls, target: Any, spec: str) -> AgentSource:
        if isinstance(target, Agent):
            return cls(name=target.name, version=target.version, spec=spec, target=target)
        if not callable(target):
            raise UsageError(f"{spec} is not an Agent or a function returning one")
        try:
            probe = target()
        except TypeError as exc:
            raise UsageError(
                f"{spec} needs arguments ({exc}); give them defaults so a worker can learn "
                "the agent's name and version"
            ) from None
        if not isinstance(probe, Agent):
            raise UsageError(f"{spec} returned {type(probe).__name__}, not an Agent")
        return cls(name=probe.name, version=probe.version, spec=spec, target=target)

    def build(self, args: Mapping[str, Any]) -> Agent:
        """The agent for one run (a factory gets the run's recorded agent_args)."""
        if isinstance(self.target, Agent):
            return self.target
        try:
            agent = self.target(**args)
        except TypeError as exc:
            raise UsageError(f"{self.spec} cannot be built with {dict(args)!r}: {exc}") from None
        if not isinstance(agent, Agent) or (agent.name, agent.version) != (self.name, self.version):
            raise UsageError(f"{self.spec} built another agent than {self.name}@{self.version}")
        return agent


class AgentRegistry:
    """The agents a worker has, by name and version; later additions win."""

    def __init__(self, sources: Iterable[AgentSource] = ()) -> None:
        self._sources: dict[tuple[str, str], AgentSource] = {}
        for source in sources:
            self.add(source)

    def add(self, source: AgentSource) -> None:
        self._sources[(source.name, source.version)] = source

    @classmethod
    def discover(
        cls, specs: Sequence[str] = (), *, builtins: bool = True, entry_points: bool = True
    ) -> AgentRegistry:
        """Built-in agents, then installed entry points, then `specs` (which win).

        A broken entry point is logged and skipped; a bad spec given explicitly is an error.
        """
        registry = cls()
        if builtins:
            for spec in BUILTIN_AGENTS:
                registry.add(AgentSource.load(spec))
        if entry_points:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                try:
                    registry.add(AgentSource.of(ep.load(), f"entry point {ep.name} ({ep.value})"))
                except Exception as exc:
                    log.warning("skipping agent entry point %s (%s): %s", ep.name, ep.value, exc)
        for spec in specs:
            registry.add(AgentSource.load(spec))
        return registry

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._sources})

    def versions(self, name: str) -> list[str]:
        return sorted(version for n, version in self._sources if n == name)

    def describe(self) -> str:
        return ", ".join(f"{n}@{v}" for n, v in sorted(self._sources)) or "none"

    def get(self, name: str, version: str) -> AgentSource:
        """The source for exactly this name and version; AgentUnavailable otherwise."""
        source = self._sources.get((name, version))
        if source is not None:
            return source
        have = self.versions(name)
        if not have:
            raise AgentUnavailable(
                f"this worker has no agent {name!r} (it has {self.describe()}); start it with "
                "--agent module:attr or install the package that provides it"
            )
        raise AgentUnavailable(
            f"agent {name!r} version {version!r} is needed, but this worker has version "
            f"{', '.join(repr(v) for v in have)}; start a worker with that version"
        )

    def find(self, name: str) -> AgentSource | None:
        """The newest version of `name` (for submitting), or None."""
        have = self.versions(name)
        return self._sources[(name, have[-1])] if have else None


# -- the lease of one driven run ------------------------------------------------------------
