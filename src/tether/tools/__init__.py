"""Tools: Python functions the model can call, described by JSON schemas."""

from ..errors import ToolRetry
from ._call import ErrorKind, ToolOutcome, execute, parse_arguments, render_output
from ._source import ToolSession, ToolSource
from ._tool import ApprovalPredicate, Tool, ToolContext, UnknownOutcomePolicy, tool

__all__ = [
    "ApprovalPredicate",
    "ErrorKind",
    "Tool",
    "ToolContext",
    "ToolOutcome",
    "ToolRetry",
    "ToolSession",
    "ToolSource",
    "UnknownOutcomePolicy",
    "execute",
    "parse_arguments",
    "render_output",
    "tool",
]
