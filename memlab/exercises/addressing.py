"""Checkers for the build exercises of notebooks 00–03: reading and addressing, written by the student.

    check_weighted_gather     00: the reading step, out[b] = Σ_j w[b, j] · T[idx[b, j]]   (memlab.embedding_bag)
    check_pq_encode           01: product-quantization codes, nearest centroid per sub-space (memlab.quantization)
    check_bucket_probability  02: MemoryFormer's p(z) as the softmax over all 2^τ sign codes (memlab.hashing)
    check_product_topk        03: the exact top-k over n² product keys from two half-score vectors (memlab.product_keys)

Each runs the student's function on a few small cases, odd shapes and edge cases included, against memlab's own
implementation, and returns a ``Verdict`` (see ``memlab/exercises/verdict.py``).
"""
from __future__ import annotations

import torch

from ..addressing import hashing, product_keys
from ..addressing import quantization as pq
from ..reading.bag import embedding_bag
from .verdict import Mismatch, Verdict, compare, run_cases

__all__ = ["check_weighted_gather", "check_pq_encode", "check_bucket_probability", "check_product_topk"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------- 00: reading
def check_weighted_gather(fn) -> Verdict:
    """Check ``fn(table, indices, weights) -> out``, the reading step both memory layers share.

    table (R, d), indices (B, n) int64 row ids, weights (B, n) → out (B, d) with
    ``out[b] = Σ_j weights[b, j] · table[indices[b, j]]`` — MemoryFormer's y = Σ_k p(z_k) T_k[h(z_k)] (§2.1) and the
    product-key read Σ_i w_i V[i] (Lample et al. 2019, §3.1). The student writes it with ``index_select`` / ``gather``
    (or fancy indexing); the reference is ``memlab.embedding_bag(table, indices, weights)``. Cases: duplicate rows in a
    bag, zero and negative weights, bags of one row, the first and last row, odd sizes, float64.
    """
    def case(table, indices, weights, atol=1e-5, rtol=1e-5):
        def thunk():
            expected = embedding_bag(table, indices, weights, backend="torch")
            got = fn(table.clone(), indices.clone(), weights.clone())
            compare("out", got, expected, atol=atol, rtol=rtol)
        return thunk

    g = _gen(0)
    t5 = torch.arange(5.0).unsqueeze(-1).repeat(1, 3)  # row r is (r, r, r): easy to read by eye
    cases = [
        ("5×3 table, 2 bags of 3 with a duplicate row and a negative weight",
         case(t5, torch.tensor([[0, 2, 4], [1, 1, 3]]), torch.tensor([[1.0, 0.5, 0.25], [1.0, 1.0, -1.0]]))),
        ("bags of one row (n = 1), first and last row",
         case(torch.randn(9, 4, generator=g), torch.tensor([[0], [8], [3]]), torch.tensor([[2.0], [-0.5], [0.0]]))),
        ("odd sizes: 37×5 table, 7 bags of 5, some weights zero",
         case(torch.randn(37, 5, generator=g), torch.randint(0, 37, (7, 5), generator=g),
              torch.randn(7, 5, generator=g) * (torch.rand(7, 5, generator=g) > 0.3))),
        ("a bag that reads one row five times",
         case(torch.randn(6, 2, generator=g), torch.full((1, 5), 4), torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]]))),
        ("float64 table and weights, 11 bags of 8 from 1000 rows",
         case(torch.randn(1000, 16, generator=g, dtype=torch.float64), torch.randint(0, 1000, (11, 8), generator=g),
              torch.rand(11, 8, generator=g, dtype=torch.float64), atol=1e-12, rtol=1e-12)),
    ]
    return run_cases("weighted gather (reading)", cases,
                     hint="gather the rows, table.index_select(0, indices.reshape(-1)).view(B, n, d), scale each by "
                          "its weight (weights.unsqueeze(-1)) and SUM over the n rows of a bag (not the mean); keep "
                          "the table's dtype")


