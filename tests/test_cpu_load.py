"""The CPUs' busy share that bench records (``cpu_load``): arithmetic on a fake /proc/stat, a
live sampler beside a busy thread, and no timeline where /proc/stat cannot be read."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from scenescribe.cpu_load import CpuSampler, read_cpu_times


def _stat(path: Path, user: int, idle: int, iowait: int = 0) -> None:
    """Written whole, then renamed over: a reader never sees half a file."""
    part = path.with_suffix(".part")
    part.write_text(f"cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4\nintr 5\n")
    part.replace(path)


def test_busy_and_total_ticks_leave_idle_and_io_wait_out(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    _stat(stat, user=300, idle=600, iowait=100)
    assert read_cpu_times(stat) == (300, 1000)
    stat.write_text("intr 1 2\n")
    assert read_cpu_times(stat) is None
    assert read_cpu_times(tmp_path / "missing") is None


def test_the_sampler_gives_each_intervals_busy_share(tmp_path: Path) -> None:
    """A fake /proc/stat advanced by 30 busy ticks of 40 per interval reads 0.75."""
    stat = tmp_path / "stat"
    _stat(stat, user=0, idle=0)
    ticks = {"user": 0, "idle": 0}
    stop = threading.Event()

    def advance() -> None:
        while not stop.wait(0.01):
            ticks["user"] += 3
            ticks["idle"] += 1
            _stat(stat, **ticks)

    writer = threading.Thread(target=advance)
    writer.start()
    try:
        with CpuSampler(interval=0.1, path=stat) as sampler:
            time.sleep(0.55)
    finally:
        stop.set()
        writer.join()
    shares = [share for _, share in sampler.samples]
    assert len(shares) >= 3
    assert all(share == pytest.approx(0.75) for share in shares)
    report = sampler.report()
    assert report["busy"] == [round(s, 3) for s in shares] and report["interval_s"] == 0.1


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux only")
def test_a_live_sampler_sees_a_busy_thread_and_counts_the_jobs_cpu() -> None:
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            sum(range(1000))

    with CpuSampler(interval=0.05) as sampler:
        worker = threading.Thread(target=spin)
        worker.start()
        time.sleep(0.4)
        done.set()
        worker.join()
    report = sampler.report()
    assert report["busy"] and max(report["busy"]) > 0
    assert report["job_cpu_s"] >= 0.1  # about 0.4 s of one spinning thread
    assert 0 < report["job_share"] <= 1.0


def test_no_timeline_where_proc_stat_is_missing(tmp_path: Path) -> None:
    with CpuSampler(interval=0.05, path=tmp_path / "missing") as sampler:
        time.sleep(0.12)
    report = sampler.report()
    assert report["busy"] == [] and report["cores"] >= 1
