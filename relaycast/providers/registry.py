"""Builds one adapter per configured provider. The only place that maps a wire format to its adapter class."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from relaycast.providers.base import Provider
from relaycast.providers.client import UpstreamClient
from relaycast.providers.http import UpstreamBuffer
from relaycast.providers.settings import ProviderConfig

ADAPTERS = MappingProxyType(
    {
        "openai": "relaycast.providers.openai_compat:OpenAICompatProvider",
        "anthropic": "relaycast.providers.anthropic:AnthropicProvider",
    }
)


def adapter_class(adapter: str) -> type:
    module, _, cls = ADAPTERS[adapter].partition(":")
    cls_: type = getattr(importlib.import_module(module), cls)
    return cls_


def build_providers(
    providers: Mapping[str, ProviderConfig], client: UpstreamClient, buffer: UpstreamBuffer | None = None
) -> Mapping[str, Provider]:
    """One adapter per provider config, keyed by the provider's name; they share the caller's HTTP client and one
    `UpstreamBuffer` (the process's bound on upstream answers held in memory; the default size when not given)."""
    shared = buffer if buffer is not None else UpstreamBuffer()
    return {name: adapter_class(p.adapter)(p, client, shared) for name, p in providers.items()}
