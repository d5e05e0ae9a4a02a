"""Integer pico-dollars (1e-12 USD): parsing from decimal text and formatting back, without floats."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

PICO_PER_USD = 10**12
_PICO = Decimal(PICO_PER_USD)


def pico_from_usd(value: object, *, exact: bool = False) -> int:
    """USD (a decimal string or number) as integer pico-dollars. `exact`: refuse a value that would be rounded."""
    try:
        d = Decimal(str(value)) * _PICO
    except (InvalidOperation, ValueError):
        raise ValueError(f"not a decimal amount: {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    q = d.to_integral_value(rounding=ROUND_HALF_EVEN)
    if exact and q != d:
        raise ValueError(f"{value!r} has more decimals than a pico-dollar")
    return int(q)


def usd_decimal(pico: int) -> Decimal:
    return (Decimal(pico) / _PICO).normalize() if pico else Decimal(0)


def format_usd(pico: int | None) -> str | None:
    """Exact decimal text ('0.00000105', '2', '-0.5'), or None for an unknown cost: `usd_decimal`'s digits, made
    with integer arithmetic, in half of Decimal's time (every exporter formats several per record)."""
    if pico is None:
        return None
    pico = int(pico)
    if 0 < pico < PICO_PER_USD:  # nearly every request's cost: under a dollar
        return "0." + str(PICO_PER_USD + pico)[1:].rstrip("0")
    whole, frac = divmod(abs(pico), PICO_PER_USD)
    sign = "-" if pico < 0 else ""
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:012d}".rstrip("0")


def usd_float(pico: int | None) -> float:
    return 0.0 if pico is None else int(pico) / PICO_PER_USD
