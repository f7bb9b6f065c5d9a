"""Training callbacks: sample grids and atomic checkpoints."""

from rezdiff.callbacks.checkpoint import AtomicCheckpointIO, AtomicCheckpoints
from rezdiff.callbacks.samples import SampleGrid

__all__ = ["AtomicCheckpointIO", "AtomicCheckpoints", "SampleGrid"]
