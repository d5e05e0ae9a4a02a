"""The log-scale latency histogram the store and the routing health board share."""

from __future__ import annotations

import collections

from hypothesis import given, settings
from hypothesis import strategies as st

from relaycast.store.histogram import RATIO, bucket_of, percentiles


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.5, 500_000), min_size=1, max_size=300), st.sampled_from([0.5, 0.9, 0.99]))
def test_histogram_percentiles_are_within_half_a_bucket_of_the_exact_value(values, q) -> None:
    hist = collections.Counter(bucket_of(v) for v in values)
    exact = sorted(values)[max(0, -(-int(q * len(values) * 1000) // 1000) - 1)]
    got = percentiles(hist.items(), (q * 100,))[q * 100]
    assert got is not None
    assert exact / 1.26 <= got <= max(1.0, exact * 1.26)
    assert exact / RATIO**0.5 - 0.001 <= got <= exact * RATIO**0.5 + 0.001, "within half a bucket (about 5%)"


def test_an_empty_histogram_has_no_percentiles() -> None:
    assert percentiles([], (50.0, 99.0)) == {50.0: None, 99.0: None}
