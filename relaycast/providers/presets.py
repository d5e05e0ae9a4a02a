"""The only list of providers relaycast knows by name. Adding an OpenAI-compatible provider is one row here.

Besides the wire details, a preset carries the facts other packages need about a provider, so that nothing
outside `providers/` names one: how its models are priced (`price_vendor`, `vendor_in_model_name`,
`self_hosted`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Preset:
    adapter: str  # "openai" (OpenAI-compatible wire format) or "anthropic" (Messages API)
    base_url: str | None  # None: the config must give one
    auth_header: str = "authorization"
    auth_scheme: str = "Bearer "  # prefix before the key in auth_header
    stream_usage: bool = True  # honours stream_options.include_usage
    openrouter_extensions: bool = False  # forward session_id / trace upstream
    needs_key: bool = True
    # The vendor its models are listed under in the price catalog (`groq` -> `groq/llama-3.1-8b-instant`).
    price_vendor: str | None = None
    # Model names carry their vendor (`openai/gpt-4o-mini`, `anthropic/claude-3.5-haiku`) and are priced as that
    # catalog entry.
    vendor_in_model_name: bool = False
    # Serves models on the operator's own hardware: they have no list price, so a model name is never priced
    # from another vendor's list (only from the config's `prices:` or a route's `price:`).
    self_hosted: bool = False
    # The field that caps a completion's output. OpenAI's reasoning models refuse `max_tokens` and every OpenAI chat
    # model takes `max_completion_tokens`, so for OpenAI a `max_tokens` (the client's, or the cap the gateway sets
    # for a budget) is sent under that name.
    output_cap: str = "max_tokens"
    # Serves OpenAI's Responses API (`POST /responses`): a `/v1/responses` request goes to it as the client sent it
    # rather than translated to chat completions. A provider's `responses_api:` setting overrides it.
    responses_api: bool = False


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "openai": Preset(
            "openai",
            "https://api.openai.com/v1",
            price_vendor="openai",
            output_cap="max_completion_tokens",
            responses_api=True,
        ),
        "openrouter": Preset(
            "openai",
            "https://openrouter.ai/api/v1",
            openrouter_extensions=True,
            vendor_in_model_name=True,
        ),
        "groq": Preset("openai", "https://api.groq.com/openai/v1", price_vendor="groq"),
        "together": Preset("openai", "https://api.together.xyz/v1", price_vendor="together"),
        "fireworks": Preset("openai", "https://api.fireworks.ai/inference/v1", price_vendor="fireworks"),
        "deepseek": Preset("openai", "https://api.deepseek.com/v1", price_vendor="deepseek"),
        "mistral": Preset("openai", "https://api.mistral.ai/v1", stream_usage=False, price_vendor="mistral"),
        "vllm": Preset("openai", None, needs_key=False, self_hosted=True),
        "ollama": Preset("openai", "http://127.0.0.1:11434/v1", needs_key=False, self_hosted=True),
        "openai_compatible": Preset("openai", None, needs_key=False),
        "anthropic": Preset(
            "anthropic",
            "https://api.anthropic.com/v1",
            auth_header="x-api-key",
            auth_scheme="",
            price_vendor="anthropic",
        ),
    }
)

# The GenAI semantic conventions' well-known `gen_ai.provider.name` values (and Datadog's `model_provider`), by
# the vendor a preset prices under or an OpenRouter model's prefix; any other vendor keeps its own name.
SEMCONV_VENDORS: Mapping[str, str] = MappingProxyType(
    {
        "openai": "openai",
        "anthropic": "anthropic",
        "mistral": "mistral_ai",
        "mistralai": "mistral_ai",
        "groq": "groq",
        "deepseek": "deepseek",
        "google": "gcp.gemini",
        "x-ai": "x_ai",
        "cohere": "cohere",
        "perplexity": "perplexity",
    }
)


def vendor(kind: str, name: str, model: str, *, semconv: bool = True) -> str:
    """Who made the model a provider serves, by the GenAI conventions' names: its preset's vendor (`openai`,
    `anthropic`, `mistral_ai`, `groq`, ...), the prefix of an OpenRouter model (`anthropic/claude-3.5-haiku` ->
    `anthropic`), the kind of a self-hosted server (`vllm`, `ollama`), else the provider's configured name.
    `semconv=False`: the plain name (`mistral`, `google`), as OpenRouter's answers name providers."""
    preset = PRESETS.get(kind)
    if preset is not None and preset.vendor_in_model_name and "/" in model:
        v = model.partition("/")[0].lower()
    elif preset is not None and preset.price_vendor:
        v = preset.price_vendor
    elif kind in ("openai_compatible", "openrouter"):
        v = name.lower()
    else:
        v = kind
    return SEMCONV_VENDORS.get(v, v) if semconv else v
