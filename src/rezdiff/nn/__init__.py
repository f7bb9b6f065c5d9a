"""Networks that know nothing about diffusion: tensors and conditioning in, tensors out."""

from rezdiff.nn.autoencoder import FeatureDecoder, LatentEncoder, VectorQuantizer
from rezdiff.nn.clif import CLIF, LIIFRenderer, render_field
from rezdiff.nn.discriminator import PatchGAN
from rezdiff.nn.fno import FNO
from rezdiff.nn.interpolate import grid_to_points, points_to_grid
from rezdiff.nn.perceptual import LPIPS, LaplacianL1, VGG16Features
from rezdiff.nn.sparse import Neighbours, SparseDepthwiseConv, build_neighbours, sparse_depthwise_conv
from rezdiff.nn.unet import UNet

__all__ = [
    "CLIF",
    "FNO",
    "LPIPS",
    "FeatureDecoder",
    "LIIFRenderer",
    "LaplacianL1",
    "LatentEncoder",
    "Neighbours",
    "PatchGAN",
    "SparseDepthwiseConv",
    "UNet",
    "VGG16Features",
    "VectorQuantizer",
    "build_neighbours",
    "grid_to_points",
    "points_to_grid",
    "render_field",
    "sparse_depthwise_conv",
]
