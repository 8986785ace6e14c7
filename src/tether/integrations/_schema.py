"""Tools described by a JSON schema someone else wrote (an MCP server, another framework).

Tether's `Tool` validates arguments with a pydantic model; for a foreign tool that model
checks what a wrong call most often gets wrong (not an object, a required key missing)
and passes the arguments through unchanged, so the tool's own validator has the last word
and its message reaches the model.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from ..errors import UsageError

__all__ = ["passthrough_model", "require_module", "tool_name"]

_NAME = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(name: str) -> str:
    """A name every provider accepts (1-64 of letters, digits, _ and -)."""
    cleaned = _NAME.sub("_", name)[:64]
    if not cleaned:
        raise UsageError(f"tool name {name!r} has no usable characters")
    return cleaned


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _fits(value: Any, declared: Any) -> bool:
    """Whether a value has one of the JSON types a property declares (unknown: yes)."""
    names = declared if isinstance(declared, list) else [declared]
    kinds = [_JSON_TYPES[n] for n in names if isinstance(n, str) and n in _JSON_TYPES]
    if not kinds or len(kinds) != len(names):
        return True
    if isinstance(value, bool):
        return any(bool in k for k in kinds)
    return any(isinstance(value, k) for k in kinds)


def passthrough_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A model that checks required keys and top-level JSON types, and dumps the
    arguments exactly as given."""
    required = tuple(str(k) for k in schema.get("required", ()) if isinstance(k, str))
    properties = schema.get("properties")
    types = {
        str(k): v["type"]
        for k, v in (properties.items() if isinstance(properties, dict) else ())
        if isinstance(v, dict) and "type" in v
    }

    class Arguments(BaseModel):
        model_config = ConfigDict(extra="allow")

        @model_validator(mode="before")
        @classmethod
        def _required(cls, data: Any) -> Any:
            if not isinstance(data, dict):
                raise ValueError("the arguments must be a JSON object")
            missing = [k for k in required if k not in data]
            if missing:
                raise ValueError(f"missing required argument(s): {', '.join(missing)}")
            wrong = [k for k, v in data.items() if k in types and not _fits(v, types[k])]
            if wrong:
                expected = ", ".join(f"{k} must be {types[k]}" for k in wrong)
                raise ValueError(f"wrong type: {expected}")
            return data

    Arguments.__name__ = f"{tool_name(name)}_args"
    return Arguments


def require_module(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"{module} is not installed: pip install 'tether-runtime[{extra}]' ({exc})"
        ) from None
