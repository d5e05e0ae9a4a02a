"""How the command line writes money, rates and latencies: the same way as the dashboard
(relaycast/dashboard/static/app.js, `money`, `fmtPct` and `fmtBucketMs`), so the numbers agree wherever they are read.

- Money (`cost_usd`, exact decimal text): `$0.00` for zero; cents with thousands separators from a dollar up
  (`$1,234.57`); below a dollar, three significant digits and at least two decimals (`$0.50`, `$0.123`,
  `$0.00024`), at most ten decimals (`$<0.0000000001` below that); negative amounts as `-$0.50`.

- A rate is a percent with one decimal: `30.8%` (`<0.1%` for a rate above 0 that would round to `0.0%`).
- A latency percentile read from the histogram (relaycast.store.histogram: 10% wide buckets, read back as their
  geometric middle) is shown as the upper edge of its bucket rounded up to two significant digits: `≤ 180 ms`
  for a middle of 163.873 ms. It is a bound the true percentile is under, with no more digits than it has.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from relaycast.store.histogram import RATIO, bucket_of

MONEY_MAX_DECIMALS = 10


def fmt_money(usd: str | Decimal | float | int | None) -> str:
    """An amount of dollars as the dashboard's `money()` writes it; `-` for none, the text itself if not a number."""
    if usd is None or usd == "":
        return "-"
    try:
        d = Decimal(str(usd))
    except InvalidOperation:
        return str(usd)
    if not d.is_finite():
        return str(usd)
    if d == 0:
        return "$0.00"
    sign = "-$" if d < 0 else "$"
    a = abs(d)
    if a >= 1:
        return f"{sign}{a.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    places = min(MONEY_MAX_DECIMALS, max(2, 2 - a.adjusted()))  # adjusted(): floor(log10(a))
    q = a.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    if q == 0:
        return f"{sign}<0.{'0' * (MONEY_MAX_DECIMALS - 1)}1"
    text = f"{q:f}"
    whole, _, frac = text.partition(".")
    frac = frac[:2] + frac[2:].rstrip("0")
    return f"{sign}{whole}.{frac}"


def fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    pct = rate * 100
    if 0 < pct < 0.05:
        return "<0.1%"
    return f"{pct:.1f}%"


def bucket_upper_ms(ms: float) -> float:
    """The upper edge of the histogram bucket `ms` falls in, rounded up to two significant digits."""
    edge = math.pow(RATIO, bucket_of(ms) + 1)
    step = math.pow(10, math.floor(math.log10(edge)) - 1)
    return round(math.ceil(round(edge / step, 9)) * step, 9)


def fmt_bucket_ms(ms: float | None) -> str:
    """A percentile from histogram buckets: `≤ 180 ms`, `≤ 1.3 s`, `≤ 4.5 ms`; `-` when there is none."""
    if ms is None:
        return "-"
    return "≤ " + _duration(bucket_upper_ms(ms))


def _duration(ms: float) -> str:
    if ms >= 1000:
        s = ms / 1000
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if ms >= 10:
        return f"{ms:.0f} ms"
    if ms >= 1:
        return f"{ms:.1f} ms"
    return f"{ms:.2g} ms"
