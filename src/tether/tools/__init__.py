"""Tools: Python functions the model can call, described by JSON schemas."""

from ..errors import ToolRetry
from ._call import ErrorKind, ToolOutcome, execute, parse_arguments, render_output
from ._tool import ApprovalPredicate, Tool, ToolContext, UnknownOutcomePolicy, tool

__all__ = [
    "ApprovalPredicate",
    "ErrorKind",
    "Tool",
    "ToolContext",
    "ToolOutcome",
    "ToolRetry",
    "UnknownOutcomePolicy",
    "execute",
    "parse_arguments",
    "render_output",
    "tool",
]
