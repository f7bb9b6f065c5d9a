"""Deprecated alias of :mod:`rezdiff.models.infd.guidance` (moved there; removed next release)."""

from rezdiff.moved import alias_module

alias_module(__name__, "rezdiff.models.infd.guidance")
