"""`scalowatch bench ...`: benchmark commands (NAB, UCR; MVTec and audio are added beside them).

Adding a command: write a module with ``register(bench_app: typer.Typer)`` that decorates its commands
with ``@bench_app.command("name")`` and list it in ``EXTRA_COMMAND_MODULES`` below (it is imported only
if present). Each command prints a tqdm bar, ends with one summary line, and saves a JSON with the run
metadata (benchmarks/runinfo.py) and PNG plots.
"""
from __future__ import annotations

import importlib
import importlib.util
import shutil
from pathlib import Path
from typing import Optional

import typer

from benchmarks.runinfo import REPO

bench_app = typer.Typer(
    name="bench",
    help="Run benchmarks (NAB, UCR, ...) and write scored results, run metadata and plots.",
    no_args_is_help=True,
)

EXTRA_COMMAND_MODULES: tuple[str, ...] = ("benchmarks.cli_mvtec", "benchmarks.cli_audio")

DEFAULT_NAB = REPO / ".." / "shared" / "data" / "nab"
DEFAULT_UCR = REPO / ".." / "shared" / "data" / "ucr"


def register(app: typer.Typer) -> None:
    """Add the ``bench`` sub-app (and any extra benchmark command modules) to the main app."""
    for mod in EXTRA_COMMAND_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod).register(bench_app)
    app.add_typer(bench_app, name="bench")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _jobs(jobs: int, info) -> int:
    """The worker count (0: one per core), recorded in the run's metadata."""
    from benchmarks.parallel import default_jobs

    jobs = jobs or default_jobs()
    info.extra.update(jobs=jobs, threads_per_file=1)
    return jobs


def _specs(names: Optional[list[str]], default: tuple[str, ...], defaults: dict):
    from benchmarks.detectors import parse_spec

    specs = [parse_spec(n, defaults) for n in (names or list(default))]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        _fail(f"duplicate detectors: {labels}")
    return specs


