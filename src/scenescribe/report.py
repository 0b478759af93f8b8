"""A static HTML report of one video's scenes: thumbnails, words, sounds, objects, captions."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scenescribe.records import SceneRecord
from scenescribe.summary import timestamp

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 8px}
.scene{display:flex;gap:1rem;border-top:1px solid #ddd;padding:1rem 0}
.scene img{height:120px;border-radius:4px}.meta{flex:1}.tag{background:#eef;border-radius:3px;
padding:1px 5px;margin:2px;display:inline-block;font-size:90%}.cap{margin:.3rem 0}
.summary{color:#666;font-style:italic}h1{font-size:1.4rem}
"""


def _timings_table(facts: dict[str, Any]) -> str:
    rows = []
    for stage, t in facts.get("timings", {}).items():
        rtf = t.get("rtf")
        rows.append(f"<tr><td>{html.escape(stage)}</td><td>{html.escape(str(t.get('backend', '')))}"
                    f"</td><td>{t.get('load_s') or 0:.2f}</td><td>{t.get('compute_s') or 0:.2f}</td>"
                    f"<td>{'' if rtf is None else f'{rtf:.4f}'}</td>"
                    f"<td>{'yes' if t.get('cached') else ''}</td></tr>")
    head = ("<tr><th>stage</th><th>backend</th><th>load s</th><th>compute s</th><th>RTF</th>"
            "<th>cached</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _scene_html(record: SceneRecord) -> str:
    s = record.scene
    imgs = "".join(f'<img src="{html.escape(f.path)}" alt="frame at {f.time:.2f} s">'
                   for f in record.frames)
    tags = "".join(f'<span class="tag">{html.escape(t.label)} {t.score:.2f}</span>'
                   for t in record.sounds)
    objs = "".join(f'<span class="tag">{html.escape(o.label)} ×{o.max_count}</span>'
                   for o in record.objects)
    caps = "".join(f'<p class="cap"><b>{html.escape(m)}</b>: {html.escape(c.text)}</p>'
                   for m, c in record.captions.items() if c.text)
    if not caps and record.summary:
        caps = f'<p class="summary">Summary (Stage 1 facts, no VLM): {html.escape(record.summary)}</p>'
    words = html.escape(record.transcript.text) or "<i>no speech</i>"
    return (f'<div class="scene" id="scene-{s.index}"><div>{imgs}</div><div class="meta">'
            f"<b>Scene {s.index + 1}</b> {timestamp(s.start)} – {timestamp(s.end)}"
            f"<p>{words}</p><div>{tags}</div><div>{objs}</div>{caps}</div></div>")


def to_html(run_dir: Path, records: Iterator[SceneRecord], facts: dict[str, Any]) -> Iterator[str]:
    video = facts.get("video", {})
    title = html.escape(Path(video.get("path") or run_dir.name).name)
    yield (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
           f"<style>{_STYLE}</style></head><body><h1>{title}</h1>")
    if video:
        yield (f"<p>{video.get('duration') or 0:.1f} s, {video.get('width')}x{video.get('height')}, "
               f"{video.get('fps') or 0:.2f} fps, {facts.get('scenes', '?')} scenes</p>")
    yield _timings_table(facts)
    for record in records:
        yield _scene_html(record)
    yield "</body></html>\n"
