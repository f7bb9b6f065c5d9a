"""Deprecated alias of :mod:`rezdiff.models.infty_diff.interpolate` (moved there; removed next release)."""

from rezdiff.moved import alias_module

alias_module(__name__, "rezdiff.models.infty_diff.interpolate")
