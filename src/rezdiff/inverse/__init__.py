"""Inverse problems solved with trained rezdiff models: super-resolution, inpainting and region guidance."""
