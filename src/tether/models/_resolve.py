"""Model specs as the CLI takes them: `scripted`, `openai:NAME`, `anthropic:NAME`."""

from __future__ import annotations

import os

from ..errors import UsageError
from ._base import Model

__all__ = ["model_from_spec"]


def model_from_spec(spec: str) -> Model | None:
    """The model a spec names; None for `scripted` (the agent's own scripted model)."""
    provider, sep, name = spec.partition(":")
    provider = provider.strip().lower()
    if provider == "scripted" and not sep:
        return None
    if not sep or not name:
        raise UsageError(
            f"bad --model {spec!r}: use scripted, openai:MODEL (OpenAI or any "
            "OpenAI-compatible server via OPENAI_BASE_URL) or anthropic:MODEL"
        )
    if provider == "openai":
        from .openai import OpenAIModel

        return OpenAIModel(name, base_url=os.environ.get("OPENAI_BASE_URL"))
    if provider == "anthropic":
        from .anthropic import AnthropicModel

        return AnthropicModel(name)
    raise UsageError(f"unknown model provider {provider!r} in {spec!r}: use openai or anthropic")
