"""Checkers for the notebooks' "build it yourself" exercises.

Each checker takes the student's function (or object), runs it on small cases against memlab's own implementation
and returns a ``Verdict`` that displays as ✓ or ✗ with what went wrong and a hint. The reference solutions live in
the notebooks, hidden under "Answer"; the tests exec each hidden answer and run its checker on it, and on a wrong one.

One file per part of the series: ``addressing`` (notebooks 00–03), ``kernels`` (04), ``training`` (05), ``capacity``
(07) and ``lab`` (06, 08–10).
"""
from __future__ import annotations

from . import addressing, capacity, kernels, lab, training
from .addressing import *  # noqa: F403
from .capacity import *  # noqa: F403
from .kernels import *  # noqa: F403
from .lab import *  # noqa: F403
from .training import *  # noqa: F403
from .verdict import ExerciseFailed, Verdict

__all__ = ["Verdict", "ExerciseFailed", *addressing.__all__, *kernels.__all__, *training.__all__, *capacity.__all__,
           *lab.__all__]
