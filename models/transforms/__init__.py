"""Input adapters: series/audio windows → CWT scalograms, image files → normalised tensors."""
from models.transforms.cwt import CWTConfig, Scalogram, ScalogramOutput

__all__ = ["CWTConfig", "Scalogram", "ScalogramOutput"]
