"""The watcher's own state: the cursor file and the backoff while the server or PACS is away.

The feed and the gateway are stand-ins here (a feed that cannot be reached a given number of
times); the real Orthanc and Triton are in ``tests/integration/test_pacs_watch.py``.
"""

from __future__ import annotations

import pytest
import requests

from aln.pacs.errors import PacsError
from aln.pacs.watch import Backoff, Cursor, Watcher


def test_the_cursor_is_written_atomically_and_checked(tmp_path):
    cursor = Cursor(tmp_path / "state" / "cursor")
    assert cursor.read() == 0
    cursor.save(17)
    cursor.save(18)
    assert cursor.read() == 18
    assert sorted(p.name for p in cursor.path.parent.iterdir()) == ["cursor"]  # no temp left
    cursor.path.write_text("seventeen")
    with pytest.raises(PacsError, match="holds 'seventeen', not a change number"):
        cursor.read()


def test_backoff_doubles_to_its_bound_and_starts_over_after_a_success():
    backoff = Backoff(2.0, 20.0)
    assert [backoff.failed() for _ in range(6)] == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    backoff.reset()
    assert backoff.failed() == 2.0
    with pytest.raises(ValueError, match="0 < first_s <= max_s"):
        Backoff(5.0, 1.0)


class AwayFeed:
    """A change feed that cannot be reached ``away`` times, then has nothing new."""

    def __init__(self, away: int) -> None:
        self.away, self.asked = away, 0

    def since(self, sequence, limit=100):
        self.asked += 1
        if self.asked <= self.away:
            raise requests.ConnectionError("connection refused")
        return [], sequence, True


def test_an_unreachable_pacs_is_waited_for_with_a_bounded_backoff(tmp_path):
    feed = AwayFeed(away=5)
    waits: list[float] = []
    watcher = Watcher(gateway=None, changes=feed, cursor=Cursor(tmp_path / "cursor"))
    watcher.run(
        poll_s=1.0, max_backoff_s=6.0, keep_going=lambda: len(waits) < 7, sleep=waits.append
    )
    # five failures in a row: 1, 2, 4, then the bound; then passes that work wait poll_s
    assert waits == [1.0, 2.0, 4.0, 6.0, 6.0, 1.0, 1.0]
    assert Cursor(tmp_path / "cursor").read() == 0  # nothing handled, nothing skipped
