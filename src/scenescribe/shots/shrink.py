"""Small RGB frames for the shot detectors, made from the decoder's I420 planes with OpenCV.

Every shot detector looks at frames far smaller than the video. FFmpeg's scaler converting the
whole frame to a small RGB one cost as much as decoding it (720p: 2.5 ms against 2.4 ms a
frame, one core); shrinking the three planes with OpenCV's area filter first and converting
the small result costs about half that. ``hsvcut`` reads the ``SMALL_WIDTH``-wide frame and
TransNetV2 shrinks the same frame again to its 48x27 input, so one decode feeds both for the
price of one shrink (``shared_decode``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SMALL_WIDTH = 256  # hsvcut's default ``downscale_width``; TransNetV2's input is made from it


def small_size(width: int, height: int, target: int) -> tuple[int, int]:
    """Even ``(w, h)`` no wider than ``target`` (0: unchanged), keeping the aspect ratio."""
    scale = min(1.0, target / width) if target else 1.0
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def planes_size(planes: np.ndarray) -> tuple[int, int]:
    """``(width, height)`` of the picture in I420 planes of shape ``(H * 3 / 2, W)``."""
    return planes.shape[1], planes.shape[0] * 2 // 3


def small_rgb(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB ``size`` (even ``(w, h)``) from I420 planes stacked as ``(H * 3 / 2, W)``."""
    w, h = planes_size(planes)
    chroma = planes[h:].reshape(2, h // 2, w // 2)
    return _small_rgb(planes[:h], chroma[0], chroma[1], size)


def frame_small_rgb(frame: Any, size: tuple[int, int]) -> np.ndarray:
    """``small_rgb`` of a decoded PyAV frame, read in place when it is I420 already (the
    stacked copy ``to_ndarray`` makes costs a fifth of the shrink); the same pixels."""
    if frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2:
        # as ``iter_frames(pixel_format="yuv420p")`` hands them over (yuvj420p converted too)
        return small_rgb(frame.to_ndarray(format="yuv420p"), size)
    y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
               for p in frame.planes)
    return _small_rgb(y, u, v, size)


def _small_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    sw, sh = size
    out = np.empty((sh * 3 // 2, sw), np.uint8)
    out[:sh] = area_shrink(y, (sw, sh))
    small_chroma = out[sh:].reshape(2, sh // 2, sw // 2)
    small_chroma[0] = area_shrink(u, (sw // 2, sh // 2))
    small_chroma[1] = area_shrink(v, (sw // 2, sh // 2))
    rgb: np.ndarray = cv2.cvtColor(out, cv2.COLOR_YUV2RGB_I420)
    return rgb


def area_shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` shrunk to ``size`` (w, h) by averaging the pixels each output pixel covers.

    Whole-number ratios whose blocks have an odd pixel count (720p to 256x144: 5x5) take a box
    filter read every ``k`` pixels, at half the cost of ``cv2.resize``'s area filter and with
    its very pixels: an odd block's mean is never halfway between two values, where the two
    round differently (even blocks, 2x2 say, go to ``cv2.resize``).
    """
    import cv2

    height, width = image.shape[:2]
    w, h = size
    if (w, h) == (width, height):
        return image
    kx, ky = width // w, height // h
    if width % w == 0 and height % h == 0 and kx * ky % 2:
        boxed = cv2.boxFilter(image, -1, (kx, ky), anchor=(0, 0), normalize=True,
                              borderType=cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(boxed[::ky, ::kx])
    shrunk: np.ndarray = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return shrunk


def shrink_upright(image: np.ndarray, size: tuple[int, int], rotation: int) -> np.ndarray:
    """``image`` (as decoded, not yet upright) area-shrunk so that, turned upright by
    ``rotation`` degrees clockwise, it is ``size`` (w, h); then turned upright."""
    w, h = size if rotation not in (90, 270) else (size[1], size[0])
    out = area_shrink(image, (w, h))
    if rotation:
        out = np.ascontiguousarray(np.rot90(out, k=-(rotation // 90)))
    return out
