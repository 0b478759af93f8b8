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
from rich.markup import escape
from rich.table import Table

from scenescribe.errors import OptionError, ScenescribeError

app = typer.Typer(help="Turn videos into scene-by-scene structured text.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# emoji off: a path such as "a:smile:b.mp4" is printed as it is (markup is escaped per call).
err = Console(stderr=True, emoji=False)
out = Console(emoji=False)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Report ``ScenescribeError`` as one line on stderr with exit code 1 (2 for a bad option),
    no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OptionError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except ScenescribeError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished work is kept; rerun the same command to resume",
                      highlight=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv).")]
ModelDir = Annotated[Path | None, typer.Option(
    "--model-dir", help="Folder of local model weights (default: $SCENESCRIBE_MODEL_DIR).")]
ExecutorName = Annotated[str | None, typer.Option(
    "--executor", help="local (this process) or ray (scenescribe[ray]: every GPU of a host, or "
                       "a cluster).")]
Address = Annotated[str | None, typer.Option(
    "--address", help="Ray cluster to join (with --executor ray); default: start one here.")]


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
    executor: ExecutorName = None,
    address: Address = None,
    force: Annotated[bool, typer.Option(help="Recompute everything, ignoring cached results.")
                     ] = False,
    verbose: Verbose = 0,
) -> None:
    """Cut videos into scenes and describe each one; writes OUT/<video>/scenes.jsonl."""
    from scenescribe.cli_progress import RichProgress
    from scenescribe.options import RunOptions, check_output_folder, load_config, merge, validate
    from scenescribe.pipeline import run as run_pipeline

    _logging(verbose)
    base = load_config(config) if config else RunOptions()
    stage_list = _parse_stages(stages)
    options = merge(base, {
        "shots": merge(base.shots, {"backend": shots, "min_scene_len": min_scene_len,
                                    "max_scene_len": max_scene_len}, "command line"),
        "frames": merge(base.frames, {"short_side": frame_size}, "command line"),
        "speech": merge(base.speech, {"backend": speech}, "command line"),
        "sounds": merge(base.sounds, {"backend": sounds}, "command line"),
        "objects": merge(base.objects, {"backend": objects, "sample_fps": object_fps},
                         "command line"),
        "captions": merge(base.captions, {
            "models": tuple(vlm) if vlm else None, "max_new_tokens": max_new_tokens,
            "prompt": prompt, "grounding": grounding, "batch_size": batch_size, "dtype": dtype,
            "quantization": quantization}, "command line"),
        "stages": stage_list, "device": device,
        "model_dir": str(model_dir) if model_dir else None,
        "executor": executor, "address": address,
    }, "command line")
    validate(options)
    check_output_folder(out)
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
            out.print(f"[green]ok[/green] {escape(v.path)}: {v.scenes} scenes, "
                      f"{v.duration:.1f} s of media in {total:.1f} s (RTF {rtf:.3f}) -> "
                      f"{escape(str(v.out_dir))}", highlight=False, soft_wrap=True)
    for w in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(str(w))}", highlight=False, soft_wrap=True)
    _print_failures([(v.path, str(v.error)) for v in result.failed], len(result.videos))


