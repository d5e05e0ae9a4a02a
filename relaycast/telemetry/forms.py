"""The edit form of each destination kind, for the dashboard's Settings > Broadcast page and the CLI: the fields its
backend asks for, their defaults, and which are secrets (sealed at rest, never shown again).

A form's values are the destination's config settings (the same names as in the config file's `broadcast:`
section), so a destination saved from the page is parsed by the same code as one from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relaycast.telemetry import kinds
from relaycast.telemetry.settings import DD_SITES, DEFAULT_SITE, KINDS

TEXT, SECRET, URL, SELECT, NUMBER, BOOL, HEADERS = "text", "secret", "url", "select", "number", "bool", "headers"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label: str
    type: str = TEXT
    required: bool = False
    default: Any = None
    options: tuple[str, ...] = ()
    help: str = ""
    advanced: bool = False

    @property
    def secret(self) -> bool:
        return self.type in (SECRET, HEADERS)

    def doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "required": self.required,
            "default": self.default,
            "options": list(self.options),
            "help": self.help,
            "advanced": self.advanced,
            "secret": self.secret,
        }


def _service() -> Field:
    return Field("service", "Service name", default="relaycast", advanced=True)


def _compression(default: str = "none") -> Field:
    return Field("compression", "Compression", SELECT, default=default, options=("none", "gzip"), advanced=True)


DATADOG = (
    Field("api_key", "API key", SECRET, help="Organization Settings > API Keys. Not needed through an Agent."),
    Field("ml_app", "ML App", required=True, default="relaycast", help="The LLM Observability application name."),
    Field(
        "site",
        "Site URL",
        SELECT,
        default=f"https://api.{DEFAULT_SITE}",
        options=tuple(f"https://api.{s}" for s in DD_SITES),
        help="Your Datadog site.",
    ),
    Field("env", "Environment", help="The env tag (e.g. prod)."),
    _service(),
    Field("agent_url", "Agent URL", URL, advanced=True, help="Send through a Datadog Agent instead (its key is used)."),
    Field("api_url", "API URL", URL, advanced=True, help="A proxy in front of api.<site>."),
    Field("intake_url", "Intake URL", URL, advanced=True, help="A proxy in front of llmobs-intake.<site>."),
)
OTLP = (
    Field("endpoint", "Traces endpoint", URL, required=True, help="The full OTLP/HTTP traces URL, …/v1/traces."),
    Field("headers", "Headers", HEADERS, help="One `name=value` per line (e.g. the backend's API key header)."),
    Field("protocol", "Protocol", SELECT, default="protobuf", options=("protobuf", "json"), advanced=True),
    _service(),
    _compression(),
)
WEBHOOK = (
    Field("url", "URL", URL, required=True, help="Each batch is POSTed here as JSON lines."),
    Field("secret", "Signing secret", SECRET, help="Signs each body with HMAC-SHA256 (x-relaycast-signature)."),
    Field("headers", "Headers", HEADERS, advanced=True),
)
FILE = (
    Field("path", "File path", required=True, help="JSON lines on the gateway's disk, rotated by size."),
    Field("max_bytes", "Rotate at (bytes)", NUMBER, default=10 * 1024 * 1024, advanced=True),
    Field("backups", "Rotated files kept", NUMBER, default=5, advanced=True),
)

# The settings of the other kinds (`relaycast.telemetry.kinds`): label, type, and whether the backend needs it.
_KNOWN: dict[str, tuple[str, str, bool]] = {
    "public_key": ("Public key", TEXT, True),
    "access_key_id": ("Access key ID", TEXT, False),
    "api_key": ("API key", SECRET, False),
    "secret_key": ("Secret key", SECRET, True),
    "license_key": ("License key", SECRET, True),
    "token": ("Token", SECRET, True),
    "password": ("Password", SECRET, False),
    "dsn": ("DSN", SECRET, True),
    "secret_access_key": ("Secret access key", SECRET, False),
    "session_token": ("Session token", SECRET, False),
    "headers": ("Headers", HEADERS, False),
    "endpoint": ("Endpoint", URL, False),
    "endpoint_url": ("Endpoint URL", URL, False),
    "url": ("URL", URL, False),
    "base_url": ("Base URL", URL, False),
    "api_url": ("API URL", URL, False),
    "host": ("Host", URL, False),
    "space_id": ("Space ID", TEXT, True),
    "instance_id": ("Instance ID", TEXT, True),
    "zone": ("Zone", TEXT, False),
    "bucket": ("Bucket", TEXT, True),
    "project": ("Project", TEXT, False),
    "project_name": ("Project name", TEXT, False),
    "project_id": ("Project ID", TEXT, False),
    "workspace": ("Workspace", TEXT, False),
    "workspace_id": ("Workspace ID", TEXT, False),
    "entity": ("Entity", TEXT, False),
    "environment": ("Environment", TEXT, False),
    "region": ("Region", TEXT, False),
    "user": ("User", TEXT, False),
    "database": ("Database", TEXT, False),
    "table": ("Table", TEXT, False),
    "prefix": ("Key prefix", TEXT, False),
}
_ADVANCED = {"service", "compression", "protocol", "addressing_style", "profile", "session_token", "table", "prefix"}
# The order fields are shown in: credentials first, then where, then the rest.
_ORDER = tuple(_KNOWN)


def fields(kind: str) -> tuple[Field, ...]:
    if kind == "datadog":
        return DATADOG
    if kind == "otlp":
        return OTLP
    if kind == "webhook":
        return WEBHOOK
    if kind == "file":
        return FILE
    spec = kinds.spec(kind)
    out = []
    for name in sorted(spec.keys, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
        if name == "service":
            out.append(_service())
        elif name == "compression":  # "": the kind's own default
            out.append(
                Field("compression", "Compression", SELECT, default="", options=("", "none", "gzip"), advanced=True)
            )
        else:
            label, ftype, required = _KNOWN.get(name, (name.replace("_", " ").capitalize(), TEXT, False))
            out.append(Field(name, label, ftype, required=required, advanced=name in _ADVANCED))
    return tuple(out)


def title(kind: str) -> str:
    return {"datadog": "Datadog", "otlp": "OTLP (any backend)", "webhook": "Webhook", "file": "File"}.get(
        kind
    ) or kinds.spec(kind).title


def secret_names(kind: str) -> frozenset[str]:
    return frozenset(f.name for f in fields(kind) if f.secret)


def url_names(kind: str) -> frozenset[str]:
    return frozenset(f.name for f in fields(kind) if f.type == URL)


# Settings that say where a destination sends (with its secrets): a saved secret is reused only while they stay.
_WHERE = frozenset({"site", "region", "zone", "instance_id", "bucket", "profile"})


def address_names(kind: str) -> frozenset[str]:
    return url_names(kind) | frozenset(f.name for f in fields(kind) if f.name in _WHERE)


def catalog() -> list[dict[str, Any]]:
    """Every kind's form, for the page."""
    return [{"kind": k, "title": title(k), "fields": [f.doc() for f in fields(k)]} for k in KINDS]
