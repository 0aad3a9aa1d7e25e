"""Counters and histograms the event loop adds to without a lock, folded into their Prometheus metrics
when the registry is collected (a scrape of /metrics, or ``get_sample_value`` in tests).

prometheus_client takes a lock on every update, three or four per single-key read (the request counter,
the query histogram's sum and bucket, the searches counter): a measurable share of a read that takes
tens of microseconds. Here the hot path adds to plain ints and floats, and the metrics registry
(metrics.Metrics) folds what was added since the last collection into the same prometheus_client
children first, so /metrics shows the same series with the same values as if each update had gone
straight to them.

Only the event loop thread adds to a tally; only collections (under the registry's fold lock) read it and
write their own "folded so far" marks. Folding adds the difference between a tally and its mark, so an
update that races with a scrape is never lost: it shows in that scrape or the next.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any


class CounterTally:
    """``count`` is added to by the hot path; ``fold`` moves the new part into ``child`` (a Counter child)."""

    __slots__ = ("count", "_child", "_folded")

    def __init__(self, child: Any) -> None:
        self.count = 0
        self._child = child
        self._folded = 0

    def fold(self) -> None:
        count = self.count
        if count != self._folded:
            self._child.inc(count - self._folded)
            self._folded = count


class HistogramTally:
    """Observations of one Histogram child: a count per bucket and the sum.

    ``observe`` puts a value in the first bucket whose upper bound is at least the value, as
    prometheus_client's ``Histogram.observe`` does; ``fold`` adds the new counts to the child's buckets
    and sum (its ``_buckets`` and ``_sum``: tests/server/test_units.py checks that a fold exposes what
    direct observations would).
    """

    __slots__ = ("bounds", "counts", "sum", "_child", "_folded_counts", "_folded_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self.bounds: tuple[float, ...] = tuple(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self._folded_counts = [0] * len(self.bounds)
        self._folded_sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def fold(self) -> None:
        folded = self._folded_counts
        buckets = self._child._buckets
        total = self.sum  # an observation racing with the fold may show in the sum or a count one scrape late
        for i, count in enumerate(self.counts):
            if count != folded[i]:
                buckets[i].inc(count - folded[i])
                folded[i] = count
        if total != self._folded_sum:
            self._child._sum.inc(total - self._folded_sum)
            self._folded_sum = total


class LabelledTallies:
    """Counter tallies by one varying label value (a request counter's status), made on first use."""

    __slots__ = ("_make", "by_value")

    def __init__(self, make: Any) -> None:
        self._make = make  # label value -> the Counter child
        self.by_value: dict[Any, CounterTally] = {}

    def get(self, value: Any) -> CounterTally:
        tally = self.by_value.get(value)
        if tally is None:
            tally = self.by_value[value] = CounterTally(self._make(value))
        return tally

    def fold(self) -> None:
        # tuple() of a dict's values runs without releasing the GIL: safe while the loop adds a status.
        for tally in tuple(self.by_value.values()):
            tally.fold()
