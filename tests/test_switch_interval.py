"""``switch_interval.short_switches``: the process's switch interval is short while any load
runs, and the interval from before is back once the last overlapping one ends."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scenescribe.switch_interval import short_switches
from test_backend_load import Timed, _load_together


@pytest.fixture(autouse=True)
def interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(before)


def test_overlapping_holders_from_threads_restore_the_interval_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCENESCRIBE_LOAD_SWITCH_US", raising=False)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, float] = {}

    def first() -> None:
        with short_switches():
            first_in.set()
            assert second_in.wait(5)
        first_out.set()

    def second() -> None:
        assert first_in.wait(5)
        with short_switches():
            second_in.set()
            assert first_out.wait(5)
            seen["after the first left"] = sys.getswitchinterval()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen["after the first left"] == pytest.approx(0.0005)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_the_knob_sets_the_interval_and_zero_leaves_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESCRIBE_LOAD_SWITCH_US", "100")
    with short_switches():
        assert sys.getswitchinterval() == pytest.approx(0.0001)
    monkeypatch.setenv("SCENESCRIBE_LOAD_SWITCH_US", "0")
    with short_switches():
        assert sys.getswitchinterval() == pytest.approx(0.005)
    monkeypatch.setenv("SCENESCRIBE_LOAD_SWITCH_US", "20000")  # never longer than it was
    with short_switches():
        assert sys.getswitchinterval() == pytest.approx(0.005)
    assert sys.getswitchinterval() == pytest.approx(0.005)


class Watching(Timed):
    """Notes the switch interval its imports and its load ran under."""

    def _imports(self) -> None:
        self.spans["interval_imports"] = (sys.getswitchinterval(), 0.0)
        super()._imports()

    def _load(self) -> Any:
        self.spans["interval_load"] = (sys.getswitchinterval(), 0.0)
        return super()._load()


def test_a_backend_loads_under_short_switches_and_puts_the_interval_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCENESCRIBE_LOAD_SWITCH_US", raising=False)
    a, b = Watching("a", ("json",), side_by_side=True), Watching("b", ("json",))
    assert not _load_together(a, b)
    for backend in (a, b):
        assert backend.spans["interval_imports"][0] == pytest.approx(0.0005)
        assert backend.spans["interval_load"][0] == pytest.approx(0.0005)
    time.sleep(0.01)
    assert sys.getswitchinterval() == pytest.approx(0.005)
