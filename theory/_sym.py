"""Small helpers shared by the derivations: zero tests and a Gaussian-integral lemma."""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

__all__ = ["simplify_difference", "is_zero", "gaussian_integral"]


def _simp(e):
    out = sp.simplify(e)
    if out != 0:
        alt = sp.simplify(sp.expand(sp.together(sp.expand(e))))
        if alt == 0 or sp.count_ops(alt) < sp.count_ops(out):
            out = alt
    return out


def simplify_difference(a, b=0):
    """``simplify(a - b)``, entrywise for matrices; a proved identity returns 0 (or a zero matrix)."""
    if isinstance(a, sp.MatrixBase) or isinstance(b, sp.MatrixBase):
        return (sp.Matrix(a) - sp.Matrix(b)).applyfunc(_simp)
    return _simp(sp.sympify(a) - sp.sympify(b))


def is_zero(expr) -> bool:
    """True when a ``check_*`` result is exactly 0 (scalar) or a zero matrix."""
    if isinstance(expr, sp.MatrixBase):
        return all(sp.simplify(e) == 0 for e in expr)
    if isinstance(expr, (tuple, list)):
        return all(is_zero(e) for e in expr)
    if isinstance(expr, dict):
        return all(is_zero(e) for e in expr.values())
    return sp.simplify(expr) == 0


@lru_cache(maxsize=None)
def _lemma():
    a = sp.Symbol("a", positive=True)
    b, z = sp.symbols("b z", real=True)
    lhs = sp.integrate(sp.exp(-a * z**2 + b * z), (z, -sp.oo, sp.oo))
    return a, b, lhs


def gaussian_integral(a, b, c=0):
    r"""Lemma: :math:`\int_{\mathbb R} e^{-a z^2 + b z + c}\,dz = \sqrt{\pi/a}\; e^{b^2/(4a) + c}`
    for ``a > 0`` (the one integral behind every Gaussian result; proved once by sympy's
    ``integrate``, see :func:`check_gaussian_integral`)."""
    return sp.sqrt(sp.pi / a) * sp.exp(b**2 / (4 * a) + c)


def check_gaussian_integral():
    """Simplified difference between sympy's integral and :func:`gaussian_integral` (0)."""
    a, b, lhs = _lemma()
    return sp.simplify(lhs - gaussian_integral(a, b))
