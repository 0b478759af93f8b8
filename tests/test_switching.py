"""``switching.short_switches``: the interpreter's switch interval, shortened while held."""

from __future__ import annotations

import sys
import threading

import pytest

from scenescribe.switching import short_switches


@pytest.fixture(autouse=True)
def _restore_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCENESCRIBE_SWITCH_US", raising=False)
    sys.setswitchinterval(0.005)
    with short_switches():
        assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.05)


def test_shortened_while_held_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESCRIBE_SWITCH_US", "500")
    sys.setswitchinterval(0.005)
    with short_switches():
        assert sys.getswitchinterval() == pytest.approx(0.0005, rel=0.05)
        with short_switches():  # nested: still short, and the outer exit restores
            assert sys.getswitchinterval() == pytest.approx(0.0005, rel=0.05)
        assert sys.getswitchinterval() == pytest.approx(0.0005, rel=0.05)
    assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.05)


def test_threads_share_it_and_the_last_to_leave_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESCRIBE_SWITCH_US", "200")
    sys.setswitchinterval(0.005)
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with short_switches():
            entered.set()
            leave.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    assert entered.wait(10)
    with short_switches():
        assert sys.getswitchinterval() == pytest.approx(0.0002, rel=0.05)
    # This thread left first: the other still holds it.
    assert sys.getswitchinterval() == pytest.approx(0.0002, rel=0.05)
    leave.set()
    other.join(10)
    assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.05)


def test_never_lengthened_and_zero_leaves_it(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.setswitchinterval(0.0001)
    with short_switches():
        assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.05)
    monkeypatch.setenv("SCENESCRIBE_SWITCH_US", "0")
    sys.setswitchinterval(0.005)
    with short_switches():
        assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.05)
    assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.05)


def test_restored_when_the_body_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESCRIBE_SWITCH_US", "500")
    sys.setswitchinterval(0.005)
    with pytest.raises(ValueError), short_switches():
        raise ValueError("boom")
    assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.05)
