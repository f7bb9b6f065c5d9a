from rezdiff.models.ddpm.module import DDPM

__all__ = ["DDPM"]
