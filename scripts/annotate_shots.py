"""Contact sheets for annotating shot boundaries by eye.

Three modes, all decoding with PyAV; frame numbers are 0-based in presentation order, the same
numbering the corpus ``.gt.json`` files use:

    # one row per candidate: frames n-2..n+2, candidate framed in red, 8 rows per PNG
    python scripts/annotate_shots.py sheets clip.mp4 --frames 113 449 625 --out /tmp/sheets
    # the whole clip, one frame every 8, known cuts framed, to find cuts no detector proposed
    python scripts/annotate_shots.py overview clip.mp4 --every 8 --cuts 113 449 --out /tmp/ov
    # every frame of a span, for a doubtful transition
    python scripts/annotate_shots.py strip clip.mp4 --start 3100 --end 3130 --out /tmp/strip.png
    # second pass over a finished .gt.json: frames n-1 | n for every hard cut, 5 cuts a row
    python scripts/annotate_shots.py cuts clip.mp4 --gt clip.gt.json --out /tmp/cuts

Under each frame: its number and the mean absolute RGB difference to the previous frame
(0-255, at thumbnail size), which shows where within a row the change happens.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
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
