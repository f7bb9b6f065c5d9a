"""Networks that know nothing about diffusion and serve several families: the U-Net.

A network one family alone uses lives in that family's folder (FNO: ``models/multilevel``; the sparse
operators and point interpolation: ``models/infty_diff``; CLIF, the stage-1 encoder/decoder, PatchGAN and
the perceptual losses: ``models/infd``); their old names here read through for one release.
"""

from typing import Any

from rezdiff.moved import moved_attribute
from rezdiff.nn.unet import UNet

__all__ = ["UNet"]

_INFD, _INFTY_DIFF = "rezdiff.models.infd", "rezdiff.models.infty_diff"
MOVED = {
    **dict.fromkeys(("CLIF", "LIIFRenderer", "render_field"), f"{_INFD}.clif"),
    **dict.fromkeys(("FeatureDecoder", "LatentEncoder", "VectorQuantizer"), f"{_INFD}.networks"),
    **dict.fromkeys(("PatchGAN",), f"{_INFD}.discriminator"),
    **dict.fromkeys(("LPIPS", "LaplacianL1", "VGG16Features"), f"{_INFD}.perceptual"),
    **dict.fromkeys(("FNO",), "rezdiff.models.multilevel.fno"),
    **dict.fromkeys(("grid_to_points", "points_to_grid"), f"{_INFTY_DIFF}.interpolate"),
    **dict.fromkeys(
        ("Neighbours", "SparseDepthwiseConv", "build_neighbours", "sparse_depthwise_conv"),
        f"{_INFTY_DIFF}.sparse",
    ),
}


def __getattr__(name: str) -> Any:
    """A network's old name here (:data:`MOVED`), read through with one FutureWarning."""
    return moved_attribute(__name__, name, MOVED)
