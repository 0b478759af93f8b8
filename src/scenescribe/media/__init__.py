"""Media layer on PyAV: probing, frame decoding and audio decoding. Times come from timestamps."""

from scenescribe.media.audio import SAMPLE_RATE, decode_audio, iter_audio_blocks
from scenescribe.media.frames import DecodedFrame, frames_at, iter_frames
from scenescribe.media.probe import probe

__all__ = ["SAMPLE_RATE", "DecodedFrame", "decode_audio", "frames_at", "iter_audio_blocks",
           "iter_frames", "probe"]
