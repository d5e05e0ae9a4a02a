"""The one place secrets are scrubbed before text leaves the process (responses, logs, records).

Known secrets (provider keys, header values from the config) are replaced exactly; anything shaped like a
provider key or a bearer token is masked by pattern, so a key echoed back by an upstream is caught too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[REDACTED]"
_PATTERNS = re.compile(
    r"(?:sk-(?:ant-|proj-|or-v1-)?[A-Za-z0-9_\-]{8,})"  # OpenAI / Anthropic / OpenRouter style keys
    r"|(?:gsk_[A-Za-z0-9]{16,})"  # Groq
    r"|(?:(?<=[Bb]earer )[A-Za-z0-9._\-+/=]{8,})"  # bearer tokens
)


class Redactor:
    __slots__ = ("_exact",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._exact = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for s in self._exact:
            if s in text:
                text = text.replace(s, MASK)
        return _PATTERNS.sub(MASK, text)

    def scrub_known(self, data: bytes) -> bytes:
        """Mask the known secrets only, for exported payloads: a fast substring search, and a mask of the same
        length, so length-framed encodings (OTLP protobuf) stay valid."""
        for s in self._exact:
            b = s.encode()
            if b in data:
                data = data.replace(b, b"*" * len(b))
        return data

    def scrub_bytes(self, data: bytes) -> bytes:
        return self.scrub(data.decode("utf-8", "replace")).encode()
