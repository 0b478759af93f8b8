"""cuDNN's attention is turned off for GPU decoding, only there, and only unless asked to keep it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scenescribe.attention import CUDNN_ENV, avoid_cudnn_attention

torch = pytest.importorskip("torch")


@pytest.fixture
def cudnn_flag() -> Iterator[None]:
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


def test_cpu_runs_leave_the_kernels_alone(cudnn_flag: None) -> None:
    assert avoid_cudnn_attention("cpu") is False
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_gpu_runs_turn_cudnn_attention_off(cudnn_flag: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CUDNN_ENV, raising=False)
    assert avoid_cudnn_attention("cuda:0") is True
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled()


def test_the_environment_keeps_torchs_choice(cudnn_flag: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUDNN_ENV, "1")
    assert avoid_cudnn_attention("cuda") is False
    assert torch.backends.cuda.cudnn_sdp_enabled()
