"""``gpu_share``: captures and exclusive batches against the other threads' launches."""

from __future__ import annotations

import threading
import time

from scenescribe import gpu_share
from scenescribe.gpu_share import capturing, exclusive, launching


def test_a_capture_waits_for_running_launches_and_holds_new_ones() -> None:
    events: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def component() -> None:
        with launching():
            events.append("launch-start")
            inside.set()
            release.wait(5)
            events.append("launch-end")

    worker = threading.Thread(target=component)
    worker.start()
    inside.wait(5)

    def capture() -> None:
        with capturing():
            events.append("capture")
            time.sleep(0.05)
            events.append("capture-end")

    capturer = threading.Thread(target=capture)
    capturer.start()
    time.sleep(0.05)
    late = threading.Thread(target=lambda: (launching().__enter__(), events.append("late")))
    late.start()
    time.sleep(0.05)
    assert events == ["launch-start"]  # the capture waits; the late launch waits behind it
    release.set()
    for thread in (worker, capturer, late):
        thread.join(5)
    assert events == ["launch-start", "launch-end", "capture", "capture-end", "late"]


def test_a_capture_inside_a_launch_sets_its_own_hold_aside() -> None:
    """The caption thread captures inside its own batch's ``launching()``: no self-deadlock,
    and a second such thread does not deadlock with it."""
    done: list[int] = []

    def batch(i: int) -> None:
        with launching():
            time.sleep(0.02)
            with capturing():
                time.sleep(0.02)
            done.append(i)

    threads = [threading.Thread(target=batch, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sorted(done) == [0, 1]


def test_an_exclusive_batch_holds_launches_off_and_may_capture_inside() -> None:
    """Whisper's batch holds the GPU alone and captures its step graph inside that hold: no
    self-deadlock, and another thread's launch waits for the whole batch."""
    events: list[str] = []
    holding = threading.Event()

    def batch() -> None:
        with exclusive():
            holding.set()
            time.sleep(0.05)
            with capturing():
                events.append("capture")
            with launching():  # its own calls inside the hold go through, captures too
                events.append("own launch")
                with capturing():
                    pass
            time.sleep(0.05)
            events.append("batch-end")

    def other() -> None:
        holding.wait(5)
        with launching():
            events.append("other")

    threads = [threading.Thread(target=batch), threading.Thread(target=other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert events == ["capture", "own launch", "batch-end", "other"]
    assert gpu_share._SHARE._active == {False: 0, True: 0}  # nothing miscounted


def test_holds_beside_exclusive_go_on_beside_it_but_not_beside_a_capture() -> None:
    """A caption batch (held beside exclusive) neither waits for Whisper's exclusive batch nor holds it
    up; a capture still waits for the caption batch to end."""
    events: list[str] = []
    captioning = threading.Event()
    finish_caption = threading.Event()

    def caption_batch() -> None:
        with launching(beside_exclusive=True):
            events.append("caption")
            captioning.set()
            finish_caption.wait(5)
            events.append("caption-end")

    caption = threading.Thread(target=caption_batch)
    caption.start()
    captioning.wait(5)
    with exclusive():  # does not wait for the caption batch
        events.append("exclusive")
        with launching(beside_exclusive=True):
            events.append("own launch beside")
    capture_done = threading.Event()

    def capture() -> None:
        with capturing():
            events.append("capture")
        capture_done.set()

    capturer = threading.Thread(target=capture)
    capturer.start()
    assert not capture_done.wait(0.1)  # the capture waits for the caption batch
    finish_caption.set()
    for thread in (caption, capturer):
        thread.join(5)
    assert events == ["caption", "exclusive", "own launch beside", "caption-end", "capture"]


def test_an_exclusive_batch_waits_for_running_short_launches() -> None:
    events: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def component() -> None:
        with launching():
            inside.set()
            release.wait(5)
            events.append("launch-end")

    worker = threading.Thread(target=component)
    worker.start()
    inside.wait(5)
    def batch() -> None:
        with exclusive():
            events.append("held")

    holder = threading.Thread(target=batch)
    holder.start()
    time.sleep(0.05)
    assert events == []
    release.set()
    for thread in (worker, holder):
        thread.join(5)
    assert events == ["launch-end", "held"]
