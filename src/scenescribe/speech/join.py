"""Joining the file's words onto scenes by time."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from scenescribe.records import Scene, Transcript, Word


def assign_words(words: Iterable[Word], scenes: Sequence[Scene]) -> dict[int, Transcript]:
    """Each word goes to the scene whose half-open span holds its midpoint.

    O(n log m) for n words and m scenes (binary search over scene starts). Every scene given
    gets an entry, an empty ``Transcript`` when no word falls in it. A word whose midpoint lies
    in none of the given scenes (a gap, or a scene not in ``scenes`` because it is already
    done on a resumed run) is left out: it belongs to no scene asked for.
    """
    ordered = sorted(scenes, key=lambda s: s.start)
    starts = [s.start for s in ordered]
    buckets: dict[int, list[Word]] = {s.index: [] for s in ordered}
    for word in words:
        i = bisect.bisect_right(starts, word.midpoint) - 1
        if i >= 0 and ordered[i].contains(word.midpoint):
            buckets[ordered[i].index].append(word)
    return {index: Transcript.from_words(sorted(ws, key=lambda w: w.start))
            for index, ws in buckets.items()}
