"""Nothing outside `providers/` names a provider as behaviour: what differs between providers is a field of their
preset (`providers/presets.py`), which the costs and routing packages read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import relaycast
from relaycast.providers.presets import PRESETS

ROOT = Path(relaycast.__file__).parent
PACKAGES = ("costs", "routing")


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings (a description may name a provider)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def provider_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal in `source`, docstrings aside, that is a preset name or starts with
    one followed by '/' or ':' (`"openrouter"`, `f"vllm/{model}"`)."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    names = {n.lower() for n in PRESETS}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value.lower()
            head = text.replace(":", "/").split("/", 1)[0]
            if text in names or (head in names and head != text):
                found.append((node.lineno, node.value))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_costs_and_routing_compare_against_no_provider_name(package: str) -> None:
    files = sorted((ROOT / package).glob("*.py"))
    assert files
    hits = [
        f"{path.relative_to(ROOT.parent)}:{line}: {text!r}"
        for path in files
        for line, text in provider_literals(path.read_text())
    ]
    assert not hits, "a provider named as behaviour; give its preset a field instead:\n" + "\n".join(hits)


def test_the_check_sees_a_provider_named_in_code_but_not_in_a_docstring() -> None:
    code = '''"""Prices for OpenRouter and vllm."""
SELF_HOSTED = frozenset({"vllm", "ollama"})
def f(kind, model):
    """Only 'openrouter' here."""
    return kind == "openrouter" or f"groq/{model}"
'''
    assert sorted(t for _, t in provider_literals(code)) == ["groq/", "ollama", "openrouter", "vllm"]


@pytest.mark.parametrize(
    ("kind", "name", "model", "vendor"),
    [
        ("openai", "openai", "gpt-4o-mini", "openai"),
        ("anthropic", "claude", "claude-3-5-haiku-latest", "anthropic"),
        ("mistral", "mistral", "mistral-large-latest", "mistral_ai"),
        ("groq", "fast", "llama-3.1-8b-instant", "groq"),
        ("openrouter", "or", "anthropic/claude-3.5-haiku", "anthropic"),
        ("openrouter", "or", "mistralai/mistral-small", "mistral_ai"),
        ("openrouter", "or", "google/gemini-2.5-flash", "gcp.gemini"),
        ("vllm", "local", "my-finetune", "vllm"),
        ("openai_compatible", "FakeAI", "gpt-4o-mini", "fakeai"),
    ],
)
def test_the_vendor_of_a_model_is_named_as_the_genai_conventions_name_it(
    kind: str, name: str, model: str, vendor: str
) -> None:
    from relaycast.providers.presets import vendor as vendor_of

    assert vendor_of(kind, name, model) == vendor
