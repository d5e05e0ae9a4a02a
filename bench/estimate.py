"""Micro benchmark: the prompt token estimate a request with a token limit or a budget pays on the event loop.

    python bench/estimate.py
    python bench/estimate.py --rounds 9

Prompts, each parsed from its JSON for every request (new string objects, as a request's body gives them):
`load.py`'s two short messages; a conversation of 61 messages (170 KB) sent again with one more turn each time, as
a chat client or a coding agent sends its history; a 40 KB system prompt repeated with a new user message; and the
same conversation with every text new each time (nothing to remember: the bounded worst case). Each is estimated
by relaycast's estimator (texts remembered once counted) and by one that remembers nothing (`memo_texts=0`), in
interleaved rounds, with the estimator relaycast would make here (the heuristic, unless tiktoken and its file are
installed: the output says which). Prints the median CPU µs per request of each and their ratio. No network.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from relaycast.costs.estimate import TokenEstimator

WORDS = (
    "the quick brown fox jumps over lazy dog function return value const let if else for while 12345 {}(); "
    "résumé naïve 東京 😀"
).split()


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def prompts(rng: random.Random) -> dict[str, Callable[[int], list[Any]]]:
    """name -> a function of the request's number giving that request's messages (parsed from JSON)."""
    short = orjson.dumps(
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello to the benchmark in one short sentence."},
        ]
    )
    history = [{"role": "system", "content": _text(rng, 12_000)}]
    history += [{"role": "user" if i % 2 == 0 else "assistant", "content": _text(rng, 2_600)} for i in range(60)]
    turns = [_text(rng, 200) for _ in range(64)]
    system = {"role": "system", "content": _text(rng, 40_000)}

    def conversation(i: int) -> list[Any]:
        return list(orjson.loads(orjson.dumps([*history, {"role": "user", "content": turns[i % len(turns)]}])))

    def repeated_system(i: int) -> list[Any]:
        return list(orjson.loads(orjson.dumps([system, {"role": "user", "content": turns[i % len(turns)]}])))

    def all_new(i: int) -> list[Any]:
        return [{**m, "content": f"{i} {m['content']}"} for m in conversation(i)]

    return {
        "two short messages (load.py's)": lambda i: list(orjson.loads(short)),
        "a 170 KB conversation, one new turn each time": conversation,
        "a 40 KB system prompt, a new user message each time": repeated_system,
        "a 170 KB conversation, every text new each time": all_new,
    }


def per_request_us(est: TokenEstimator, make: Callable[[int], list[Any]], n: int) -> float:
    batches = [make(i) for i in range(n)]
    est.prompt(make(n))  # what a client sent before: remembered by an estimator that remembers
    t0 = time.process_time()
    for messages in batches:
        est.prompt(messages)
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(1)
    cases = prompts(rng)
    kinds = {"remembering": TokenEstimator, "not": lambda: TokenEstimator(memo_texts=0)}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, make in cases.items():
            n = 2_000 if name.startswith("two") else 100
            for kind, new in kinds.items():
                times.setdefault((name, kind), []).append(per_request_us(new(), make, n))
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"counted by: {TokenEstimator().method}; median of {args.rounds} interleaved rounds, CPU µs per estimate\n")
    print("| prompt | remembering texts | remembering none | ratio |")
    print("|---|---:|---:|---:|")
    for name in cases:
        a, b = statistics.median(times[(name, "remembering")]), statistics.median(times[(name, "not")])
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
