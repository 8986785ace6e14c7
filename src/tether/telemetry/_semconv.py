"""The GenAI semantic conventions the spans follow: attribute names, and the provider name
a run's model spec or model name implies."""

from __future__ import annotations

# GenAI semantic-convention attribute names (opentelemetry-semantic-conventions,
# opentelemetry.semconv._incubating.attributes.gen_ai_attributes).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_VERSION = "gen_ai.agent.version"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
ERROR_TYPE = "error.type"


def _provider(model: str, spec: str | None) -> str:
    """gen_ai.provider.name from the model spec the run was started with, else its name."""
    if spec and ":" in spec:
        prefix = spec.split(":", 1)[0].lower()
        if prefix in ("openai", "anthropic"):
            return prefix
    name = model.lower()
    if name.startswith("scripted"):
        return "tether.scripted"
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt")):
        return "openai"
    return "openai" if spec and spec.startswith("openai") else "unknown"
