"""The pipeline's resident memory against the participants it has done, as it runs.

A peak says how high memory went, not whether it keeps growing: "flat in N" needs the
memory of one run at several points of its progress. The progress comes from the lines
``ehrfetch run`` prints for operators (``batches 3/300, participants 3000/299974``), read
from the end of its log, so the bench needs nothing from inside the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PROGRESS = re.compile(rb"participants (\d+)/(\d+)")
_TAIL_BYTES = 65_536  # a progress line with pages of warnings after it is still found


@dataclass
class RssCurve:
    """(participants done, pipeline RSS in MB) each time the done count moves."""

    log: Path
    points: list[tuple[int, float]] = field(default_factory=list)
    _read_to: int = 0
    """Where the last read of the log ended: each look reads only what was added."""
    _done: int | None = None

    @property
    def running(self) -> bool:
        """The run has printed its first progress line: its batches have begun."""
        return self._done is not None

    def observe(self, rss_kib: int) -> None:
        """Read the log's latest progress line; record ``rss_kib`` if the count moved."""
        done = self._latest_done()
        if done is None or rss_kib <= 0:
            return
        if not self.points or self.points[-1][0] != done:
            self.points.append((done, round(rss_kib / 1024, 1)))

    def _latest_done(self) -> int | None:
        try:
            with self.log.open("rb") as fh:
                end = fh.seek(0, 2)
                # At most the last _TAIL_BYTES of what is new: the latest line is there.
                fh.seek(max(self._read_to, end - _TAIL_BYTES))
                added = fh.read()
        except OSError:
            return self._done
        self._read_to = end
        found = _PROGRESS.findall(added)
        if found:
            self._done = int(found[-1][0])
        return self._done


def at_shares(
    points: Sequence[Sequence[float]], shares: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 1.0)
) -> list[tuple[int, float]]:
    """The points nearest to these shares of the last count: the curve in a table row."""
    if not points:
        return []
    last = points[-1][0]
    chosen: list[tuple[int, float]] = []
    for share in shares:
        done, mb = min(points, key=lambda p: abs(p[0] - share * last))
        if not chosen or chosen[-1][0] != done:
            chosen.append((int(done), float(mb)))
    return chosen
