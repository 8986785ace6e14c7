"""An agent for the console tests: it reads a secret (an always-hidden tool), then asks
approval to ship to a target (arguments validated against the tool's schema)."""

from __future__ import annotations

from tether import Agent, tool
from tether.agent import Limits
from tether.models import ModelRequest
from tether.models.scripted import ScriptedModel, Turn

SECRET_OUTPUT = "vault-output-«internal-only»"
"""What the always-hidden tool returns: never below the audit view."""


def shipping_agent(ships: int = 1) -> Agent:
    """Reads the vault, ships `ships` times (each needs approval), then answers."""

    @tool(idempotent=True, visibility="always_hidden")
    def vault() -> str:
        """Read the internal vault."""
        return SECRET_OUTPUT

    @tool(idempotent=True, requires_approval=True)
    def ship(target: str, copies: int = 1) -> str:
        """Ship the result.

        Args:
            target: where to ship
            copies: how many copies
        """
        return f"shipped {copies} to {target}"

    def policy(request: ModelRequest) -> Turn:
        results = [m for m in request.messages if m.role == "tool"]
        if not results:
            return Turn(text="reading the vault", calls=(("vault", {}),))
        if len(results) <= ships:
            return Turn(
                text=f"shipping batch {len(results)}",
                calls=(("ship", {"target": f"dock-{len(results)}", "copies": 1}),),
            )
        return Turn(text="all shipped: " + "; ".join(str(m.content)[:40] for m in results[1:]))

    return Agent(
        name="shipper",
        version="1",
        instructions="Ship things.",
        tools=[vault, ship],
        model=ScriptedModel(policy),
        limits=Limits(max_steps=10, max_cost_usd=5.0),
    )
