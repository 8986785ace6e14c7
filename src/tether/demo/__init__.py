"""`tether demo`: a research-synthesis agent over a shipped corpus of invented sources."""

from ._agent import DEMO_INSTRUCTIONS, demo_agent, demo_plan, scripted_policy
from ._corpus import Document, corpus, search
from ._incidents import incidents_agent, incidents_plan, incidents_task

__all__ = [
    "DEMO_INSTRUCTIONS",
    "Document",
    "corpus",
    "demo_agent",
    "demo_plan",
    "incidents_agent",
    "incidents_plan",
    "incidents_task",
    "scripted_policy",
    "search",
]
