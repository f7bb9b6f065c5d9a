"""Deprecated: the inverse problems moved to their families' folders (∞-Diff's super-resolution and
inpainting: :mod:`rezdiff.models.infty_diff.inverse`; INFD's box guidance:
:mod:`rezdiff.models.infd.guidance`). The old names read through for one release with a FutureWarning."""

from typing import Any

from rezdiff.moved import moved_attribute

MOVED = {
    **{name: "rezdiff.models.infty_diff.inverse" for name in ("inpaint", "super_resolve")},
    **{
        name: "rezdiff.models.infd.guidance"
        for name in ("Box", "ColorLoss", "Condition", "ReferenceLoss", "guided_sample")
    },
}


def __getattr__(name: str) -> Any:
    """An inverse-problem name's old place (:data:`MOVED`), read through with one FutureWarning."""
    return moved_attribute(__name__, name, MOVED)
