"""`scalowatch bench audio`: registered on the ``bench`` sub-app by :func:`benchmarks.cli.register`."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from benchmarks.runinfo import REPO

DEFAULT_AUDIO = REPO / ".." / "shared" / "data" / "audio" / "mimii_fan_id00"


def register(bench_app: typer.Typer) -> None:
    bench_app.command("audio")(audio_command)


def audio_command(
    data: Path = typer.Option(DEFAULT_AUDIO, "--data", help="Folder with normal/*.wav and abnormal/*.wav."),
    out: Path = typer.Option(Path("benchmarks/out/audio"), "--out", help="clip_scores.csv, audio.json and plots go here."),
    scorer: Optional[list[str]] = typer.Option(
        None, "--scorer", help="scalowatch (the product detector, preset audio), or recon, trend, kl, dynamic, "
        "adversarial (the product with that scorer), or 'all' (repeatable); 'name:k=v,...' sets detector options "
        "(e.g. scalowatch:level_weight=0: no loudness channels). Each product run also reports the "
        "detector without its diffusion channel and the diffusion channel alone. The band_knn baseline always "
        "runs too. Default: scalowatch."),
    window: Optional[int] = typer.Option(
        None, "--window", min=64, help="Window length in samples (default: the audio preset's, with its hop; "
        "another window is scored every half window)."),
    train_steps: Optional[int] = typer.Option(None, "--train-steps", min=1,
                                              help="Detector training steps (default: the preset's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    copy_results: Optional[Path] = typer.Option(
        None, "--copy-results", help="Also copy audio.json, clip_scores.csv and the plot to this folder."),
    threads: int = typer.Option(
        0, "--threads", min=0, help="torch intra-op threads (0 = torch's default). On a CPU shared with other "
        "jobs, 1 is often several times faster: 2 threads wait on each other when cores are oversubscribed."),
    gain_normalise: bool = typer.Option(
        False, "--gain-normalise", help="Scale every clip to unit RMS first, so that no channel can tell clips "
        "apart by loudness."),
    via: str = typer.Option("detector", "--via", help="detector: score the stream with the detector directly; "
                            "monitor: replay the same stream (training clips, then the test clips) through the "
                            "monitor's processing path and score what it stores (the product only, no ablation)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Clip-level AUROC of scalogram scorers on machine audio (deterministic normal/abnormal split)."""
    from benchmarks.audio import (
        AudioBenchConfig, plot_audio, report_payload, resolve_detectors, run_audio, write_clip_scores,
    )
    from benchmarks.runinfo import finish_run, start_run, write_json
    from models.errors import InputError

    info, t0 = start_run()
    import torch

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        names = resolve_detectors(scorer)
        config = AudioBenchConfig(window=window, train_steps=train_steps,
                                  device=device, gain_normalise=gain_normalise)
        report = run_audio(data, names, config, progress=progress, via=via)
    except (InputError, FileNotFoundError, RuntimeError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    finally:
        torch.set_num_threads(previous_threads)  # in-process callers (tests) keep their own setting
    out = Path(out)
    csv_path = write_clip_scores(report, out / "clip_scores.csv")
    plots = [plot_audio(report, out / "plots" / "audio_roc.png")]
    finish_run(info, t0)
    json_path = write_json(out / "audio.json", report_payload(report, info.to_dict(), plots))
    if copy_results:
        dest = Path(copy_results)
        (dest / "plots").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(json_path, dest / "audio.json")
        shutil.copyfile(csv_path, dest / "clip_scores.csv")
        for p in plots:
            shutil.copyfile(p, dest / "plots" / p.name)
    line = " | ".join(f"{r.name} {r.auroc:.3f}" for r in report.runs)
    typer.echo(f"audio {report.data.name} ({len(report.split.test)} test clips, clip AUROC): {line} "
               f"[{info.wall_seconds:.0f}s] -> {json_path}")
