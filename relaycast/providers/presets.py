"""The only list of providers relaycast knows by name. Adding an OpenAI-compatible provider is one row here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Preset:
    adapter: str  # "openai" (OpenAI-compatible wire format) or "anthropic" (Messages API)
    base_url: str | None  # None: the config must give one
    auth_header: str = "authorization"
    auth_scheme: str = "Bearer "  # prefix before the key in auth_header
    stream_usage: bool = True  # honours stream_options.include_usage
    openrouter_extensions: bool = False  # forward session_id / trace upstream
    needs_key: bool = True


PRESETS: dict[str, Preset] = {
    "openai": Preset("openai", "https://api.openai.com/v1"),
    "openrouter": Preset("openai", "https://openrouter.ai/api/v1", openrouter_extensions=True),
    "groq": Preset("openai", "https://api.groq.com/openai/v1"),
    "together": Preset("openai", "https://api.together.xyz/v1"),
    "fireworks": Preset("openai", "https://api.fireworks.ai/inference/v1"),
    "deepseek": Preset("openai", "https://api.deepseek.com/v1"),
    "mistral": Preset("openai", "https://api.mistral.ai/v1", stream_usage=False),
    "vllm": Preset("openai", None, needs_key=False),
    "ollama": Preset("openai", "http://127.0.0.1:11434/v1", needs_key=False),
    "openai_compatible": Preset("openai", None, needs_key=False),
    "anthropic": Preset("anthropic", "https://api.anthropic.com/v1", auth_header="x-api-key", auth_scheme=""),
}
