"""memlab.exercises: the verdict every checker returns (per-part checkers are tested in tests/test_exercises_*.py)."""
import pytest
import torch

import memlab.exercises as exercises
from memlab.exercises.verdict import ExerciseFailed, Mismatch, compare, run_cases


def test_compare_says_shape_then_first_bad_index():
    with pytest.raises(Mismatch, match=r"shape \(2, 3\), expected \(3, 2\)"):
        compare("out", torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(Mismatch, match=r"first at index \(1, 0\): got 5, expected 0"):
        compare("out", torch.tensor([[0.0, 0.0], [5.0, 0.0]]), torch.zeros(2, 2))
    with pytest.raises(Mismatch, match="NaN or inf"):
        compare("out", torch.tensor([float("nan")]), torch.zeros(1))
    with pytest.raises(Mismatch, match="should be a torch.Tensor, got list"):
        compare("out", [0.0], torch.zeros(1))
    with pytest.raises(Mismatch, match=r"index \(2,\): got 7, expected 2"):
        compare("rows", torch.tensor([0, 1, 7]), torch.tensor([0, 1, 2]))
    compare("out", torch.ones(3) + 1e-7, torch.ones(3))  # within tolerance: no error


def test_run_cases_reports_the_first_failure_a_crash_and_a_stub():
    def wrong():
        raise Mismatch("off by one")

    def stub():
        raise NotImplementedError

    ok = run_cases("demo", [("case a", lambda: None), ("case b", lambda: None)])
    assert ok.passed and ok.cases == ["case a", "case b"] and str(ok).startswith("✓ demo")
    failed = run_cases("demo", [("case a", lambda: None), ("case b", wrong)], hint="look at the ends")
    assert not failed and "on case b: off by one. Hint: look at the ends" in str(failed)
    crashed = run_cases("demo", [("case a", lambda: 1 / 0)])
    assert "your code raised ZeroDivisionError" in crashed.message
    assert "not written yet" in run_cases("demo", [("case a", stub)]).message
    with pytest.raises(ExerciseFailed, match="off by one"):
        failed.assert_passed()


def test_every_checker_is_public_and_documented():
    checkers = [name for name in exercises.__all__ if name.startswith("check_")]
    assert checkers, "memlab.exercises exports no checkers"
    for name in checkers:
        assert (getattr(exercises, name).__doc__ or "").strip(), f"{name} has no docstring"