# --------------------------------------------------------------------------------------- 01: product quantization
def check_pq_encode(fn) -> Verdict:
    """Check ``fn(x, codebooks) -> codes``, the product-quantization encoder (Jégou et al. 2011, §II).

    x (N, d), codebooks (m, k, d/m) → codes (N, m) int64: ``codes[i, j]`` is the index of the centroid of sub-space j
    nearest (in Euclidean distance) to the j-th sub-vector x[i, j·d/m : (j+1)·d/m]. Reference:
    ``memlab.quantization.pq_encode``. Ties (two centroids at the same distance) accept either index: a code is right
    when its centroid is as near as the nearest one. Cases: m = 1 (plain k-means assignment), m = 2 and 4, centroids
    of very different norms (where the largest inner product is not the nearest centroid), points sitting exactly on a
    centroid, k = 1, float32.
    """
    def case(x, books):
        def thunk():
            got = fn(x.clone(), books.clone())
            expected = pq.pq_encode(x, books)
            if not isinstance(got, torch.Tensor):
                raise Mismatch(f"codes should be a torch.Tensor, got {type(got).__name__}")
            if tuple(got.shape) != tuple(expected.shape):
                raise Mismatch(f"codes has shape {tuple(got.shape)}, expected {tuple(expected.shape)} (one code per "
                               "vector and sub-space)")
            if got.dtype.is_floating_point or got.dtype == torch.bool:
                raise Mismatch(f"codes should be integer indices (torch.long), got {got.dtype}")
            m, k = books.shape[0], books.shape[1]
            if ((got < 0) | (got >= k)).any():
                raise Mismatch(f"codes must lie in [0, k={k}), got values from {int(got.min())} to {int(got.max())}")
            sub = pq.split_subvectors(x, m)  # (N, m, d/m)
            chosen = books[torch.arange(m), got.long()]  # (N, m, d/m)
            best = books[torch.arange(m), expected]
            d_got, d_best = (sub - chosen).pow(2).sum(-1), (sub - best).pow(2).sum(-1)
            bad = d_got > d_best + 1e-6 * (1 + d_best)
            if bad.any():
                i, j = (int(v) for v in bad.nonzero()[0])
                raise Mismatch(f"vector {i}, sub-space {j}: your code {int(got[i, j])} is at squared distance "
                               f"{float(d_got[i, j]):.4g}, but centroid {int(expected[i, j])} is nearer "
                               f"({float(d_best[i, j]):.4g})")
        return thunk

    g = _gen(1)
    x4 = torch.randn(50, 4, generator=g, dtype=torch.float64)
    books_norms = torch.randn(2, 6, 2, generator=g, dtype=torch.float64) * torch.tensor([0.2, 0.5, 1, 2, 4, 8],
                                                                                       dtype=torch.float64)[:, None]
    books_on = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    on_centroids = torch.cat([books_on[j, torch.tensor([0, 4, 2])] for j in range(4)], dim=-1)  # (3, 12) exactly on
    cases = [
        ("m = 1 (plain nearest centroid), 50 vectors of 4, k = 7",
         case(x4, torch.randn(1, 7, 4, generator=g, dtype=torch.float64))),
        ("m = 2, k = 6 centroids of very different norms", case(x4 * 2, books_norms)),
        ("m = 4, d = 12, vectors lying exactly on centroids, and 40 random ones",
         case(torch.cat([on_centroids, torch.randn(40, 12, generator=g, dtype=torch.float64)]), books_on)),
        ("k = 1 (every code is 0), m = 3", case(torch.randn(9, 6, generator=g), torch.randn(3, 1, 2, generator=g))),
        ("float32, m = 8, d = 16, k = 16, 200 vectors",
         case(torch.randn(200, 16, generator=g), torch.randn(8, 16, 2, generator=g))),
    ]
    return run_cases("product-quantization encoder", cases,
                     hint="split x into m sub-vectors (x.view(N, m, d // m)), and in each sub-space take the argmin "
                          "over the k centroids of the squared distance ‖x_j − c‖² (not the largest inner product "
                          "x_j·c, which favours long centroids); return a (N, m) long tensor")


# ---------------------------------------------------------------------------------------- 02: MemoryFormer's p(z)
def check_bucket_probability(fn) -> Verdict:
    """Check ``fn(z, temperature) -> p``, MemoryFormer's bucket weight from its definition (§2.1).

    z (..., τ) chunks → p (...): the softmax over all 2^τ buckets b of the scores ⟨z, s_b⟩ / t, where s_b ∈ {±1}^τ is
    bucket b's sign vector, read at the bucket the chunk hashes to (s = sign(z), with sign(0) = +). This is the
    brute-force definition; the reference is memlab's closed form ``memlab.hashing.bucket_probability`` =
    Π_i σ(2|z_i|/t), so agreement also re-proves the factorisation. Cases in float64: τ = 1, odd τ (3, 5), τ = 8,
    t ≠ 1, exact zeros in z, an all-zero chunk (p = 2^-τ), and extra leading dimensions.
    """
    def case(z, t):
        def thunk():
            expected = hashing.bucket_probability(z, t)
            got = fn(z.clone(), t)
            if isinstance(got, torch.Tensor) and got.shape != expected.shape and got.numel() == expected.numel():
                raise Mismatch(f"p has shape {tuple(got.shape)}, expected {tuple(expected.shape)} (one weight per "
                               "chunk: drop the last, τ-sized dimension)")
            compare("p(z)", got, expected, atol=1e-10, rtol=1e-8)
        return thunk

    g = _gen(2)
    with_zeros = torch.randn(64, 5, generator=g, dtype=torch.float64)
    with_zeros[::3, 1] = 0.0
    with_zeros[::5, 4] = 0.0
    with_zeros[7] = 0.0  # an all-zero chunk: uniform softmax, p = 2^-5
    cases = [
        ("τ = 4, t = 1, 32 chunks", case(torch.randn(32, 4, generator=g, dtype=torch.float64), 1.0)),
        ("τ = 3 (odd), t = 0.5", case(torch.randn(40, 3, generator=g, dtype=torch.float64), 0.5)),
        ("τ = 5, t = 2, exact zeros in z and one all-zero chunk", case(with_zeros, 2.0)),
        ("τ = 1, t = 0.3", case(torch.randn(20, 1, generator=g, dtype=torch.float64), 0.3)),
        ("τ = 8, t = 1, chunks of shape (2, 3, 8)", case(torch.randn(2, 3, 8, generator=g, dtype=torch.float64), 1.0)),
    ]
    return run_cases("p(z) from the softmax over 2^τ buckets", cases,
                     hint="build the 2^τ sign vectors s_b with entries ±1 (bit i of b → s_b[i] = +1 if set, else −1; "
                          "memlab.hashing.bucket_sign_vectors shows the order), scores z @ S.T / t, a softmax over the "
                          "last dimension, then read it at the hashed bucket h(z) = Σ_i [z_i ≥ 0]·2^i")


