"""The command line: parses, calls the library, shows progress and maps errors to exit codes.

Exit codes: 0 success, 1 a user error or a failed input (one line naming the file and the
reason), 2 bad usage.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from scenescribe.errors import ScenescribeError

app = typer.Typer(help="Turn videos into scene-by-scene structured text.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True)
out = Console()
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Report ``ScenescribeError`` as one line on stderr with exit code 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ScenescribeError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished work is kept; rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv).")]
ModelDir = Annotated[Path | None, typer.Option(
    "--model-dir", help="Folder of local model weights (default: $SCENESCRIBE_MODEL_DIR).")]


@app.command()
@user_errors
def run(
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders of videos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out"),
    config: Annotated[Path | None, typer.Option(help="TOML config file (CLI options win).")] = None,
    shots: Annotated[str | None, typer.Option(help="Shot detector backend.")] = None,
    min_scene_len: Annotated[float | None, typer.Option(help="Shortest scene, seconds.")] = None,
    max_scene_len: Annotated[float | None, typer.Option(
        help="Split scenes longer than this, seconds (0: never).")] = None,
    frame_size: Annotated[int | None, typer.Option(help="Short side of saved frames, px.")] = None,
    speech: Annotated[str | None, typer.Option(help="Speech backend (auto picks by device).")] = None,
    sounds: Annotated[str | None, typer.Option(help="Sound tagger backend.")] = None,
    objects: Annotated[str | None, typer.Option(help="Object tracker backend.")] = None,
    object_fps: Annotated[float | None, typer.Option(help="Frames per second for YOLO.")] = None,
    stages: Annotated[str | None, typer.Option(
        help="Stage 1 components, comma-separated: speech,sounds,objects ('none' for shots only).")
    ] = None,
    vlm: Annotated[list[str] | None, typer.Option(
        "--vlm", help="Captioning model (repeatable); NAME or NAME=/path/to/weights.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Caption length limit.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Caption instruction.")] = None,
    grounding: Annotated[bool | None, typer.Option(
        "--grounding/--no-grounding", help="Add transcript, objects and sounds to the prompt.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="VLM scenes per batch (0: auto).")] = None,
    dtype: Annotated[str | None, typer.Option(help="VLM dtype: auto, bfloat16, float16, float32.")
                     ] = None,
    quantization: Annotated[str | None, typer.Option(help="'nf4' for 4-bit (CUDA).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    model_dir: ModelDir = None,
    force: Annotated[bool, typer.Option(help="Recompute everything, ignoring cached results.")
                     ] = False,
    verbose: Verbose = 0,
) -> None:
    """Cut videos into scenes and describe each one; writes OUT/<video>/scenes.jsonl."""
    from scenescribe.cli_progress import RichProgress
    from scenescribe.options import RunOptions, load_config, merge, validate
    from scenescribe.pipeline import run as run_pipeline

    _logging(verbose)
    base = load_config(config) if config else RunOptions()
    stage_list = _parse_stages(stages)
    options = merge(base, {
        "shots": merge(base.shots, {"backend": shots, "min_scene_len": min_scene_len,
                                    "max_scene_len": max_scene_len}, "--shots"),
        "frames": merge(base.frames, {"short_side": frame_size}, "--frame-size"),
        "speech": merge(base.speech, {"backend": speech}, "--speech"),
        "sounds": merge(base.sounds, {"backend": sounds}, "--sounds"),
        "objects": merge(base.objects, {"backend": objects, "sample_fps": object_fps},
                         "--objects"),
        "captions": merge(base.captions, {
            "models": tuple(vlm) if vlm else None, "max_new_tokens": max_new_tokens,
            "prompt": prompt, "grounding": grounding, "batch_size": batch_size, "dtype": dtype,
            "quantization": quantization}, "--vlm"),
        "stages": stage_list, "device": device,
        "model_dir": str(model_dir) if model_dir else None,
    }, "command line")
    validate(options)
    with RichProgress(err) as progress:
        result = run_pipeline(videos, out, options, progress=progress, force=force)
    _print_summary(result)
    if result.failed or result.warnings:
        raise typer.Exit(1)


def _parse_stages(stages: str | None) -> tuple[str, ...] | None:
    """``"speech,sounds"`` to a tuple; ``"none"`` to no components; ``None`` keeps the default."""
    if stages is None:
        return None
    return tuple(s for s in (x.strip() for x in stages.split(",")) if s and s != "none")


def _print_summary(result: Any) -> None:
    for v in result.videos:
        if v.ok:
            total = sum(t.get("compute_s", 0.0) for t in v.timings.values())
            rtf = total / v.duration if v.duration else 0.0
            out.print(f"[green]ok[/green] {v.path}: {v.scenes} scenes, {v.duration:.1f} s of media "
                      f"in {total:.1f} s (RTF {rtf:.3f}) -> {v.out_dir}", highlight=False,
                      soft_wrap=True)
    for w in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    for v in result.failed:
        err.print(f"[red]failed:[/red] {v.error}", highlight=False, soft_wrap=True)
    if result.failed:
        err.print(f"{len(result.failed)} of {len(result.videos)} input(s) failed: "
                  + ", ".join(v.path for v in result.failed), highlight=False, soft_wrap=True)


@app.command()
@user_errors
def scenes(
    video: Annotated[Path, typer.Argument(help="A video file.")],
    shots: Annotated[str | None, typer.Option(help="Shot detector backend.")] = None,
    min_scene_len: Annotated[float | None, typer.Option(help="Shortest scene, seconds.")] = None,
    max_scene_len: Annotated[float | None, typer.Option(help="Split longer scenes, seconds.")
                             ] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Backend-specific threshold (default: the backend's tuned one).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    verbose: Verbose = 0,
) -> None:
    """Detect shots only and print them as a table (gradual transitions marked)."""
    _scenes(video, shots, min_scene_len, max_scene_len, threshold, device, verbose)


def _scenes(video: Path, shots: str | None, min_scene_len: float | None,
            max_scene_len: float | None, threshold: float | None, device: str,
            verbose: int) -> None:
    from scenescribe.cli_progress import RichProgress
    from scenescribe.options import ShotOptions, merge
    from scenescribe.pipeline import detect_scenes

    _logging(verbose)
    options = merge(ShotOptions(), {"backend": shots, "min_scene_len": min_scene_len,
                                    "max_scene_len": max_scene_len, "threshold": threshold},
                    "command line")
    with RichProgress(err) as progress:
        found = detect_scenes(video, options, device=device, progress=progress)
    table = Table(title=f"{video.name}: {len(found)} scenes")
    for col in ("#", "start", "end", "length", "frames", "begins with"):
        table.add_column(col, justify="right")
    for s in found:
        t = s.transition
        begins = "" if t is None else t.type if not t.gradual else (
            f"{t.type} {t.start_frame}-{t.end_frame - 1}")
        table.add_row(str(s.index), f"{s.start:.3f}", f"{s.end:.3f}", f"{s.duration:.2f}",
                      f"{s.start_frame}-{s.end_frame - 1}", begins)
    out.print(table)


def _scenes_fast(argv: list[str]) -> int:
    """``scenes`` parsed by argparse: typer's parameter handling imports pydantic (0.1 s of a
    2-second command on 2 cores). Same options as the typer command, which ``--help`` shows."""
    import argparse

    parser = argparse.ArgumentParser(prog="scenescribe scenes", add_help=False)
    parser.add_argument("video", type=Path)
    parser.add_argument("--shots")
    parser.add_argument("--min-scene-len", type=float)
    parser.add_argument("--max-scene-len", type=float)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--verbose", "-v", action="count", default=0)
    args = parser.parse_args(argv)
    user_errors(_scenes)(args.video, args.shots, args.min_scene_len, args.max_scene_len,
                         args.threshold, args.device, args.verbose)
    return 0


@app.command()
@user_errors
def models(model_dir: ModelDir = None) -> None:
    """List the registry: name, kind, checkpoint, and whether it can run here."""
    from scenescribe import registry

    table = Table(title="scenescribe models")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    for col in ("checkpoint", "installed", "where / how"):
        table.add_column(col, overflow="fold")
    colour = {"yes": "green", "hub": "yellow", "no": "red"}
    for entry in registry.entries():
        status, where = registry.is_available(entry, model_dir)
        table.add_row(entry.name, entry.kind, entry.checkpoint or "-",
                      f"[{colour[status]}]{status}[/{colour[status]}]", where)
    out.print(table)


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A video's output folder, or a run's --out.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json, jsonl, srt, vtt or html.")
                   ] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="File to write (one video only).")] = None,
    model: Annotated[str | None, typer.Option(help="Whose captions to use in SRT/VTT.")] = None,
) -> None:
    """Export records as one JSON document, JSONL, SRT, WebVTT or an HTML report."""
    from scenescribe.errors import ConfigError
    from scenescribe.exports import FORMATS, find_runs
    from scenescribe.exports import export as do_export

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    runs = find_runs(run_dir)
    if output is not None and len(runs) > 1:
        raise ConfigError(f"{run_dir}: holds {len(runs)} videos; --output needs a single one")
    for r in runs:
        out.print(str(do_export(r, fmt, output, model)), highlight=False)


@app.command()
@user_errors
def bench(
    videos: Annotated[list[Path], typer.Argument(help="Videos or folders (e.g. the W1 suite).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("bench"),
    vlm: Annotated[list[str] | None, typer.Option(
        "--vlm", help="Model to benchmark (repeatable); NAME or NAME=/path.")] = None,
    mode: Annotated[list[str] | None, typer.Option(
        help="scenescribe (batched) and/or reference (one scene per call).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Model the others are compared with.")
                        ] = None,
    max_scenes: Annotated[int, typer.Option(help="Scenes timed per video (0: all).")] = 0,
    reference_max_scenes: Annotated[int, typer.Option(
        help="Scenes timed per video in reference mode (0: as --max-scenes).")] = 0,
    stages: Annotated[str | None, typer.Option(
        help="Stage 1 components, comma-separated ('none' for shots only).")] = None,
    random_weights: Annotated[bool, typer.Option(
        help="Full-size architectures with random weights and a fixed output length.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Caption length limit.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Scenes per batch (0: auto).")] = 0,
    reference_speech: Annotated[bool, typer.Option(
        help="Also time speech transcribed scene by scene, as the reference did.")] = False,
    pool: Annotated[bool, typer.Option(
        help="Caption all videos' scenes as one stream (as `run` does); --no-pool times each "
             "video alone.")] = True,
    note: Annotated[str, typer.Option(help="Text printed under the report's title.")] = "",
    tag: Annotated[str, typer.Option(
        help="Label added to model names in rows (tells settings apart in merged reports).")] = "",
    config: Annotated[Path | None, typer.Option(help="TOML config for Stage 1 and VLMs.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    model_dir: ModelDir = None,
    verbose: Verbose = 0,
) -> None:
    """Measure RTF and s/scene per VLM and Stage 1 component; writes bench.json/.md/.png."""
    from scenescribe.bench import MODES, BenchOptions
    from scenescribe.bench import bench as run_bench
    from scenescribe.cli_progress import RichProgress
    from scenescribe.errors import ConfigError
    from scenescribe.options import RunOptions, load_config, merge

    _logging(verbose)
    modes = tuple(mode) if mode else MODES
    if set(modes) - set(MODES):
        raise ConfigError(f"--mode: choose from {', '.join(MODES)}")
    base = load_config(config) if config else RunOptions()
    fixed = max_new_tokens if random_weights else None
    captions = merge(base.captions, {
        "models": tuple(vlm or ()), "random_weights": random_weights,
        "max_new_tokens": max_new_tokens, "min_new_tokens": fixed, "batch_size": batch_size},
        "bench")
    stage_list = _parse_stages(stages)
    options = merge(base, {"captions": captions, "device": device, "stages": stage_list,
                           "model_dir": str(model_dir) if model_dir else None}, "bench")
    bench_options = BenchOptions(models=tuple(vlm or ()), modes=modes, baseline=baseline,
                                 max_scenes=max_scenes, reference_max_scenes=reference_max_scenes,
                                 reference_speech=reference_speech, pool=pool, note=note,
                                 tag=tag)
    with RichProgress(err) as progress:
        report = run_bench(videos, out, options, bench_options, progress=progress)
    from scenescribe.bench_report import to_markdown

    out.mkdir(parents=True, exist_ok=True)
    print(to_markdown(report))
    if report["failed_inputs"] or any(r.get("status") != "ok" for r in report["rows"]):
        raise typer.Exit(1)


def main() -> None:
    argv = sys.argv[1:]
    try:
        if argv[:1] == ["scenes"] and not {"--help", "-h"} & set(argv):
            sys.exit(_scenes_fast(argv[1:]))
        app()
    except SystemExit as exc:
        sys.exit(exc.code)
    except typer.Exit as exc:  # user_errors outside typer's runner
        sys.exit(exc.exit_code)
