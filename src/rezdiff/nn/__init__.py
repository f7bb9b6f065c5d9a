"""Networks that know nothing about diffusion: tensors and conditioning in, tensors out."""

from rezdiff.nn.unet import UNet

__all__ = ["UNet"]