# ----------------------------------------------------------------------------------------- 03: product-key top-k
def check_product_topk(fn) -> Verdict:
    """Check ``fn(scores1, scores2, k) -> (scores, indices)``: the exact top-k over n² product keys.

    scores1, scores2 (..., n) half scores q1·K1_i and q2·K2_j → scores (..., k) sorted descending and indices (..., k)
    = i·n + j of the k largest sums scores1[i] + scores2[j] (Lample et al. 2019, §3.2: top-k of each half, then the
    top-k of the k×k candidate sums; Memory Layers at Scale §2). Reference: ``memlab.product_keys.bruteforce_topk``.
    Ties are allowed to break either way: the checker compares the sorted scores with the brute force, and checks
    that every index is a distinct row in [0, n²) whose score scores1[i] + scores2[j] is the score returned beside it.
    Cases: k = 1, k = n, odd n, extra leading dimensions, integer-valued scores with many ties, float32.
    """
    def case(s1, s2, k):
        def thunk():
            n = s1.shape[-1]
            got = fn(s1.clone(), s2.clone(), k)
            if not (isinstance(got, (tuple, list)) and len(got) == 2):
                raise Mismatch("return a pair (scores, indices), like torch.topk")
            got_scores, got_idx = got
            ref_scores, _ = product_keys.bruteforce_topk(s1, s2, k)
            tol = 1e-9 if s1.dtype == torch.float64 else 1e-5
            compare("scores", got_scores, ref_scores, atol=tol, rtol=tol)
            if not isinstance(got_idx, torch.Tensor) or got_idx.dtype.is_floating_point:
                raise Mismatch("indices should be an integer tensor (torch.long) of rows i·n + j")
            if tuple(got_idx.shape) != tuple(ref_scores.shape):
                raise Mismatch(f"indices has shape {tuple(got_idx.shape)}, expected {tuple(ref_scores.shape)}")
            idx = got_idx.long()
            if ((idx < 0) | (idx >= n * n)).any():
                raise Mismatch(f"indices must lie in [0, n² = {n * n}), got values from {int(idx.min())} to "
                               f"{int(idx.max())}")
            if (idx.sort(-1).values.diff(dim=-1) == 0).any():
                raise Mismatch("a query returned the same row twice: the k rows must be distinct pairs (i, j)")
            i, j = torch.div(idx, n, rounding_mode="floor"), idx % n
            implied = s1.gather(-1, i) + s2.gather(-1, j)
            bad = (implied - got_scores).abs() > tol * (1 + got_scores.abs())
            if bad.any():
                where = tuple(int(v) for v in bad.nonzero()[0])
                raise Mismatch(f"at {where} index {int(idx[where])} = i·n + j with i = {int(i[where])}, "
                               f"j = {int(j[where])} has score scores1[i] + scores2[j] = {float(implied[where]):.6g}, "
                               f"but you returned {float(got_scores[where]):.6g} beside it (is the row i·n + j, "
                               "with i from the first half?)")
        return thunk

    g = _gen(3)
    tie1 = torch.randint(-3, 4, (30, 10), generator=g).double()
    tie2 = torch.randint(-3, 4, (30, 10), generator=g).double()
    cases = [
        ("n = 8, k = 1", case(torch.randn(5, 8, generator=g, dtype=torch.float64),
                              torch.randn(5, 8, generator=g, dtype=torch.float64), 1)),
        ("n = 8, k = 8 (k = n)", case(torch.randn(5, 8, generator=g, dtype=torch.float64),
                                      torch.randn(5, 8, generator=g, dtype=torch.float64), 8)),
        ("odd n = 13, k = 5, leading dimensions (2, 3)",
         case(torch.randn(2, 3, 13, generator=g, dtype=torch.float64),
              torch.randn(2, 3, 13, generator=g, dtype=torch.float64), 5)),
        ("integer-valued scores with many ties, n = 10, k = 6", case(tie1, tie2, 6)),
        ("float32, 64 queries, n = 128, k = 16", case(torch.randn(64, 128, generator=g),
                                                      torch.randn(64, 128, generator=g), 16)),
    ]
    return run_cases("exact product-key top-k", cases,
                     hint="take top-k of each half (values and indices), form the k×k grid of sums "
                          "top1[..., :, None] + top2[..., None, :], take the top-k of the flattened grid, and map the "
                          "flat position f back to i = idx1[f // k], j = idx2[f % k]; the row is i·n + j")
