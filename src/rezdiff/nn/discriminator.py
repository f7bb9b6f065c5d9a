"""Deprecated alias of :mod:`rezdiff.models.infd.discriminator` (moved there; removed next release)."""

from rezdiff.moved import alias_module

alias_module(__name__, "rezdiff.models.infd.discriminator")
