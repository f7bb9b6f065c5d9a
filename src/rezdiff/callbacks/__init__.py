"""Training callbacks: sample grids, atomic checkpoints and the multilevel resolution schedule."""

from rezdiff.callbacks.checkpoint import AtomicCheckpointIO, AtomicCheckpoints, LastCheckpoint
from rezdiff.callbacks.samples import SampleGrid
from rezdiff.callbacks.schedule import ResolutionSchedule

__all__ = ["AtomicCheckpointIO", "AtomicCheckpoints", "LastCheckpoint", "ResolutionSchedule", "SampleGrid"]
