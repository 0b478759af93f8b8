"""Media layer on PyAV: probing, frame decoding and audio decoding. Times come from timestamps."""

from scenescribe.media.audio import SAMPLE_RATE, decode_audio, iter_audio_blocks
from scenescribe.media.damage import DamagedSpan, damage_report
from scenescribe.media.frames import (
    SHOWN,
    TICK,
    FrameRequest,
    Pick,
    decode_pass,
    frames_at,
    iter_frames,
)
from scenescribe.media.probe import probe
from scenescribe.media.stream import DecodedFrame

__all__ = ["SAMPLE_RATE", "SHOWN", "TICK", "DamagedSpan", "DecodedFrame", "FrameRequest", "Pick",
           "damage_report", "decode_audio", "decode_pass", "frames_at",
           "iter_audio_blocks", "iter_frames", "probe"]
