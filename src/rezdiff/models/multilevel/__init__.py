"""Multilevel diffusion: function-space score SDEs with trace-class noise and FNO score networks."""

from rezdiff.models.multilevel.module import MultilevelSDE, build_covariance, covariance_spec

__all__ = ["MultilevelSDE", "build_covariance", "covariance_spec"]
