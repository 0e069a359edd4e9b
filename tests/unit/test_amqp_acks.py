"""The acks held while a confirm frame is handled (sidecar/shell/io/acks.py): a multiple
ack only where it settles exactly the deliveries the core acked, never one it did not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar.shell.io.acks import Acks


def broker_settles(outstanding: set[int], sends: list[tuple[int, bool]]) -> set[int]:
    """What the broker settles for the acks sent, as AMQP 0-9-1 defines basic.ack."""
    settled: set[int] = set()
    for tag, multiple in sends:
        covered = {t for t in outstanding if t <= tag} if multiple else {tag}
        settled |= covered
        outstanding -= covered
    return settled


def delivered(tags: range) -> Acks:
    acks = Acks()
    for tag in tags:
        acks.delivered(tag)
    return acks


def test_a_gapless_prefix_goes_out_as_one_multiple_ack() -> None:
    acks = delivered(range(1, 6))
    acks.hold()
    for tag in (2, 1, 3, 5):
        assert acks.take(tag)
    assert acks.stop() == [(3, True), (5, False)]  # 4 is not acked: 5 on its own
    assert list(acks.outstanding) == [4]
    assert not acks.take(4)  # no longer holding: the caller sends it


def test_a_nacked_delivery_is_no_gap() -> None:
    acks = delivered(range(1, 4))
    acks.settled(1)  # nacked
    acks.hold()
    acks.take(3)
    acks.take(2)
    assert acks.release() == [(3, True)]
    assert acks.held == []  # still holding


def test_one_ack_and_acks_after_a_gap_go_out_one_by_one() -> None:
    acks = delivered(range(1, 4))
    acks.hold()
    acks.take(2)
    assert acks.stop() == [(2, False)]
    acks.hold()
    acks.take(3)
    acks.take(2)  # acked twice: the core never does; sent as it was given
    assert acks.stop() == [(3, False), (2, False)]


def test_a_new_channel_forgets_the_outstanding_tags() -> None:
    acks = delivered(range(1, 3))
    acks.hold()
    acks.take(1)
    acks.clear()
    assert acks.outstanding == {} and acks.held == []
    assert Acks().hold()  # a fresh Acks starts holding
    assert not acks.hold()  # already holding: the outer holder stops it


@given(st.integers(1, 30), st.data())
def test_the_broker_settles_exactly_the_acked_deliveries(n: int, data: st.DataObject) -> None:
    acks = delivered(range(1, n + 1))
    nacked = data.draw(st.sets(st.integers(1, n)))
    for tag in nacked:
        acks.settled(tag)
    open_tags = set(range(1, n + 1)) - nacked
    acked = data.draw(st.permutations(sorted(open_tags)).flatmap(
        lambda p: st.integers(0, len(p)).map(lambda k: p[:k])))
    acks.hold()
    for tag in acked:
        acks.take(tag)
    sends = acks.stop()
    assert broker_settles(set(open_tags), sends) == set(acked)
    assert set(acks.outstanding) == open_tags - set(acked)
    assert sum(1 for _, multiple in sends if multiple) <= 1
