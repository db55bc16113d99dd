"""`scalowatch bench mvtec`: registered on the ``bench`` sub-app by :func:`benchmarks.cli.register`."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from benchmarks.runinfo import REPO

DEFAULT_MVTEC = REPO / ".." / "shared" / "data" / "mvtec" / "bottle"


def register(bench_app: typer.Typer) -> None:
    bench_app.command("mvtec")(mvtec_command)


def mvtec_command(
    data: Path = typer.Option(DEFAULT_MVTEC, "--data", help="One MVTec AD category folder (train/, test/, ground_truth/)."),
    out: Path = typer.Option(Path("benchmarks/out/mvtec"), "--out", help="scores.csv, maps/, mvtec.json and plots go here."),
    scorer: Optional[list[str]] = typer.Option(
        None, "--scorer", help="scalowatch, patchcore, recon, trend, kl, dynamic, adversarial or 'all' (repeatable). "
        "Default: scalowatch (the product's image detector, as `scalowatch train`/`score` run it on an image "
        "folder) and patchcore."
    ),
    ablate: bool = typer.Option(False, "--ablate", help="Also score the product without its diffusion channel and "
                                "the diffusion channel alone, from the same fit (rows without_diffusion, "
                                "diffusion_only)."),
    image_size: int = typer.Option(224, "--image-size", min=32, help="Square side images are resized to."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    train_steps: Optional[int] = typer.Option(None, "--train-steps", min=1, help="U-Net training steps of the "
                                              "product's diffusion channel and the diffusion scorers (default: "
                                              "each one's own, the product's as `scalowatch train` runs it)."),
    no_fusion: bool = typer.Option(False, "--no-fusion", help="Skip the <diffusion>+knn fused variants."),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", min=2, help="Only the first N training images (smoke runs)."),
    test_limit: Optional[int] = typer.Option(None, "--test-limit", min=1, help="Only the first N test images per type (smoke runs)."),
    copy_results: Optional[Path] = typer.Option(
        None, "--copy-results", help="Also copy mvtec.json and the plots (not the maps) to this folder."),
    threads: int = typer.Option(
        0, "--threads", min=0, help="torch intra-op threads (0 = torch's default). On a CPU shared with other "
        "jobs, 1 is often several times faster: 2 threads wait on each other when cores are oversubscribed."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train on train/good, score test/*: image AUROC, pixel AUROC and PRO per scorer, maps and plots."""
    from benchmarks.mvtec import MVTecBenchConfig, report_payload, resolve_scorers, run_mvtec, write_scores_and_maps
    from benchmarks.mvtec_plots import plot_overlays, plot_roc
    from benchmarks.runinfo import finish_run, start_run, write_json
    from models.errors import InputError

    info, t0 = start_run()
    import torch

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        names = resolve_scorers(scorer)
        config = MVTecBenchConfig(image_size=image_size, device=device, train_steps=train_steps,
                                  fusion=not no_fusion, train_limit=train_limit, test_limit_per_type=test_limit,
                                  ablate=ablate)
        report = run_mvtec(data, names, config, progress=progress)
    except (InputError, FileNotFoundError, RuntimeError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    finally:
        torch.set_num_threads(previous_threads)  # in-process callers (tests) keep their own setting
    out = Path(out)
    write_scores_and_maps(report, out)
    plots = [plot_roc(report, out / "plots" / "mvtec_roc.png"),
             plot_overlays(report, out / "plots" / "mvtec_overlays.png")]
    finish_run(info, t0)
    payload = report_payload(report, info.to_dict(), plots)
    json_path = write_json(out / "mvtec.json", payload)
    if copy_results:
        dest = Path(copy_results)
        (dest / "plots").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(json_path, dest / "mvtec.json")
        for p in plots:
            shutil.copyfile(p, dest / "plots" / p.name)
    line = " | ".join(
        f"{r.name} {r.metrics['image_auroc']:.3f}/{r.metrics.get('pixel_auroc', float('nan')):.3f}/"
        f"{r.metrics.get('pro', float('nan')):.3f}" for r in report.runs
    )
    typer.echo(f"MVTec {report.category} (I-AUROC/P-AUROC/PRO): {line} [{info.wall_seconds:.0f}s] -> {json_path}")
