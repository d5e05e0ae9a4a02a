"""Builds one adapter per configured provider. The only place that maps a wire format to its adapter class."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import aiohttp

from relaycast.config import Config
from relaycast.providers.base import Provider

ADAPTERS = {
    "openai": "relaycast.providers.openai_compat:OpenAICompatProvider",
    "anthropic": "relaycast.providers.anthropic:AnthropicProvider",
}


def adapter_class(adapter: str) -> type:
    module, _, cls = ADAPTERS[adapter].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_providers(config: Config, session: aiohttp.ClientSession) -> Mapping[str, Provider]:
    return {name: adapter_class(p.adapter)(p, session) for name, p in config.providers.items()}
