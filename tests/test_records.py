"""Records: validation, round trips, older schema versions."""

from __future__ import annotations

import pytest

from scenescribe.records import (
    SCHEMA_VERSION,
    Caption,
    FrameRef,
    ObjectSummary,
    Scene,
    SceneRecord,
    SoundTag,
    Transcript,
    VideoInfo,
    Word,
)


def make_record() -> SceneRecord:
    words = (Word(0.1, 0.4, " Hello", 0.9), Word(0.5, 0.8, " world", 0.8))
    return SceneRecord(
        scene=Scene(0, 0.0, 4.0, 0, 100),
        transcript=Transcript.from_words(words),
        sounds=(SoundTag("Speech", 0.9),),
        objects=(ObjectSummary("person", 2, 3, 0.81),),
        frames=(FrameRef(0.0, "frames/scene00000_0.jpg"),),
        captions={"tiny": Caption("A test.", 3)},
    )


def test_scene_record_round_trip_keeps_contract_keys() -> None:
    record = make_record()
    d = record.to_dict()
    for key in ("index", "start", "end", "start_frame", "end_frame", "transcript", "sounds",
                "objects", "frames", "captions"):
        assert key in d
    assert d["schema"] == SCHEMA_VERSION
    assert d["transcript"]["text"] == "Hello world"
    assert SceneRecord.from_dict(d) == record


def test_reads_records_without_schema_field() -> None:
    legacy = {"index": 2, "start": 1.0, "end": 2.0, "start_frame": 25, "end_frame": 50,
              "transcript": {"text": "hi", "words": []}, "sounds": [], "objects": [],
              "frames": []}
    record = SceneRecord.from_dict(legacy)
    assert record.index == 2 and record.transcript.text == "hi" and record.captions == {}


def test_rejects_newer_schema() -> None:
    d = make_record().to_dict()
    d["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="newer"):
        SceneRecord.from_dict(d)


@pytest.mark.parametrize("start,end", [(-1.0, 2.0), (3.0, 2.0), (0.0, float("nan"))])
def test_scene_validates_span(start: float, end: float) -> None:
    with pytest.raises(ValueError):
        Scene(0, start, end, 0, 10)


def test_scene_is_half_open() -> None:
    scene = Scene(0, 1.0, 2.0, 25, 50)
    assert scene.contains(1.0) and not scene.contains(2.0)


def test_summary_is_labelled_apart_from_captions() -> None:
    record = SceneRecord(Scene(0, 0.0, 1.0, 0, 25), summary="Scene 1.")
    d = record.to_dict()
    assert d["summary"] == {"text": "Scene 1.", "source": "stage1-facts"}
    assert d["captions"] == {}
    assert SceneRecord.from_dict(d).summary == "Scene 1."


def test_video_info_round_trip() -> None:
    info = VideoInfo("a.mp4", 10, "mp4", 5.0, True, 320, 180, 25.0, 125)
    assert VideoInfo.from_dict(info.to_dict()) == info
    with pytest.raises(ValueError):
        VideoInfo("a.mp4", 10, "mp4", 0.0, True)


def test_errors_with_their_own_arguments_cross_process_boundaries() -> None:
    """Raised in a worker process (a process pool, a Ray task) and unpickled in the caller."""
    import pickle

    from scenescribe.errors import BackendUnavailableError, InputError

    for error in (InputError("/v/a.mp4", "file not found"),
                  BackendUnavailableError("yolov8n", "ultralytics", "objects")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert again.__dict__ == error.__dict__