def _print_failures(failed: list[tuple[str, str]], inputs: int) -> None:
    """One line per failed input (its error names the file and the reason), then the count."""
    for _, error in failed:
        err.print(f"[red]failed:[/red] {escape(error)}", highlight=False, soft_wrap=True)
    if failed:
        err.print(escape(f"{len(failed)} of {inputs} input(s) failed: "
                         + ", ".join(path for path, _ in failed)), highlight=False,
                  soft_wrap=True)


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
    table = Table(title=escape(f"{video.name}: {len(found)} scenes"))
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
    for col in ("checkpoint", "revision", "installed", "where / how"):
        table.add_column(col, overflow="fold")
    colour = {"yes": "green", "hub": "yellow", "no": "red"}
    for entry in registry.entries():
        status, where = registry.is_available(entry, model_dir)
        table.add_row(escape(entry.name), entry.kind, escape(entry.checkpoint or "-"),
                      escape(entry.pinned),
                      f"[{colour[status]}]{status}[/{colour[status]}]", escape(where))
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
    from scenescribe.exports import FORMATS, find_runs
    from scenescribe.exports import export as do_export

    if fmt not in FORMATS:
        raise OptionError(f"--format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
    runs = find_runs(run_dir)
    if output is not None and len(runs) > 1:
        raise OptionError(f"--output: expected a folder of one video, found {len(runs)} videos "
                          f"in {run_dir}")
    for r in runs:
        out.print(escape(str(do_export(r, fmt, output, model))), highlight=False)


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
    random_weights: Annotated[bool | None, typer.Option(
        "--random-weights/--no-random-weights",
        help="Full-size architectures with random weights and a fixed output length.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Caption length limit.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Scenes per batch (0: auto).")] = None,
    reference_speech: Annotated[bool, typer.Option(
        help="Also time speech transcribed scene by scene, as the reference did.")] = False,
    pool: Annotated[bool, typer.Option(
        help="Caption all videos' scenes as one stream (as `run` does); --no-pool times each "
             "video alone.")] = True,
    job_captions: Annotated[bool, typer.Option(
        help="The timed whole job includes the first --vlm's captions (--no-job-captions: "
             "Stage 1 only).")] = True,
    fresh: Annotated[bool, typer.Option(
        help="Recompute every stage of the job (cached stages make its clock no full job).")
                     ] = False,
    note: Annotated[str, typer.Option(help="Text printed under the report's title.")] = "",
    tag: Annotated[str, typer.Option(
        help="Label added to model names in rows (tells settings apart in merged reports).")] = "",
    config: Annotated[Path | None, typer.Option(help="TOML config for Stage 1 and VLMs.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    model_dir: ModelDir = None,
    executor: ExecutorName = None,
    address: Address = None,
    verbose: Verbose = 0,
) -> None:
    """Measure RTF and s/scene per VLM and Stage 1 component; writes bench.json/.md/.png."""
    from scenescribe.bench import MODES, BenchOptions, bench_run_options
    from scenescribe.bench import bench as run_bench
    from scenescribe.cli_progress import RichProgress
    from scenescribe.options import RunOptions, check_output_folder, load_config, merge, validate

    _logging(verbose)
    modes = tuple(mode) if mode else MODES
    if set(modes) - set(MODES):
        raise OptionError(f"--mode: expected {' or '.join(MODES)}, found {', '.join(modes)}")
    for flag, value in (("--max-scenes", max_scenes),
                        ("--reference-max-scenes", reference_max_scenes)):
        if value < 0:
            raise OptionError(f"{flag}: expected an integer >= 0 (0: all), found {value}")
    base = load_config(config) if config else RunOptions()
    # Only flags actually given override the config: CLI > config > defaults.
    options = bench_run_options(base, models=vlm, max_new_tokens=max_new_tokens,
                                batch_size=batch_size, random_weights=random_weights,
                                stages=_parse_stages(stages), device=device,
                                model_dir=str(model_dir) if model_dir else None)
    options = merge(options, {"executor": executor, "address": address}, "command line")
    validate(options)
    check_output_folder(out)
    bench_options = BenchOptions(models=options.captions.models, modes=modes, baseline=baseline,
                                 max_scenes=max_scenes, reference_max_scenes=reference_max_scenes,
                                 reference_speech=reference_speech, pool=pool, note=note,
                                 tag=tag, job_captions=job_captions, fresh=fresh)
    with RichProgress(err) as progress:
        report = run_bench(videos, out, options, bench_options, progress=progress)
    from scenescribe.bench_report import to_markdown

    out.mkdir(parents=True, exist_ok=True)
    print(to_markdown(report))
    failed = [(str(f["video"]), str(f["error"])) for f in report["failed_inputs"]]
    _print_failures(failed, len(failed) + len(report.get("stage1", ())))
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
