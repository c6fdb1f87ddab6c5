"""StampBook: exact header stamps back from float reference times, bounded."""
from types import SimpleNamespace as NS

from fusion_node.convert import stamp_to_sec
from fusion_node.stamps import StampBook


def test_exact_stamp_survives_the_float_round_trip() -> None:
    stamp = NS(sec=1_795_380_088, nanosec=123_456_789)
    t = stamp_to_sec(stamp)
    assert round((t - stamp.sec) * 1e9) != stamp.nanosec  # the float alone loses the nanoseconds
    book = StampBook()
    book.add(t, stamp)
    assert book.take(t) == (1_795_380_088, 123_456_789)
    assert book.take(t) is None  # taken once


def test_capacity_evicts_the_oldest() -> None:
    book = StampBook(capacity=3)
    for i in range(5):
        book.add(float(i), NS(sec=i, nanosec=0))
    assert len(book) == 3
    assert book.take(0.0) is None and book.take(1.0) is None
    assert book.take(4.0) == (4, 0)
