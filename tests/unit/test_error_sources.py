"""The one classification of error classes (relaycast.errors) and the one formatting of rates and latencies."""

from __future__ import annotations

import pytest

from relaycast import errors
from relaycast.cli.report_format import bucket_upper_ms, fmt_bucket_ms, fmt_rate
from relaycast.routing.health import HEALTH_FAILURES
from relaycast.store.histogram import RATIO, bucket_of, percentiles, value_of


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_upstream_error_class_is_classified_once() -> None:
    assert not errors.PROVIDER_FAILURES & errors.CLIENT_REFUSALS
    gateway_own = {"upstream_buffer_full"}  # this process was full: neither the provider's fault nor the client's
    for cls in _subclasses(errors.ProviderError):
        c = cls.error_class
        assert (c in errors.PROVIDER_FAILURES) + (c in errors.CLIENT_REFUSALS) + (c in gateway_own) == 1, c
    assert errors.error_source("rate_limit") == "provider" and errors.error_source("content_policy") == "client"
    assert errors.error_source("upstream_buffer_full") == "gateway"


def test_what_opens_circuits_is_a_subset_of_what_counts_in_error_rates() -> None:
    assert HEALTH_FAILURES < errors.PROVIDER_FAILURES
    assert "rate_limit" not in HEALTH_FAILURES  # a rate-limited target cools down instead


@pytest.mark.parametrize(
    ("rate", "text"), [(None, "-"), (0, "0.0%"), (0.3117, "31.2%"), (0.308, "30.8%"), (0.0004, "<0.1%"), (1, "100.0%")]
)
def test_rates_are_percents_with_one_decimal(rate: float | None, text: str) -> None:
    assert fmt_rate(rate) == text


def test_a_bucket_percentile_is_its_upper_edge_without_false_precision() -> None:
    assert fmt_bucket_ms(163.873) == "≤ 180 ms"  # bucket 53's middle; its upper edge is 171.9 ms
    assert fmt_bucket_ms(1002.235) == "≤ 1.1 s" and fmt_bucket_ms(None) == "-"
    for b in range(-20, 130):
        middle = percentiles([(b, 1)], (99.0,))[99.0]
        assert middle is not None
        bound = bucket_upper_ms(middle)
        assert RATIO ** (b + 1) <= bound + 1e-9 < RATIO ** (b + 1) * 1.1, b  # a true bound, at most 10% above
        assert bucket_of(value_of(b)) == b
