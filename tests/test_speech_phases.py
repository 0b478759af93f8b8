"""``phases.PhaseClock``: seconds, CPU seconds and context switches per phase."""

from __future__ import annotations

import sys
import time

import pytest

from scenescribe.phases import PhaseClock


def test_waiting_and_working_phases_are_told_apart() -> None:
    clock = PhaseClock()
    with clock.phase("sleep"):
        time.sleep(0.2)
    with clock.phase("work"):  # until this thread has had 0.2 s of CPU, however loaded
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass
    waited = []
    with clock.phase("sleep", wait=lambda: waited.append(True)):  # sums over entries
        time.sleep(0.05)
    got = clock.seconds()
    assert waited == [True]
    assert got["sleep_s"] >= 0.25 and got["sleep_cpu_s"] < 0.1
    assert got["work_s"] >= 0.2 and got["work_cpu_s"] >= 0.15  # ticks: a little under 0.2
    if sys.platform.startswith("linux"):  # a sleep gives the CPU up
        assert got["sleep_blocked"] >= 2
    assert set(got) == {f"{n}_{k}" for n in ("sleep", "work")
                        for k in ("s", "cpu_s", "blocked", "preempted")}


def test_the_bench_sums_every_speech_phase_figure() -> None:
    from scenescribe.bench import SPLIT_DETAILS

    for phase in ("encode", "decode", "align", "dtw", "words"):
        for part in ("_s", "_cpu_s", "_blocked", "_preempted"):
            assert f"{phase}{part}" in SPLIT_DETAILS


@pytest.mark.slow
def test_whisper_reports_its_phases() -> None:
    from conftest import media
    from scenescribe import registry
    from scenescribe.media import decode_audio
    from scenescribe.options import SpeechOptions

    recognizer = registry.create("whisper-tiny.en", "speech", options=SpeechOptions(),
                                 device="cpu", model_dir=registry.model_dir_from_env())
    recognizer.decode([(0.0, decode_audio(media("real/grid/bbaf2n.mpg")))])
    got = recognizer.phase_seconds()
    for phase in ("encode", "decode", "align", "dtw", "words"):
        # CPU seconds are counted in scheduler ticks: a short phase may show more than its wall
        assert min(got[f"{phase}{part}"] for part in ("_s", "_cpu_s", "_blocked",
                                                        "_preempted")) >= 0
    assert got["decode_s"] > 0 and got["decode_cpu_s"] > 0
    recognizer.unload()
