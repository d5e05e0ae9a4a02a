"""relaycast: an OpenAI-compatible LLM gateway that makes every LLM call measurable, traceable and debuggable.

The public surface is small: `load_config(path)` reads and validates a YAML config, and `create_app(config)`
returns the gateway as an ASGI application (serve it with uvicorn, or run `relaycast serve`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaycast.version import __version__

if TYPE_CHECKING:
    from relaycast.config import Config
    from relaycast.server.app import Gateway

__all__ = ["__version__", "create_app", "load_config"]


def load_config(path: str) -> Config:
    """The config at `path`, validated (raises `relaycast.config.ConfigError` with the exact place)."""
    from relaycast.config import load

    return load(path)


def create_app(config: Config) -> Gateway:
    """The gateway for `config`, as an ASGI application (its lifespan starts and stops every part)."""
    from relaycast.server.app import Gateway

    return Gateway(config)
