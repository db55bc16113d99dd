"""Every knob of the one detector, and the named presets that the monitor, the CLI and the benchmarks share.

Why one frozen config: the monitor, ``scalowatch train``/``score`` and ``bench nab|ucr`` must run the same
detector, so a setting can live in exactly one place. It is saved as JSON beside a fitted model
(:mod:`models.detector.fitted`) and reloaded with it, so a stream scored after a restart is scored by the
configuration it was fitted with, whatever the defaults are by then.

Presets are the benchmarked configurations (see ``benchmarks/README.md`` for how each was measured):

* ``nab`` — operational metrics (NAB): a diffusion window every 8 samples, every channel calibrated by its own
  anomaly likelihood, reported on HTM's log scale, the 5 % spatial rule, one detection per rising edge. The
  monitor's default for sensor streams.
* ``rig`` — the sensors of a machine or test bed, judged row by row while a fault lasts (SKAB's measures): ``nab``
  without NAB's two scoring conventions (the spatial rule, one detection per rising edge), which fire on slow
  drifts and end an alert at a fault's first row.
* ``ucr`` — long periodic recordings (UCR): raw training-normalised z-scores, max-fused, windows every quarter
  window, shape discords at the window and half window and a level-keeping discord at the window.
* ``audio`` — machine audio: fixed windows of 8,192 samples (about half a second at 16 kHz) every half window,
  diffusion and scale (loudness) channels each calibrated by its own likelihood, judged against the training part
  only (a lasting fault stays anomalous).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from models.discord import MAX_REFERENCES
from models.strict_fields import number_tuple, reject_unknown_fields

SCORERS = ("recon", "kl", "trend", "dynamic", "adversarial")
FUSIONS = ("max_z", "likelihood")
CONFIG_FILE = "detector.json"
DEFAULT_LEVEL_CHANNELS = ("level", "scale")
MIN_TRAIN_SAMPLES = 48
"""The shortest training part a detector fits on: three windows of the smallest length (16)."""


@dataclass(frozen=True)
class DetectorConfig:
    """One detector configuration (see the module docstring for the presets).

    Window: ``window`` fixed, or None for the dominant period of the training part clamped to
    ``[min_window, max_window]``. ``hop``: points between diffusion windows (``hop_fraction`` > 0: that fraction
    of the window instead). ``train_samples``: how many samples a live stream collects as its training part
    before it fits (the benchmarks pass each file's own training part instead).

    Model: ``scorer`` (one of :data:`SCORERS`) on a ``unet`` preset trained ``steps`` steps on at most
    ``max_train_windows`` windows (``adversarial_weight`` > 0: with ADDM's adversarial loss, for any scorer — a
    training setting, so it lives here and not among the scorer's options); ``scalogram_normalise``: ``"window"``
    (shape only) or ``"training"`` (the series standardised with the training part, so the scalogram keeps each
    scale's amplitude);
    ``scalogram_waveform``: the window's samples as the image's second channel (level and phase, which a magnitude
    scalogram drops; :mod:`models.transforms.cwt`). ``channel_errors``: ``"pooled"`` — the scorer's map over both
    image channels —, or ``"apart"``: each channel's reconstruction error judged against its own training windows,
    the larger z the diffusion score (the waveform's error no longer drowns the scalogram's).

    Channels beside the diffusion score: ``level_weight`` > 0 adds ``level_channels`` of level / scale (how far a
    window's mean and log-std are from the training windows'); ``discord_scales`` z-normalised nearest-neighbour
    discords at these fractions of the window (``discord@f``), ``value_discord_scales`` level-keeping ones
    (``value@fw``), both on a grid of ``discord_hop`` (0: a quarter of ``hop``); ``value_discords`` level-keeping
    discords of these lengths at every point (``value@m``); ``gaussian_channel`` NAB's windowed Gaussian |z|.

    Fusion: ``"max_z"`` outputs the largest channel z (``calibrate`` off: raw; on: one likelihood of it);
    ``"likelihood"`` calibrates each channel with its own likelihood and outputs the largest.
    ``likelihood_learns``: whether a likelihood's history follows the stream (HTM's, for drifting streams) or
    stays the training part's (a lasting fault stays anomalous). After it (all
    need ``calibrate``): ``log_scale`` (HTM's monotone log scale), ``spatial_tolerance`` (1 where a value leaves
    the range of every earlier value, after the training part), ``suppress_fraction`` (one detection per rising
    edge within that fraction of the training part).

    ``score_every``: ``"sample"`` gives every sample a score (sensor streams); ``"window"`` only the samples where
    a diffusion window ends (audio: 16,000 scores a second per stream would say nothing more).
    """

    scorer: str = "recon"
    window: int | None = None
    min_window: int = 32
    max_window: int = 256
    hop: int = 4
    hop_fraction: float = 0.0
    train_samples: int = 750
    max_train_windows: int = 512
    unet: str = "tiny"
    n_scales: int = 32
    steps: int = 80
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    adversarial_weight: float = 0.0
    score_batch: int = 256
    scalogram_normalise: str = "window"
    scalogram_waveform: bool = False
    channel_errors: str = "pooled"
    level_weight: float = 1.0
    level_channels: tuple[str, ...] = DEFAULT_LEVEL_CHANNELS
    discord_scales: tuple[float, ...] = ()
    discord_hop: int = 0
    value_discords: tuple[int, ...] = ()
    value_discord_scales: tuple[float, ...] = ()
    gaussian_channel: bool = False
    calibrate: bool = False
    fusion: str = "max_z"
    likelihood_learns: bool = True
    log_scale: bool = False
    spatial_tolerance: float | None = None
    suppress_fraction: float = 0.0
    score_every: str = "sample"
    scorer_options: dict[str, Any] = field(default_factory=lambda: {"lam": 1.0})

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.window is not None and self.window < 16:
            raise ValueError("window must be >= 16 samples (the CWT's minimum)")
        if not 16 <= self.min_window <= self.max_window:
            raise ValueError("need 16 <= min_window <= max_window")
        if self.hop < 1 or not 0.0 <= self.hop_fraction <= 1.0:
            raise ValueError("hop must be >= 1 and hop_fraction in [0, 1]")
        if self.train_samples < MIN_TRAIN_SAMPLES:
            raise ValueError(f"train_samples must be >= {MIN_TRAIN_SAMPLES} (three windows of the smallest length)")
        if self.max_train_windows < 2 or self.steps < 1 or self.batch_size < 1 or self.score_batch < 1:
            raise ValueError("max_train_windows >= 2, steps, batch_size and score_batch >= 1 required")
        if self.level_weight < 0:
            raise ValueError("level_weight must be >= 0")
        if not 0.0 <= self.adversarial_weight < 1.0:
            raise ValueError("adversarial_weight must lie in [0, 1) (ADDM's weight is 0.05; 0: no adversarial loss)")
        chosen = self.level_channels
        if isinstance(chosen, str):  # a command line's "scale" or "level;scale"
            chosen = tuple(part.strip() for part in chosen.split(";") if part.strip())
        if not isinstance(chosen, (tuple, list)) or not chosen or not set(chosen) <= {"level", "scale"}:
            raise ValueError(f"level_channels must name 'level' and/or 'scale' (level_weight=0 fuses neither), "
                             f"got {self.level_channels!r}")
        object.__setattr__(self, "level_channels", tuple(dict.fromkeys(chosen)))
        for name in ("discord_scales", "value_discord_scales"):
            scales = number_tuple(getattr(self, name), float, name, "'1;0.5'")
            if any(not 0.0 < f <= 1.0 for f in scales):
                raise ValueError(f"{name} must lie in (0, 1] (fractions of the window)")
            object.__setattr__(self, name, scales)
        if self.discord_hop < 0:
            raise ValueError("discord_hop must be >= 0 (0: a quarter of hop)")
        lengths = number_tuple(self.value_discords, int, "value_discords", "'2;4;8'")
        if any(m < 2 for m in lengths):
            raise ValueError("value_discords lengths must be >= 2 points")
        object.__setattr__(self, "value_discords", tuple(dict.fromkeys(lengths)))
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.fusion == "likelihood" and not self.calibrate:
            raise ValueError('fusion="likelihood" calibrates each channel: it needs calibrate=True')
        if self.gaussian_channel and self.fusion != "likelihood":
            raise ValueError('gaussian_channel needs fusion="likelihood" (its |z| has no common scale with the rest)')
        if self.spatial_tolerance is not None and (self.spatial_tolerance < 0 or not self.calibrate):
            raise ValueError("spatial_tolerance must be >= 0 and needs calibrate=True")
        if not 0.0 <= self.suppress_fraction <= 1.0 or (self.suppress_fraction and not self.calibrate):
            raise ValueError("suppress_fraction must lie in [0, 1] and needs calibrate=True")
        if not isinstance(self.likelihood_learns, bool):  # a quoted "false" would be true
            raise ValueError(f"likelihood_learns must be true or false, got {self.likelihood_learns!r}")
        if not self.likelihood_learns and not self.calibrate:
            raise ValueError("likelihood_learns=False fixes the calibration's history: it needs calibrate=True")
        if self.log_scale and not self.calibrate:
            raise ValueError("log_scale scales the calibrated likelihood: it needs calibrate=True")
        if self.score_every not in ("sample", "window"):
            raise ValueError(f"score_every must be 'sample' or 'window', got {self.score_every!r}")
        if self.scalogram_normalise not in ("window", "training"):
            raise ValueError(f"scalogram_normalise must be 'window' or 'training', got {self.scalogram_normalise!r}")
        _check_scorer_options(self.scorer, self.scorer_options)
        if not isinstance(self.scalogram_waveform, bool):  # a quoted "false" would be true
            raise ValueError(f"scalogram_waveform must be true or false, got {self.scalogram_waveform!r}")
        if self.scalogram_waveform:
            _check_waveform_scorer(self.scorer, self.scorer_options)
        if self.channel_errors not in ("pooled", "apart"):
            raise ValueError(f"channel_errors must be 'pooled' or 'apart', got {self.channel_errors!r}")
        if self.channel_errors == "apart" and (not self.scalogram_waveform or self.scorer != "recon"):
            raise ValueError("channel_errors='apart' judges the image channels' reconstruction errors apart: it needs "
                             "scalogram_waveform=true (a second channel) and the recon scorer")

    def discord_bytes_bound(self, train_samples: int | None = None) -> int:
        """The most memory a detector fitted on ``train_samples`` (default: :attr:`train_samples`) can keep for its
        discord channels: every training window of each, at the longest window the configuration allows.

        Why: a monitor with a detector per stream counts a stream by its detector's memory at the stream cap, and
        streams that arrive together are let in while they collect their training parts, before any is fitted —
        a worker given training parts of tens of thousands of samples (48–295 MB detectors) let in far more than
        it could hold once they were fitted."""
        n = self.train_samples if train_samples is None else train_samples
        w = self.window if self.window is not None else self.max_window
        lengths = [max(16, round(w * f)) for f in (*self.discord_scales, *self.value_discord_scales)]
        lengths += [m for m in self.value_discords if 3 * m <= n]
        total = 0
        for m in lengths:
            refs = min(max(n - m + 1, 0), MAX_REFERENCES)
            total += refs * (m + 2) * 8 + n * 8  # windows, their ends and norms; the training part they come from
        return total

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("discord_scales", "value_discords", "value_discord_scales", "level_channels"):
            out[name] = list(out[name])
        if self.level_channels == DEFAULT_LEVEL_CHANNELS:
            # Saved only where it differs: a release from before the setting refuses unknown keys, so a detector
            # fitted now (nab, ucr) stays loadable after a rollback.
            del out["level_channels"]
        if self.likelihood_learns:  # likewise
            del out["likelihood_learns"]
        if not self.scalogram_waveform:
            del out["scalogram_waveform"]
        if self.channel_errors == "pooled":
            del out["channel_errors"]
        if not self.adversarial_weight:
            del out["adversarial_weight"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DetectorConfig":
        reject_unknown_fields(cls, data, "detector settings")
        return cls(**data)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "DetectorConfig":
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: not a fitted detector")
        return cls.from_dict(json.loads(path.read_text()))

    def with_options(self, **options: Any) -> "DetectorConfig":
        """A copy with ``options`` applied; ``scorer_<name>=v`` goes into ``scorer_options`` (command lines)."""
        scorer = {k[len("scorer_"):]: options.pop(k) for k in list(options)
                  if k.startswith("scorer_") and k != "scorer_options"}
        unknown = sorted(set(options) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"unknown detector settings {unknown}")
        out = replace(self, **options)
        return replace(out, scorer_options={**out.scorer_options, **scorer}) if scorer else out


def _check_scorer_options(scorer: str, options: dict[str, Any]) -> None:
    """Refuse scorer options the scorer would refuse, when the configuration is made rather than at the first fit
    (a typo on a command line must not cost a training run, or surface as a traceback in the middle of a bench)."""
    from models.scorers import scorer_params

    try:
        scorer_params(scorer, **dict(options))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"scorer_options for {scorer!r}: {exc}") from None


def _check_waveform_scorer(scorer: str, options: dict[str, Any]) -> None:
    """The waveform channel makes the model's image two-channel, which the ImageNet CNN behind a feature term
    (``lam`` < 1), a feature space and the dynamic scorer's noise-level choice cannot take: refused here rather than
    at every fit (replacing ``scorer_options`` wholesale brings back ``lam``'s default of 0.5)."""
    from models.scorers import reads_input_with_cnn

    if reads_input_with_cnn(scorer, **dict(options)):
        raise ValueError(f"scalogram_waveform needs a pixel-space scorer without CNN features (lam=1, not dynamic); "
                         f"got scorer {scorer!r} with {dict(options)}: set scalogram_waveform=false or lam=1")


@dataclass(frozen=True)
class Preset:
    """A named, benchmarked detector configuration plus the alert threshold its benchmark found."""

    name: str
    config: DetectorConfig
    alert_threshold: float
    description: str


# hop=8: a diffusion window every 8 samples (each sample still in ~4 windows) instead of every 4. The NAB ablation
# gives the same product (72.0 / 67.4 / 75.6) and the same diffusion channel alone (21.5 against 21.0 standard) for
# half the U-Net's work, which was half of a worker's time (benchmarks/README.md).
# scalogram_waveform: the window's samples as the model's second channel. The magnitude scalogram is blind to a
# window's level, which on NAB is as often the anomaly as its shape: the diffusion channel alone scores 32.0 with it
# against 21.5 without (the product 72.0 either way), at no measurable cost (benchmarks/README.md).
# steps=160: the two-channel model is under-trained at 80 steps (median final loss 0.33; 160: 0.18). Diffusion alone
# 32.0 / 30.6 with 80 steps (seeds 0 / 1), 36.0 / 36.5 with 160, 37.9 / 37.5 with 320: the knee is at 160, for a
# stream's fit of ~6 s on one core instead of ~3 (benchmarks/README.md).
_NAB = DetectorConfig(hop=8, calibrate=True, fusion="likelihood", gaussian_channel=True,
                      value_discords=(2, 4, 8, 16, 32), log_scale=True, spatial_tolerance=0.05, suppress_fraction=0.2,
                      scalogram_normalise="training", scalogram_waveform=True, steps=160)
# The standard-profile threshold NAB's sweep found for the nab preset (benchmarks/results/nab.json, hop 8: 0.9999986;
# with hop 4 it was 0.9999978): in effect, a saturated likelihood or the spatial rule.
_NAB_THRESHOLD = 0.9999986

PRESETS: dict[str, Preset] = {
    "nab": Preset(
        "nab", _NAB, alert_threshold=_NAB_THRESHOLD,
        description="operational metrics: per-channel likelihoods, log scale, spatial rule, one alert per edge",
    ),
    "rig": Preset(
        "rig",
        # NAB's scorer credits only the first detection inside a labelled window, so the nab preset suppresses the
        # score after a detection and alerts when a value leaves the range of every earlier one. Judged row by row
        # (a rig's operator, SKAB's F1 / FAR / MAR), the first ends an alert at a fault's first row and the second
        # fires on a temperature that drifts as the machine warms up. Chosen for that reason, not from rig data
        # (none is available here); the threshold is nab's (a saturated likelihood). The synthetic test bed of
        # the tests: benchmarks/README.md, "Test-bed logs".
        replace(_NAB, spatial_tolerance=None, suppress_fraction=0.0), alert_threshold=_NAB_THRESHOLD,
        description="a machine's sensors judged row by row: nab's likelihoods without its spatial rule and "
                    "one-alert-per-edge suppression",
    ),
    "ucr": Preset(
        "ucr",
        # scalogram_waveform + channel_errors="apart" + steps=320: the window's shape as a second image channel,
        # each channel's error judged against its own training windows, the model trained long enough to learn both.
        # The diffusion channel alone finds 25 of the 49 shared series instead of 16 (14 / 11 on the two halves,
        # against 7 / 9); the product keeps its 34. With the errors pooled it lost two product series; at 160 steps
        # one (benchmarks/README.md).
        DetectorConfig(hop_fraction=0.25, discord_scales=(1.0, 0.5), value_discord_scales=(1.0,),
                       scalogram_waveform=True, channel_errors="apart", steps=320),
        alert_threshold=8.0,
        description="long periodic recordings: raw max-fused z of diffusion, level/scale and discords",
    ),
    "audio": Preset(
        "audio",
        # window=8192: the scalogram of half a second holds the machine's time-frequency texture; 64 ms (1,024
        # samples, the earlier preset) held only noise-like detail, and the diffusion channel was inverted on MIMII
        # fan (clip AUROC 0.085). Windows of 6,144-32,768 samples all give it 0.965-1.000, also on clips scaled
        # to unit RMS, where the level/scale channels fall to 0.09 (benchmarks/README.md, "Machine audio").
        # level_channels=("scale",): a PCM window's mean is the microphone's DC offset, not the machine's sound;
        # fused, it only raised false alarms (MIMII fan clip AUROC with it 0.885 on unit-RMS clips, without 1.000;
        # plain clips 1.000 either way). The scale channel (loudness) stays.
        # likelihood_learns=False: a machine's fault lasts, and HTM's history, which follows the stream, makes it
        # the new normal within minutes (MIMII fan, test clips scored back to back as one stream: clip AUROC 0.755
        # adapting, 1.000 judged against the training part; benchmarks/README.md, "Machine audio").
        # train_samples: 100 s at 16 kHz, what bench audio trains on (MIMII: 10 clips of 10 s). The training part is
        # now also the likelihoods' whole reference; with 10 s (one clip, the preset until then) the second MIMII
        # split scored 0.65, with 30 s 1.000.
        DetectorConfig(window=8192, hop=4096, train_samples=16_000 * 100, max_train_windows=512,
                       calibrate=True, fusion="likelihood", score_every="window", level_channels=("scale",),
                       likelihood_learns=False),
        alert_threshold=0.99,
        description="machine audio: diffusion and scale (loudness) channels, each with its own likelihood",
    ),
}


def preset(name: str, **options: Any) -> DetectorConfig:
    """The configuration of preset ``name`` with ``options`` applied (unknown names and keys are refused)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown detector preset {name!r}; known: {sorted(PRESETS)}") from None
    return base.config.with_options(**options) if options else base.config
