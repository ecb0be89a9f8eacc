"""The build exercises of notebooks 00–03: each checker passes the notebook's hidden answer, fails a plausible wrong
answer with a message that says what is wrong, and reports a stub as not written yet."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from notebook_answers import load_answer  # noqa: E402

import memlab  # noqa: E402
from memlab import exercises  # noqa: E402
from memlab.exercises import ExerciseFailed  # noqa: E402

ANSWERS = {  # checker name: (notebook, exercise marker, function name)
    "check_weighted_gather": ("00_tour", "Exercise 4 (build)", "my_weighted_gather"),
    "check_pq_encode": ("01_lsh_and_product_quantization", "Exercise 5 (build)", "my_pq_encode"),
    "check_bucket_probability": ("02_memoryformer_layer", "Exercise 5 (build)", "my_bucket_probability"),
    "check_product_topk": ("03_product_keys_and_memory_plus", "Exercise 4 (build)", "my_product_topk"),
}


def test_checkers_are_exported():
    for name in ANSWERS:
        assert name in exercises.__all__ and callable(getattr(memlab.exercises, name))


@pytest.mark.parametrize("checker", sorted(ANSWERS))
def test_hidden_answer_passes(checker):
    notebook, marker, name = ANSWERS[checker]
    verdict = getattr(exercises, checker)(load_answer(notebook, marker, name))
    verdict.assert_passed()
    assert verdict.passed and len(verdict.cases) >= 4 and str(verdict).startswith("✓")


@pytest.mark.parametrize("checker", sorted(ANSWERS))
def test_stub_is_not_written_yet(checker):
    def stub(*args, **kwargs):
        raise NotImplementedError

    verdict = getattr(exercises, checker)(stub)
    assert not verdict.passed
    assert "not written yet" in verdict.message
    with pytest.raises(ExerciseFailed):
        verdict.assert_passed()


@pytest.mark.parametrize("checker", sorted(ANSWERS))
def test_a_crash_is_reported_with_its_type(checker):
    def crashes(*args, **kwargs):
        raise IndexError("index 9 is out of bounds")

    verdict = getattr(exercises, checker)(crashes)
    assert not verdict.passed and "raised IndexError: index 9 is out of bounds" in verdict.message


# ------------------------------------------------------------------------------------------ plausible wrong answers
def test_gather_with_mean_instead_of_sum_fails():
    verdict = exercises.check_weighted_gather(lambda t, i, w: (w.unsqueeze(-1) * t[i]).mean(1))
    assert not verdict.passed
    assert "out differs from the reference" in verdict.message and "SUM over the n rows" in verdict.message


def test_gather_that_ignores_the_weights_fails():
    verdict = exercises.check_weighted_gather(lambda t, i, w: t[i].sum(1))
    assert not verdict.passed and "first at index (0, 0): got 6, expected 2" in verdict.message


def test_pq_encode_by_largest_inner_product_fails():
    def by_inner_product(x, books):
        m = books.shape[0]
        return torch.einsum("nmd,mkd->nmk", x.reshape(x.shape[0], m, -1), books).argmax(-1)

    verdict = exercises.check_pq_encode(by_inner_product)
    assert not verdict.passed
    assert "is at squared distance" in verdict.message and "is nearer" in verdict.message


def test_pq_encode_returning_the_centroids_fails_on_shape():
    verdict = exercises.check_pq_encode(lambda x, books: memlab.quantization.pq_decode(
        memlab.quantization.pq_encode(x, books), books))
    assert not verdict.passed and "codes has shape" in verdict.message


def test_bucket_probability_without_temperature_fails_on_the_t_case():
    answer = load_answer(*ANSWERS["check_bucket_probability"])
    verdict = exercises.check_bucket_probability(lambda z, temperature=1.0: answer(z, 1.0))
    assert not verdict.passed
    assert verdict.message.startswith("on τ = 3 (odd), t = 0.5: p(z) differs")
    assert verdict.cases == ["τ = 4, t = 1, 32 chunks"]  # the t = 1 case passed first


def test_bucket_probability_with_0_1_vertices_fails():
    def zero_one_vertices(z, temperature=1.0):
        tau = z.shape[-1]
        bits = ((torch.arange(2**tau).unsqueeze(-1) >> torch.arange(tau)) & 1).to(z.dtype)  # {0, 1}, not {±1}
        probs = torch.softmax(z @ bits.T / temperature, dim=-1)
        return probs.gather(-1, memlab.hashing.sign_codes(z).unsqueeze(-1)).squeeze(-1)

    verdict = exercises.check_bucket_probability(zero_one_vertices)
    assert not verdict.passed and "p(z) differs from the reference" in verdict.message


def test_bucket_probability_keeping_the_tau_dimension_fails_on_shape():
    answer = load_answer(*ANSWERS["check_bucket_probability"])
    verdict = exercises.check_bucket_probability(lambda z, t=1.0: answer(z, t).unsqueeze(-1))
    assert not verdict.passed and "drop the last, τ-sized dimension" in verdict.message


def test_product_topk_pairing_halves_position_by_position_fails():
    def zipped(s1, s2, k):
        t1, i1 = s1.topk(k, dim=-1)
        t2, i2 = s2.topk(k, dim=-1)
        return t1 + t2, i1 * s1.shape[-1] + i2

    verdict = exercises.check_product_topk(zipped)
    assert not verdict.passed and verdict.message.startswith("on n = 8, k = 8 (k = n): scores differs")


def test_product_topk_with_rows_j_n_plus_i_fails_on_the_index_map():
    answer = load_answer(*ANSWERS["check_product_topk"])

    def transposed_rows(s1, s2, k):
        best, idx = answer(s1, s2, k)
        n = s1.shape[-1]
        return best, (idx % n) * n + idx // n

    verdict = exercises.check_product_topk(transposed_rows)
    assert not verdict.passed and "is the row i·n + j, with i from the first half?" in verdict.message


def test_product_topk_accepts_any_tie_break():
    """With integer scores many pairs tie; a solution that breaks ties differently from torch.topk still passes."""
    def reversed_ties(s1, s2, k):
        n = s1.shape[-1]
        full = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2).flip(-1)  # same scores, ties met in reverse order
        best, flipped = full.topk(k, dim=-1)
        return best, n * n - 1 - flipped

    exercises.check_product_topk(reversed_ties).assert_passed()


def test_product_topk_returning_a_duplicate_row_fails():
    answer = load_answer(*ANSWERS["check_product_topk"])

    def duplicated(s1, s2, k):
        best, idx = answer(s1, s2, k)
        if k > 1:
            idx = idx.clone()
            idx[..., 1] = idx[..., 0]
            best = best.clone()
            best[..., 1] = best[..., 0]
        return best, idx

    verdict = exercises.check_product_topk(duplicated)
    assert not verdict.passed


# ------------------------------------------------------------------------------------------------ the tour's map
def test_tour_map_lists_every_notebook_of_the_series():
    """Notebook 00's map of the series has one row per notebooks/NN_*.py, so a new notebook cannot go unlisted."""
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    tour = (notebooks / "00_tour.py").read_text()
    listed = {line.split("**")[1].split()[0] for line in tour.splitlines() if line.startswith("# | **")
              and line.split("**")[1][:2].isdigit()}
    present = {p.stem[:2] for p in notebooks.glob("[0-9][0-9]_*.py")}
    assert listed == present, f"00_tour.py's map lists {sorted(listed)}, notebooks/ holds {sorted(present)}"
