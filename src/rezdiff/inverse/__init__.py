"""Inverse problems solved with trained rezdiff models: super-resolution, inpainting and region guidance."""

from rezdiff.inverse.guidance import Box, ColorLoss, Condition, ReferenceLoss, guided_sample
from rezdiff.inverse.infty_diff import inpaint, super_resolve

__all__ = [
    "Box",
    "ColorLoss",
    "Condition",
    "ReferenceLoss",
    "guided_sample",
    "inpaint",
    "super_resolve",
]