@bench_app.command("nab")
def nab_command(
    data: Path = typer.Option(DEFAULT_NAB, "--data", help="NAB checkout (data/, labels/, config/)."),
    out: Path = typer.Option(Path("benchmarks/out/nab"), "--out", help="Result files, nab.json and plots go here."),
    scorer: Optional[list[str]] = typer.Option(
        None, "--scorer", help="Detector name (repeatable; 'name:k=v,...' for options). Default: the product "
        "('scalowatch', preset nab) and the baselines."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N files (smoke runs; not a NAB score)."),
    via: str = typer.Option("detector", "--via", help="detector: score each file with the detector directly; "
                            "monitor: replay every file through the monitor's processing path into the embedded "
                            "store and score the stored points (and the monitor's alerts, as '<label>-alerts')."),
    ablate: bool = typer.Option(False, "--ablate", help="Also score the product detector without its diffusion "
                                "channel and the diffusion channel alone, from the same run (result folders "
                                "product/, without_diffusion/, diffusion_only/)."),
    copy_json: Optional[Path] = typer.Option(None, "--copy-json", help="Also write nab.json to this path."),
    plots_dir: Optional[Path] = typer.Option(None, "--plots-dir", help="Plot folder (default OUT/plots)."),
    jobs: int = typer.Option(0, "--jobs", min=0, help="Files fitted side by side, one thread each (0 = one "
                             "per core; --via monitor: monitors side by side, each replaying its share of the "
                             "files). Any value gives the same figures."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score detectors on the NAB corpus (NAB-format results + standard / low-FP / low-FN scores)."""
    from benchmarks.nab import NAB_DEFAULT_DETECTORS, NAB_DETECTOR_DEFAULTS, PROFILES, run_nab
    from benchmarks.nab_files import NabCorpus
    from benchmarks.plots import plot_nab_per_file, plot_scoreboard
    from benchmarks.runinfo import finish_run, start_run, write_json
    from models.errors import InputError

    info, t0 = start_run()
    jobs = _jobs(jobs, info)
    try:
        only_product = via == "monitor" or ablate
        specs = _specs(scorer, ("scalowatch",) if only_product else NAB_DEFAULT_DETECTORS, NAB_DETECTOR_DEFAULTS)
        corpus = NabCorpus(Path(data))
        corpus.check()
        keys = corpus.keys()[:limit] if limit else None
        report = run_nab(corpus, out, specs, keys=keys, progress=progress, via=via, ablate=ablate, jobs=jobs)
    except InputError as exc:
        _fail(str(exc))
        return
    finish_run(info, t0)
    plots = Path(plots_dir) if plots_dir else out / "plots"
    table = report.table()
    per_file = {
        d.label: {f.key: f.raw_score for f in d.results["standard"].files}
        for d in report.detectors
        if "standard" in d.results
    }
    pngs = [
        plot_scoreboard(table, plots / "nab_scoreboard.png", f"NAB scores ({len(report.files)} files)"),
        plot_nab_per_file(per_file, plots / "nab_per_file.png"),
    ]
    payload = {
        "benchmark": "nab",
        "via": via,
        "ablate": ablate,
        "run": info.to_dict(),
        "protocol": {
            "training": "fit on the probationary part only: min(floor(0.15 n), 750) rows (NAB's definition)",
            "scoring": "causal per-point scores; raw scores calibrated online by AnomalyLikelihood "
            "(learning period = probation); NAB thresholds optimised per profile over the corpus",
            "online_detectors": "names without the _train suffix keep updating their statistics from past "
            "points (as NAB's own baselines do); *_train variants stop learning after the probationary part",
        },
        "data": str(Path(data).resolve()),
        "n_files": len(report.files),
        "complete_corpus": limit is None,
        "scores": {label: {p: round(v, 3) for p, v in row.items()} for label, row in table.items()},
        "detectors": [d.summary() for d in report.detectors],
        "results_dir": str(Path(out).resolve()),
        "plots": [str(p) for p in pngs],
    }
    json_path = write_json(Path(out) / "nab.json", payload)
    if copy_json:
        Path(copy_json).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(json_path, copy_json)
    line = " | ".join(
        f"{label} " + "/".join(f"{row[p]:.1f}" for p in PROFILES if p in row) for label, row in table.items()
    )
    typer.echo(f"NAB ({len(report.files)} files, standard/lowFP/lowFN): {line} [{info.wall_seconds:.0f}s] -> {json_path}")


@bench_app.command("ucr")
def ucr_command(
    data: Path = typer.Option(DEFAULT_UCR, "--data", help="Folder of NNN_UCR_Anomaly_*.txt(.gz) files."),
    out: Path = typer.Option(Path("benchmarks/out/ucr"), "--out", help="predictions.json, ucr.json and plots."),
    scorer: Optional[list[str]] = typer.Option(
        None, "--scorer", help="Detector name (repeatable; 'name:k=v,...' for options). Default: the product "
                                 "('scalowatch', preset ucr) and the baselines."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N files."),
    via: str = typer.Option("detector", "--via", help="detector: score each series with the detector directly; "
                            "monitor: replay every series through the monitor's processing path and predict from "
                            "the stored points (product detectors only)."),
    ablate: bool = typer.Option(False, "--ablate", help="Rows product / without_diffusion / diffusion_only of the "
                                "product detector, from the same fits (predictions.json has one entry each)."),
    examples: int = typer.Option(4, "--examples", min=0, help="How many series to plot with their scores."),
    copy_json: Optional[Path] = typer.Option(None, "--copy-json", help="Also write ucr.json to this path."),
    plots_dir: Optional[Path] = typer.Option(None, "--plots-dir", help="Plot folder (default OUT/plots)."),
    jobs: int = typer.Option(0, "--jobs", min=0, help="Files fitted side by side, one thread each (0 = one "
                             "per core; --via monitor: monitors side by side, each replaying its share of the "
                             "files). Any value gives the same figures."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Predict one anomaly location per UCR series and report the archive's accuracy."""
    from benchmarks.plots import plot_accuracy_bars, plot_series_scores
    from benchmarks.runinfo import finish_run, start_run, write_json
    from benchmarks.ucr import (
        INDEX_FRAME, UCR_DEFAULT_DETECTORS, UCR_DETECTOR_DEFAULTS, find_ucr_files, load_ucr_series, run_ucr,
    )
    from models.errors import InputError
    from models.metrics.ucr import parse_ucr_name

    info, t0 = start_run()
    jobs = _jobs(jobs, info)
    try:
        only_product = via == "monitor" or ablate
        specs = _specs(scorer, ("scalowatch",) if only_product else UCR_DEFAULT_DETECTORS, UCR_DETECTOR_DEFAULTS)
        files = find_ucr_files(Path(data))
        if limit:
            files = files[:limit]
        example_stems = [parse_ucr_name(p.name).stem for p in files[:: max(1, len(files) // max(examples, 1))]][:examples]
        report = run_ucr(files, specs, progress=progress, keep_scores_for=example_stems, via=via, ablate=ablate,
                         jobs=jobs)
    except InputError as exc:
        _fail(str(exc))
        return
    finish_run(info, t0)
    out = Path(out)
    plots = Path(plots_dir) if plots_dir else out / "plots"
    predictions = {
        "index_frame": INDEX_FRAME,
        "predictions": {d.label: d.predictions for d in report.detectors},
    }
    write_json(out / "predictions.json", predictions)
    acc_table = {d.label: d.accuracy.to_dict() for d in report.detectors}
    pngs = [plot_accuracy_bars(acc_table, plots / "ucr_accuracy.png", f"UCR accuracy ({len(report.files)} series)")]
    by_stem = {s.stem: (s, p) for s, p in zip(report.files, files)}
    for stem, scores in report.example_scores.items():
        spec, path = by_stem[stem]
        values = load_ucr_series(path)
        preds = {d.label: d.predictions[path.name] for d in report.detectors}
        pngs.append(
            plot_series_scores(values, scores, plots / f"ucr_{spec.number:03d}.png", stem, spec.train_end,
                               (spec.begin, spec.end), preds)
        )
    payload = {
        "benchmark": "ucr",
        "via": via,
        "ablate": ablate,
        "run": info.to_dict(),
        "protocol": {
            "training": "fit on [0, trainEnd) only; detectors named *_train never learn after it",
            "prediction": "argmax of causal scores after trainEnd, minus the detector's lag",
            "index_frame": INDEX_FRAME,
        },
        "data": str(Path(data).resolve()),
        "n_series": len(report.files),
        "accuracy": acc_table,
        "detectors": [
            {
                "detector": {**d.spec.to_dict(), "label": d.label},
                "seconds": round(d.seconds, 2),
                "hits": d.hits,
                "predictions": d.predictions,
            }
            for d in report.detectors
        ],
        "series": [
            {"file": name, "train_end": s.train_end, "begin": s.begin, "end": s.end}
            for name, s in zip(report.names, report.files)
        ],
        "plots": [str(p) for p in pngs],
    }
    json_path = write_json(out / "ucr.json", payload)
    if copy_json:
        Path(copy_json).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(json_path, copy_json)
    line = " | ".join(
        f"{label} {row['accuracy']:.3f} (±100 {row['accuracy_pm100']:.3f})" for label, row in acc_table.items()
    )
    typer.echo(f"UCR ({len(report.files)} series, accuracy): {line} [{info.wall_seconds:.0f}s] -> {json_path}")


@bench_app.command("testbed")
def testbed_command(
    data: Path = typer.Option(..., "--data", help="Folder of test-bed logs: .csv(.gz) files, a time column and one "
                              "column per sensor (SKAB's layout), searched recursively."),
    label_column: list[str] = typer.Option(..., "--label-column", help="Column flagging anomalous rows (non-zero, "
                                           "or a word other than normal/ok/false/no); repeatable. SKAB: --label-column "
                                           "anomaly --skip-column changepoint (a changepoint column replayed as a "
                                           "sensor would leak the labels into the scores)."),
    skip_column: Optional[list[str]] = typer.Option(None, "--skip-column", help="Column that is neither a sensor "
                                                    "nor a label (repeatable)."),
    out: Path = typer.Option(Path("benchmarks/out/testbed"), "--out", help="testbed.json, plots and one row file "
                             "per detector and log (OUT/<label>/<log>.csv: time, label, in_training, score, "
                             "alert) go here; files below OUT are not read as logs."),
    scorer: Optional[list[str]] = typer.Option(
        None, "--scorer", help="Detector name (repeatable; 'name:k=v,...' for options). Default: the product "
        "('scalowatch', preset rig) and the windowed-Gaussian baseline."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N files (smoke runs)."),
    via: str = typer.Option("detector", "--via", help="detector: score each sensor with the detector directly; "
                            "monitor: replay every log through the monitor's processing path (one stream per "
                            "sensor) and use the stored scores and alerts."),
    ablate: bool = typer.Option(False, "--ablate", help="Rows product / without_diffusion / diffusion_only of the "
                                "product detector, from the same fits."),
    examples: int = typer.Option(4, "--examples", min=0, help="How many logs to plot: sensors, labelled rows, "
                                 "each detector's rig score and alerts."),
    copy_json: Optional[Path] = typer.Option(None, "--copy-json", help="Also write testbed.json to this path."),
    plots_dir: Optional[Path] = typer.Option(None, "--plots-dir", help="Plot folder (default OUT/plots)."),
    jobs: int = typer.Option(0, "--jobs", min=0, help="Sensors fitted side by side, one thread each (0 = one "
                             "per core; --via monitor: monitors side by side, each replaying its share of the "
                             "sensors). Any value gives the same figures."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score a test bed's logs, each sensor a stream, the rig judged by its highest sensor (benchmarks/testbed.py)."""
    import numpy as np

    from benchmarks.plots import plot_accuracy_bars, plot_rig
    from benchmarks.runinfo import finish_run, start_run, write_json
    from benchmarks.testbed import (
        TESTBED_DEFAULT_DETECTORS, TESTBED_DETECTOR_DEFAULTS, find_testbed_files, load_testbed, run_testbed, write_rows,
    )
    from models.errors import InputError

    info, t0 = start_run()
    jobs = _jobs(jobs, info)
    try:
        only_product = via == "monitor" or ablate
        specs = _specs(scorer, ("scalowatch",) if only_product else TESTBED_DEFAULT_DETECTORS,
                       TESTBED_DETECTOR_DEFAULTS)
        found = find_testbed_files(Path(data), exclude=Path(out))
        files = load_testbed(found, Path(data), label_column, skip_column or (), limit=limit)
        report = run_testbed(files, specs, ablate=ablate, via=via, progress=progress, jobs=jobs)
    except InputError as exc:
        _fail(str(exc))
        return
    finish_run(info, t0)
    out = Path(out)
    for label, rigs in report.rigs.items():
        for f, rig in zip(files, rigs):
            write_rows(out / label / f"{f.name}.csv", f, rig)
    plots = Path(plots_dir) if plots_dir else out / "plots"
    table = {label: m.to_dict() for label, m in report.results.items()}
    bars = {label: {k: (row[k] if row[k] is not None else float("nan")) for k in ("roc_auc", "f1", "event_recall")}
            for label, row in table.items()}
    pngs = [plot_accuracy_bars(bars, plots / "testbed.png", f"test bed ({len(files)} logs): ROC AUC, F1 and "
                               "labelled runs alerted", keys=("roc_auc", "f1", "event_recall"))]
    for k in np.linspace(0, len(files) - 1, min(examples, len(files))).round().astype(int) if files else []:
        f = files[int(k)]
        pngs.append(plot_rig(f.times_ns, {s.stream.rsplit("/", 1)[-1]: (s.times_ns, s.values) for s in f.sensors},
                             f.flagged, f.train_rows,
                             {label: (rigs[int(k)].scores, rigs[int(k)].alerts) for label, rigs in report.rigs.items()},
                             plots / f"rig_{f.name.replace('/', '_')}.png", f.name))
    payload = {
        "benchmark": "testbed",
        "via": via,
        "ablate": ablate,
        "run": info.to_dict(),
        "protocol": {
            "streams": "one per sensor column, named <log path below --data>/<column> (as `scalowatch replay "
                       "FILE --stream <log path> --label-column ...` sends them)",
            "training": "each file's leading rows: min(floor(0.15 n), 750), never reaching its first labelled row",
            "rig": "row score = the highest sensor score; a row alerts while any sensor's alert is open (the "
                   "monitor's alert rule and the preset's threshold)",
            "metrics": "pooled over the rows after each training part: ROC AUC of row scores; point-wise "
                       "precision / recall / F1, FAR, MAR of alerting rows; labelled runs with an alert inside",
            "label_columns": list(label_column),
            "skip_columns": list(skip_column or ()),
        },
        "data": str(Path(data).resolve()),
        "n_files": len(files),
        "complete": len(files) == len(found),
        "metrics": table,
        "seconds": {k: round(v, 2) for k, v in report.seconds.items()},
        "alert_policy": report.policies,
        "files": [{"file": f.name, "rows": int(f.times_ns.size), "train_rows": f.train_rows,
                   "labelled_rows": int(f.flagged.sum()), "sensors": [s.stream for s in f.sensors],
                   "metrics": {label: per[f.name].to_dict() for label, per in report.per_file.items()}}
                  for f in files],
        "plots": [str(p) for p in pngs],
    }
    json_path = write_json(out / "testbed.json", payload)
    if copy_json:
        Path(copy_json).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(json_path, copy_json)

    def shown(value, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    line = " | ".join(f"{label} AUC {shown(row['roc_auc'])} F1 {shown(row['f1'])} runs alerted "
                      f"{shown(row['event_recall'], 2)}, false alert runs {row['false_alert_runs']}"
                      for label, row in table.items())
    typer.echo(f"test bed ({len(files)} logs): {line} [{info.wall_seconds:.0f}s] -> {json_path}")
