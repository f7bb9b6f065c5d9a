"""Callbacks: sample grids, checkpoints, the multilevel resolution schedule, the prediction writer."""

from rezdiff.callbacks.checkpoint import AtomicCheckpointIO, AtomicCheckpoints, LastCheckpoint
from rezdiff.callbacks.predictions import PredictionWriter
from rezdiff.callbacks.samples import SampleGrid
from rezdiff.callbacks.schedule import ResolutionSchedule

__all__ = [
    "AtomicCheckpointIO",
    "AtomicCheckpoints",
    "LastCheckpoint",
    "PredictionWriter",
    "ResolutionSchedule",
    "SampleGrid",
]
