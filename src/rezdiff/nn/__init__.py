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
    "CLIF": f"{_INFD}.clif",
    "LIIFRenderer": f"{_INFD}.clif",
    "render_field": f"{_INFD}.clif",
    "FeatureDecoder": f"{_INFD}.networks",
    "LatentEncoder": f"{_INFD}.networks",
    "VectorQuantizer": f"{_INFD}.networks",
    "PatchGAN": f"{_INFD}.discriminator",
    "LPIPS": f"{_INFD}.perceptual",
    "LaplacianL1": f"{_INFD}.perceptual",
    "VGG16Features": f"{_INFD}.perceptual",
    "FNO": "rezdiff.models.multilevel.fno",
    "grid_to_points": f"{_INFTY_DIFF}.interpolate",
    "points_to_grid": f"{_INFTY_DIFF}.interpolate",
    "Neighbours": f"{_INFTY_DIFF}.sparse",
    "SparseDepthwiseConv": f"{_INFTY_DIFF}.sparse",
    "build_neighbours": f"{_INFTY_DIFF}.sparse",
    "sparse_depthwise_conv": f"{_INFTY_DIFF}.sparse",
}


def __getattr__(name: str) -> Any:
    """A network's old name here (:data:`MOVED`), read through with one FutureWarning."""
    return moved_attribute(__name__, name, MOVED)
