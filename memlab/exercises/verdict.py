"""What every exercise checker returns: a verdict that reads well in a notebook and fails loudly in a test.

A checker runs the student's function on small cases where the answer is known (memlab's own implementation), and
returns a ``Verdict``: ``passed``, and one message saying what was checked, or what went wrong and a hint on how to fix
it. In a notebook the verdict displays itself (✓ or ✗ and the message); ``verdict.assert_passed()`` raises on failure,
which is what tests use.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


class ExerciseFailed(AssertionError):
    """Raised by ``Verdict.assert_passed`` when the student's code is not right yet."""


@dataclass
class Verdict:
    exercise: str
    passed: bool
    message: str
    cases: list[str] = field(default_factory=list)  # what was checked, one line per case

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        mark = "✓" if self.passed else "✗"
        lines = [f"{mark} {self.exercise}: {self.message}"]
        if self.passed and self.cases:
            lines += [f"    checked: {case}" for case in self.cases]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython display
        printer.text(str(self))

    def assert_passed(self) -> "Verdict":
        if not self.passed:
            raise ExerciseFailed(str(self))
        return self


class Mismatch(Exception):
    """One case went wrong; the message says how (raised inside a checker, turned into a failed Verdict)."""


def compare(name: str, got, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Raise ``Mismatch`` with a helpful message unless ``got`` is a tensor equal to ``expected`` within tolerance."""
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{name} should be a torch.Tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(expected.shape):
        raise Mismatch(f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if expected.dtype.is_floating_point:
        got_f, exp_f = got.detach().double(), expected.detach().double()
        if not torch.isfinite(got_f).all():
            raise Mismatch(f"{name} contains NaN or inf")
        err = (got_f - exp_f).abs()
        bad = err > atol + rtol * exp_f.abs()
        if bad.any():
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise Mismatch(f"{name} differs from the reference by up to {err.max().item():.3g} (first at index "
                           f"{where}: got {got_f[where].item():.6g}, expected {exp_f[where].item():.6g})")
    else:
        if not torch.equal(got.detach().cpu().long(), expected.detach().cpu().long()):
            bad = (got.detach().cpu().long() != expected.detach().cpu().long()).nonzero()[0]
            where = tuple(int(i) for i in bad)
            raise Mismatch(f"{name} differs from the reference (first at index {where}: got "
                           f"{got[where].item()}, expected {expected[where].item()})")


def run_cases(exercise: str, cases, hint: str = "") -> Verdict:
    """Run ``cases`` (an iterable of (description, thunk)); the first thunk that raises gives a failed verdict.

    A thunk raises ``Mismatch`` for a wrong answer; any other exception is the student's code crashing, reported with
    its type and message."""
    done = []
    for description, thunk in cases:
        try:
            thunk()
        except NotImplementedError:
            return Verdict(exercise, False, "not written yet: replace `raise NotImplementedError` with your code and "
                           "run this cell again", done)
        except Mismatch as wrong:
            return Verdict(exercise, False, f"on {description}: {wrong}" + (f". Hint: {hint}" if hint else ""), done)
        except Exception as crash:  # noqa: BLE001 - the student's code may raise anything; say what and where
            return Verdict(exercise, False, f"on {description} your code raised {type(crash).__name__}: {crash}", done)
        done.append(description)
    return Verdict(exercise, True, f"all {len(done)} cases match memlab's implementation", done)
