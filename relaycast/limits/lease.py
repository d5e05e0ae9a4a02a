"""A worker's lease: capacity the host's limits lent it (`MemoryLimiter.grant`), so that it admits requests itself,
without asking the state process, while their scopes are far from their limits.

A lease covers one set of checks (a key, and the user and feature a request names) for up to `LEASE_S`: some
requests, the tokens and the nano-dollars of their estimates. A request is admitted under it when what is left
covers its estimates; what the requests it admitted really used, and what it did not use, are reported to the
host when it ends (`report`): once when it is replaced or runs out, and once more when the last request admitted
under it has ended. A new lease is asked for in the background when half of one is used or half its time has
passed, for about `LEASE_S` at the rate it was used; the first asks for `MIN_WANT` requests.
"""

from __future__ import annotations

import math

MIN_WANT = 8
MAX_WANT = 10_000
Report = list[int | str | bool]


class Lease:
    __slots__ = (
        "id",
        "epoch",
        "began",
        "until",
        "requests",
        "tokens",
        "nano",
        "granted",
        "taken",
        "open",
        "retired",
        "token_delta",
        "spent",
        "settled",
    )

    def __init__(self, lid: str, epoch: int, began: float, grant: list[float]) -> None:
        requests, tokens, nano, until = grant
        self.id = lid
        self.epoch = epoch  # the link's connection it was granted on: void on another
        self.began = began
        self.until = float(until)
        self.requests = self.granted = int(requests)  # what is left to admit with
        self.tokens = int(tokens)
        self.nano = int(nano)
        self.taken = 0  # requests admitted under it
        self.open = 0  # ... of which not yet ended
        self.retired = False  # no more requests admitted under it
        # what its ended requests used, not yet reported
        self.token_delta = self.spent = self.settled = 0

    def take(self, est_tokens: int, est_nano: int, now: float, epoch: int) -> bool:
        """Admit one request with these estimates under this lease, if what is left covers them."""
        if self.retired or self.spent_out(now, epoch) or self.tokens < est_tokens or self.nano < est_nano:
            return False
        self.requests -= 1
        self.tokens -= est_tokens
        self.nano -= est_nano
        self.taken += 1
        self.open += 1
        return True

    def spent_out(self, now: float, epoch: int) -> bool:
        """Nothing more can be admitted under it: no request left, its time over, or its connection gone."""
        return self.requests < 1 or now >= self.until or epoch != self.epoch

    def due(self, now: float) -> bool:
        """Time to ask for the next one: half of it used, or half its time gone."""
        return self.requests * 2 <= self.granted or now * 2 >= self.began + self.until

    def want(self, now: float) -> int:
        """Requests to ask for in the next lease: about its length at the rate this one was used."""
        length = self.until - self.began
        rate = self.taken / max(now - self.began, length / 20)
        return max(MIN_WANT, min(MAX_WANT, math.ceil(rate * length * 1.25)))

    def ended(self, est_tokens: int, est_nano: int, tokens: int, nano: int) -> bool:
        """A request admitted under it has ended; True when it was the last of a retired lease (report now)."""
        self.open -= 1
        self.token_delta += tokens - est_tokens
        self.spent += nano
        self.settled += est_nano
        return self.retired and self.open == 0

    def report(self) -> Report:
        """[id, requests, tokens and nano unused, token delta, spent, settled, final]: what the host's
        `MemoryLimiter.give_back` takes. Once retired, what is left is given back with the first report."""
        out: Report = [
            self.id,
            self.requests,
            self.tokens,
            self.nano,
            self.token_delta,
            self.spent,
            self.settled,
            self.open == 0,
        ]
        self.requests = self.tokens = self.nano = self.token_delta = self.spent = self.settled = 0
        return out
