"""Models behind one small interface. Providers live in their own modules
(`tether.models.openai`, `tether.models.anthropic`) so their SDKs stay optional."""

from ._base import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ModelUsage,
    Role,
    ToolCall,
    ToolSpec,
    check_real_calls_allowed,
)
from ._messages import MessageView
from ._tokens import estimate_text_tokens, estimate_tokens
from .pricing import DEFAULT_PRICES, Price, PriceTable, UnpricedModel
from .scripted import ScriptedModel, Turn, call

__all__ = [
    "DEFAULT_PRICES",
    "Message",
    "MessageView",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ModelUsage",
    "Price",
    "PriceTable",
    "Role",
    "ScriptedModel",
    "ToolCall",
    "ToolSpec",
    "Turn",
    "UnpricedModel",
    "call",
    "check_real_calls_allowed",
    "estimate_text_tokens",
    "estimate_tokens",
]
