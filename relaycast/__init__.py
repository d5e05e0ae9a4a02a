"""relaycast: an OpenAI-compatible LLM gateway that makes every LLM call measurable, traceable and debuggable."""

__version__ = "0.1.0"
