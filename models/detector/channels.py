"""Names of the detector's channels and what they mean in words a person reads (dashboard, CLI, alerts).

No torch here: the dashboard imports it to explain a stored point without loading the model code.
"""
from __future__ import annotations

SPATIAL = "spatial"
MODEL_CHANNELS = ("diffusion", "level", "scale")

CHANNEL_WORDS = {
    "diffusion": "diffusion model: the window's time-frequency picture is unlike the normal ones",
    "level": "level: the window's mean moved away from normal",
    "scale": "scale: the window's amplitude changed",
    "gaussian": "value spike: far from the recent mean (windowed Gaussian)",
    SPATIAL: "out of range: beyond every value seen so far",
    "discord": "shape discord: a shape never seen in the training part",
    "value": "value discord: a run of values never seen in the training part",
    "none": "nothing unusual (the detector is still learning, or no channel speaks)",
}


def channel_kind(name: str) -> str:
    """``diffusion``, ``level``, ``scale``, ``gaussian``, ``spatial``, ``discord``, ``value`` or ``none``."""
    return (name or "none").split("@")[0]


def describe_channel(name: str) -> str:
    """The words for a channel name (``value@8`` → the value-discord sentence); unknown names as they are."""
    return CHANNEL_WORDS.get(channel_kind(name), name)


__all__ = ["CHANNEL_WORDS", "MODEL_CHANNELS", "SPATIAL", "channel_kind", "describe_channel"]
