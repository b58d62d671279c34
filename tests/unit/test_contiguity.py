"""A consumer holds a partition at a hole the broker has not filled yet (Tansu shows offset N+1
before N under concurrent producers), and reads past a hole that stays open for HOLD_S."""

from __future__ import annotations

import logging
from typing import NamedTuple

import pytest

from choreograph.transport import TopicPartition
from choreograph.transport._contiguous import HOLD_S, Contiguity

TP = TopicPartition("ns.events", 0)
REGISTRY = TopicPartition("ns.registry", 0)


class _Record(NamedTuple):
    offset: int


def _records(*offsets: int) -> list[_Record]:
    return [_Record(o) for o in offsets]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def contiguity(clock: _Clock) -> Contiguity:
    return Contiguity(lambda topic: topic != REGISTRY.topic, clock)


def test_contiguous_records_pass_unchanged(contiguity: Contiguity) -> None:
    contiguity.expect(TP, 5)
    assert contiguity.admit(TP, _records(5, 6, 7)) == (_records(5, 6, 7), None)
    assert contiguity.admit(TP, _records(8)) == (_records(8), None)
    assert contiguity.refetched == 0


def test_a_hole_at_the_start_holds_the_partition_until_it_is_filled(contiguity: Contiguity,
                                                                     clock: _Clock) -> None:
    contiguity.expect(TP, 18)
    assert contiguity.admit(TP, _records(18)) == (_records(18), None)
    # The lost review input: 19 written, 20 readable first.
    assert contiguity.admit(TP, _records(20)) == ([], 19)
    clock.now += 0.007
    assert contiguity.admit(TP, _records(20)) == ([], 19)  # still open: held again
    assert contiguity.admit(TP, _records(19, 20)) == (_records(19, 20), None)
    assert contiguity.refetched == 2


def test_a_hole_inside_a_batch_passes_the_records_before_it(contiguity: Contiguity) -> None:
    contiguity.expect(TP, 0)
    assert contiguity.admit(TP, _records(0, 1, 3, 4)) == (_records(0, 1), 2)
    assert contiguity.admit(TP, _records(2, 3, 4)) == (_records(2, 3, 4), None)


def test_a_hole_open_for_hold_s_is_read_past_with_a_warning(contiguity: Contiguity, clock: _Clock,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    contiguity.expect(TP, 10)
    assert contiguity.admit(TP, _records(12, 13)) == ([], 10)
    clock.now += HOLD_S / 2
    assert contiguity.admit(TP, _records(12, 13)) == ([], 10)
    clock.now += HOLD_S / 2
    with caplog.at_level(logging.WARNING):
        assert contiguity.admit(TP, _records(12, 13)) == (_records(12, 13), None)
    assert "offsets 10..11 still unreadable" in caplog.text
    # A later hole gets its own full hold.
    assert contiguity.admit(TP, _records(15)) == ([], 14)


def test_unchecked_topics_and_unknown_starts_are_not_held(contiguity: Contiguity) -> None:
    assert contiguity.admit(REGISTRY, _records(0, 4, 9)) == (_records(0, 4, 9), None)
    # No expectation yet (a fresh assignment whose position was not read): the first record starts it.
    assert contiguity.admit(TP, _records(40, 41)) == (_records(40, 41), None)
    assert contiguity.admit(TP, _records(43)) == ([], 42)


def test_a_rebalance_forgets_what_was_expected(contiguity: Contiguity) -> None:
    """Another member may read on while the partition is away: coming back at its commit is no hole."""
    contiguity.expect(TP, 100)
    contiguity.forget([TP])
    assert not contiguity.expects(TP)
    assert contiguity.admit(TP, _records(150)) == (_records(150), None)
    contiguity.forget()
    assert not contiguity.expects(TP)
