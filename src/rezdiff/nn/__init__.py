"""Networks that know nothing about diffusion: tensors and conditioning in, tensors out."""

from rezdiff.nn.fno import FNO
from rezdiff.nn.unet import UNet

__all__ = ["FNO", "UNet"]
