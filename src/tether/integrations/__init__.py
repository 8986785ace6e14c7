"""Bring your own tools and agents.

Each module is an optional extra and imports its framework only when it is imported:

- `tether.integrations.mcp` (`pip install tether-runtime[mcp]`): MCP servers as tool sources.
- `tether.integrations.pydantic_ai` (`[pydantic-ai]`): a `pydantic_ai.Agent` run by Tether.
- `tether.integrations.openai_agents` (`[openai-agents]`): an `agents.Agent` run by Tether.
"""
