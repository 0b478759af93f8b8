"""Plain scene summaries from Stage 1 facts, for runs without a vision-language model.

These are labelled ``stage1-facts`` in the records and never presented as a model's caption.
"""

from __future__ import annotations

from scenescribe.records import ObjectSummary, SceneRecord

MAX_QUOTE_CHARS = 160


def timestamp(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:05.2f}" if hours else f"{minutes}:{secs:05.2f}"


def _objects_phrase(objects: tuple[ObjectSummary, ...]) -> str:
    parts = [f"{o.max_count} {o.label}" + ("s" if o.max_count > 1 and not o.label.endswith("s")
                                          else "") for o in objects[:5]]
    return ", ".join(parts)


def summarize(record: SceneRecord) -> str:
    """One sentence per kind of fact the scene has; 'No speech, sounds or objects' when none."""
    scene = record.scene
    parts = [f"Scene {scene.index + 1} ({timestamp(scene.start)}-{timestamp(scene.end)})."]
    text = record.transcript.text.strip()
    if text:
        quote = text if len(text) <= MAX_QUOTE_CHARS else text[:MAX_QUOTE_CHARS - 1] + "…"
        parts.append(f'Speech: "{quote}"')
    if record.objects:
        parts.append(f"Seen: {_objects_phrase(record.objects)}.")
    if record.sounds:
        parts.append("Heard: " + ", ".join(s.label for s in record.sounds[:3]) + ".")
    if len(parts) == 1:
        parts.append("No speech, sounds or objects detected.")
    return " ".join(parts)
