# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · A tour of memlab
#
# **What this notebook teaches.** memlab is a small lab for **memory layers**: layers that replace dense matrix
# multiplies by reading a few rows of a large table. It teaches two methods side by side:
#
# * **MemoryFormer**: every fully-connected layer becomes K hash tables; an input chunk's sign pattern picks one row
#   per table.
# * **Product-key memory** and **Memory+**: a query scores n² keys through two sets of n half-keys and reads the top-k
#   values.
#
# **Paper sections.** MemoryFormer (Ding et al., NeurIPS 2024, arXiv 2411.12992): §2.1 (the Memory Layer), §2.2 (the
# Memory Block), Table 1 (FLOPs), Figure 4 (bucket use). Large Memory Layers with Product Keys (Lample et al.,
# NeurIPS 2019, arXiv 1907.05242): §3 (the product-key memory). Memory Layers at Scale (Berges, Oğuz et al.,
# ICML 2025, arXiv 2412.09764): §2 (memory layers), §3 (Memory+, shared values, qk-norm).
#
# **Before this:** nothing. Notebooks 01–03 take each step apart; this one shows them working together.

# %% [markdown]
# Both are the same two steps (see [paper_notes.md](paper_notes.md) and the docstrings of `memlab`):
#
# | step | MemoryFormer (`HashMemory`) | product keys (`ProductKeyMemory`) |
# |---|---|---|
# | **addressing** x → (row indices, weights) | sign hash of each chunk, weight p(z) | top-k over product keys, softmax |
# | **reading** (indices, weights) → y | `memlab.embedding_bag` | `memlab.embedding_bag` |
# | **both, fused** x → y | `memlab.hash_read` | — |
#
# One reading primitive, one kernel (notebook 04), both layers. MemoryFormer's addressing is cheap enough to fuse
# into the read: `memlab.hash_read(x, tables, tau=τ)` equals `embedding_bag(tables, *address(x))` up to fp32 rounding,
# and is what `HashMemory.forward` calls. This notebook checks the environment, runs each layer once on tiny inputs,
# verifies "addressing → reading" numerically against hand-written formulas, and maps the rest of the series.

# %%
import memlab

FAST = memlab.fast_mode()

import os

import torch
import torch.nn.functional as F
from torch import nn

from memlab import hashing, stats

torch.manual_seed(0)
print("memlab", memlab.__version__, "| fast mode:", FAST)

# %% [markdown]
# ## 1. Environment
#
# `memlab.environment_report()` lists versions and devices. On a CPU-only machine the default backend is `torch`
# (`F.embedding_bag`); with CUDA and triton installed it is memlab's Triton kernel. `MEMLAB_BACKEND=torch|triton`
# overrides the choice, and `TRITON_INTERPRET=1` (set before importing memlab) runs the Triton kernels on the CPU.

# %%
report = memlab.environment_report()
for key, value in report.items():
    print(f"{key:>18s}: {value}")
# the backend the report names is the one embedding_bag really dispatches to (unless MEMLAB_BACKEND overrides it) …
here = torch.empty(1, 1, device="cuda" if torch.cuda.is_available() else "cpu")
if "MEMLAB_BACKEND" not in os.environ:
    assert report["default_backend"] == memlab.reading.bag.resolve_backend("auto", here)
# … and it gives the same numbers as the torch reference, F.embedding_bag
t_env = torch.randn(50, 8, device=here.device)
i_env, w_env = torch.randint(0, 50, (7, 5), device=here.device), torch.rand(7, 5, device=here.device)
auto = memlab.embedding_bag(t_env, i_env, w_env)
torch.testing.assert_close(auto, memlab.embedding_bag(t_env, i_env, w_env, backend="torch"), rtol=1e-5, atol=1e-6)
print(f"embedding_bag on {here.device.type} ({report['default_backend']} backend) == torch reference")

# %% [markdown]
# ## 2. The one primitive: `memlab.embedding_bag`
#
# `out[n] = Σ_j weights[n, j] · table[indices[n, j]]` — gather B rows, scale, sum. A table of 5 rows × 3 columns
# whose row r is (r, r, r), and two bags of three reads each (duplicates are allowed):

# %%
# NBVAL_CHECK_OUTPUT
table = torch.arange(5.0).unsqueeze(-1).repeat(1, 3)
indices = torch.tensor([[0, 2, 4], [1, 1, 3]])
weights = torch.tensor([[1.0, 0.5, 0.25], [1.0, 1.0, -1.0]])
out = memlab.embedding_bag(table, indices, weights)
print(out)
manual = (weights.unsqueeze(-1) * table[indices]).sum(1)
print("equals the explicit gather-and-sum:", torch.equal(out, manual))
assert torch.equal(out, manual)
assert out.tolist() == [[2.0] * 3, [-1.0] * 3]  # by hand: 1·0 + 0.5·2 + 0.25·4 = 2 and 1·1 + 1·1 − 1·3 = −1

# %% [markdown]
# ## 3. MemoryFormer's Memory Layer: `HashMemory`
#
# Shaped like `nn.Linear(d_in, d_out)`. x is cut into K = d_in/τ chunks z_k of τ numbers; the chunk's sign bits pick
# row h(z_k) of table k (2^τ rows of d_out); the rows are summed with weights p(z_k) = Π_i σ(2|z_i|/t):
#
# $$y = \sum_{k=1}^{K} p(z_k)\, T_k[h(z_k)] .$$
#
# All K tables live in one parameter of shape (K·2^τ, d_out); table k's row b is row k·2^τ + b.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
d_in, d_out, tau = 64, 32, 8
hm = memlab.HashMemory(d_in, d_out, tau=tau)
x = torch.randn(2, 5, d_in)  # (batch, sequence, features)
rows, p = hm.address(x)  # addressing
y = hm.read(rows, p)  # reading
print(hm)
print("x", tuple(x.shape), "-> rows", tuple(rows.shape), "weights", tuple(p.shape), "-> y", tuple(y.shape))
print("tables", tuple(hm.tables.shape), "=", hm.K, "tables x 2^τ rows x d_out")
# forward is memlab.hash_read, fused (on a CPU: one C call that hashes and gathers); it sums in another order, so it
# equals the two steps up to fp32 rounding
fused = memlab.hash_read(x, hm.tables, tau=tau)
fused_diff = (fused - y).abs().max().item()
same = torch.equal(y, memlab.embedding_bag(hm.tables, rows, p)) and torch.equal(fused, hm(x)) and fused_diff < 1e-6
print("read(address(x)) == embedding_bag(tables, rows, p); forward(x) == hash_read(x, tables) == both up to fp32 rounding (< 1e-6):", same)
assert same

# %% [markdown]
# The weight p(z) is defined as a softmax over all 2^τ buckets; it factorises into a product of τ sigmoids, so it
# costs O(τ) instead of O(2^τ). Checked in float64 against the brute-force softmax (notebook 02 derives it):

# %%
z = torch.randn(1000, tau, dtype=torch.float64)
gap = (hashing.bucket_probability(z) - hashing.bucket_probability_bruteforce(z)).abs().max().item()
print(f"max |closed form - softmax over 2^{tau} buckets| = {gap:.1e}")
assert gap < 1e-12

# %% [markdown]
# ## 4. The Memory Block: `MemoryBlock`
#
# MemoryFormer's FFN replacement: two Memory Layers with a LayerNorm between them and no activation. The first
# maps d → (τ+e)·K so the second hashes K chunks of τ+e bits ("expanding bits", e = 2 by default).

# %%
torch.manual_seed(0)
block = memlab.MemoryBlock(d_in, tau=tau, expand_bits=2)
print(block)
print("ML1 tables", tuple(block.ml1.tables.shape), " ML2 tables", tuple(block.ml2.tables.shape),
      " hidden width", block.hidden_features)
yb = block(x)
by_hand = block.ml2(block.norm(block.ml1(x)))  # ML2(Norm(ML1(x))), no activation in between
print("x", tuple(x.shape), "-> y", tuple(yb.shape), "| block(x) == ML2(LayerNorm(ML1(x))):",
      torch.allclose(yb, by_hand, rtol=1e-5, atol=1e-6))
assert block.hidden_features == (tau + 2) * (d_in // tau)  # (τ + e)·K = 10 · 8
torch.testing.assert_close(yb, by_hand, rtol=1e-5, atol=1e-6)

# %% [markdown]
# ## 5. Product-key memory: `ProductKeyMemory`
#
# A query per head is split into halves q1, q2; n half-keys per half define n² full keys; the exact top-k over them
# costs two top-k's over n (notebook 01 proves it). The k selected values are weighted by a softmax and summed over
# heads — again one `embedding_bag`, with a bag of heads × top-k rows.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
pkm = memlab.ProductKeyMemory(d_in, n_keys=32, heads=2, topk=8)
idx, w = pkm.lookup(x)  # addressing
yp = pkm.read(idx, w)  # reading
print(pkm)
print("x", tuple(x.shape), "-> indices", tuple(idx.shape), "(batch, seq, heads, topk) -> y", tuple(yp.shape))
print("values", tuple(pkm.values.weight.shape), "= n_keys² rows; half-keys", tuple(pkm.keys.shape),
      "(heads, 2 halves, n, k_dim/2)")
print("softmax weights sum to 1 per head:", torch.allclose(w.sum(-1), torch.ones(w.shape[:-1])))
same = torch.equal(yp, pkm(x)) and torch.equal(yp, memlab.embedding_bag(pkm.values.weight, idx.flatten(-2), w.flatten(-2)))
print("forward == read(lookup(x)) == embedding_bag(values, indices, weights):", same)
assert same

# %% [markdown]
# ## 6. Memory+: `MemoryPlus`
#
# Memory Layers at Scale's version: the product-key read y is gated, W2(y ⊙ silu(W1 x)), and queries and keys are
# normalised (qk-norm). Several layers can share one value pool (`SharedValues`).

# %%
torch.manual_seed(0)
mplus = memlab.MemoryPlus(d_in, n_keys=32, heads=2, topk=8)
print(mplus)
ym = mplus(x)
idx_m, w_m = mplus.lookup(x)  # the product-key addressing, then the gate around the read
read_m = memlab.embedding_bag(mplus.memory.values.weight, idx_m.flatten(-2), w_m.flatten(-2))
gated = mplus.out_proj(read_m * F.silu(mplus.gate_proj(x)))  # W2(y ⊙ silu(W1 x))
print("x", tuple(x.shape), "-> y", tuple(ym.shape), "| query norm:", mplus.memory.query_norm,
      "| MemoryPlus(x) == W2(y ⊙ silu(W1 x)):", torch.allclose(ym, gated, rtol=1e-5, atol=1e-6))
torch.testing.assert_close(ym, gated, rtol=1e-5, atol=1e-6)

shared = memlab.SharedValues(32**2, d_in)
layers = nn.ModuleList([memlab.MemoryPlus(d_in, n_keys=32, heads=2, topk=8, values=shared) for _ in range(3)])
own = [memlab.MemoryPlus(d_in, n_keys=32, heads=2, topk=8) for _ in range(3)]
n_shared, n_own = (sum(p.numel() for p in nn.ModuleList(m).parameters()) for m in (layers, own))
print(f"3 layers, one value pool: {n_shared:,} parameters; each with its own values: {n_own:,} "
      f"(difference = 2 pools of {shared.weight.numel():,})")
assert sum(p is shared.weight for p in layers.parameters()) == 1  # the pool is one parameter, counted once
assert n_own - n_shared == 2 * shared.weight.numel()

# %% [markdown]
# ## 7. Parameters and work per token
#
# A memory layer holds many parameters but touches few of them per token. Counted with each module's
# `flops_per_token()` (multiply-adds) next to the dense layers they replace:

# %%
# NBVAL_CHECK_OUTPUT
ffn = nn.Sequential(nn.Linear(d_in, 4 * d_in), nn.GELU(), nn.Linear(4 * d_in, d_in))
entries = [
    ("nn.Linear(64, 32)", nn.Linear(d_in, d_out, bias=False), d_in * d_out),
    ("HashMemory(64, 32, τ=8)", hm, hm.flops_per_token()),
    ("FFN 64 -> 256 -> 64", ffn, 2 * d_in * 4 * d_in),
    ("MemoryBlock(64, τ=8, e=2)", block, block.flops_per_token()),
    ("ProductKeyMemory(n=32, H=2, k=8)", pkm, pkm.flops_per_token()),
    ("MemoryPlus(n=32, H=2, k=8)", mplus, mplus.flops_per_token()),
]
print(f"{'module':34s} {'parameters':>11s} {'multiply-adds/token':>20s}")
for name, module, ops in entries:
    print(f"{name:34s} {sum(t.numel() for t in module.parameters()):11,d} {ops:20,d}")
linear_params, hm_params = d_in * d_out, hm.tables.numel()
print(f"\nHashMemory / nn.Linear: {hm_params / linear_params:.0f}x the parameters (2^τ/τ), "
      f"{hm.flops_per_token() / (d_in * d_out):.2f}x the multiply-adds")
assert hm_params == linear_params * 2**tau // tau  # K·2^τ·d_out = (d_in/τ)·2^τ·d_out: exactly 2^τ/τ = 32×
assert hm.flops_per_token() == hm.K * d_out + d_in  # K rows of d_out summed, plus ~1 op per input for p(z)

# %% [markdown]
# Even at toy size the pattern of the papers shows: `HashMemory` stores 2^τ/τ times the parameters of the `nn.Linear`
# it replaces, yet does less work per token (K = 8 rows of 32 plus the hashing). The per-layer and per-model numbers of the
# papers (MemoryFormer Table 1, Figure 1) come from `memlab.flops` and `python -m memlab compare`.
#
# ## 8. A first look at row usage
#
# A memory is only as big as the part of it that gets read. `memlab.stats` summarises a histogram of row hits
# (Lample et al. 2019; MemoryFormer Figure 4): the fraction of rows used, the KL divergence from uniform use, the
# Gini coefficient. Even perfectly uniform reads show a KL above 0 from a finite sample, so each histogram is set
# next to a reference of the same shape and number of hits drawn uniformly at random (the mean of 20 draws):

# %%
n_tokens = 512 if FAST else 8192
xs = torch.randn(n_tokens, d_in)
hash_counts = stats.hash_bucket_counts(hm.codes(xs), tau)  # (K, 2^τ)
pkm_counts = stats.pkm_row_counts(pkm.lookup(xs)[0], pkm.n_values)  # (heads, n²)
gen = torch.Generator().manual_seed(0)


def uniform_reference(counts, draws=20):
    """Mean usage statistics of histograms of the same shape and hits per row, drawn uniformly at random."""
    groups, rows = counts.shape
    hits = int(counts[0].sum())
    sims = [stats.usage_summary(torch.stack([torch.bincount(torch.randint(0, rows, (hits,), generator=gen),
                                                            minlength=rows) for _ in range(groups)]).double())
            for _ in range(draws)]
    return {key: sum(sim[key] for sim in sims) / draws for key in ("fraction_used", "kl_uniform", "gini")}


usage = {}
for name, counts in (("HashMemory buckets", hash_counts), ("PKM values", pkm_counts)):
    s, ref = stats.usage_summary(counts), uniform_reference(counts)
    usage[name] = s["kl_uniform"] / ref["kl_uniform"]
    print(f"{name:19s}: {s['rows']:5d} rows, {s['hits']:9,.0f} hits, used {s['fraction_used']:.3f} "
          f"(uniform {ref['fraction_used']:.3f}), KL from uniform {s['kl_uniform']:.4f} nats "
          f"(uniform draws {ref['kl_uniform']:.4f}, ratio {usage[name]:.2f}), Gini {s['gini']:.3f} "
          f"(uniform {ref['gini']:.3f})")
assert 0.8 < usage["HashMemory buckets"] < 1.25  # sign hashing of isotropic inputs: as even as uniform draws
assert usage["PKM values"] > 2  # product keys at initialisation: clearly less even than uniform

# %% [markdown]
# On isotropic inputs the sign hash reads its buckets exactly as evenly as uniform random draws: its KL is the
# sampling-noise floor. A freshly initialised product-key memory does not — its KL is several times the floor,
# because a value is read only when both of its half-keys make their half's top-k (notebook 03 measures this in
# detail). With trained weights and real text the picture changes again (dead rows, hot rows): notebooks 05 and 08
# measure it.
#
# ## 9. Map of the series
#
# | notebook | what it teaches |
# |---|---|
# | **00 tour** | this notebook: the two methods as addressing → reading, the environment, one demo per layer |
# | **01 LSH & product quantization** | random-hyperplane LSH (1 − θ/π), sign hashing as hypercube vertices, why a LayerNorm balances buckets; product quantization at equal storage and equal bits; exact product-key top-k, its counted and measured cost |
# | **02 MemoryFormer layer** | the Memory Layer built step by step: p(z) and its closed form, temperature, gradients, the Memory Block, Tables 1, 3, 5 and Figure 1, FLOPs against measured time |
# | **03 product keys & Memory+** | one product-key lookup by hand, exactness, multi-head reads, the top-k softmax, swilu gating, shared values, qk-norm, parameters vs FLOPs, row usage |
# | **04 Triton kernels** | the weighted EmbeddingBag as Triton kernels written in cells you can edit and run (under the interpreter without a GPU), checked against torch: forward, backward (atomics vs reverse indices), the fused MemoryFormer kernel, roofline arithmetic and GB/s |
# | **05 tiny model training** | one training step written by hand, then one small GPT with dense, MoE, MemoryFormer, PKM, Memory+ or PEER layers trained on CPU on CPython's documentation, and its results read honestly |
# | **06 ablations** | the papers' ablation tables re-run at tiny scale with 3 seeds and confidence intervals, each with a computed verdict |
# | **07 factual capacity** | what memory layers are for: bits of facts per parameter, a synthetic knowledge base scored in bits, a claim written before the results, architectures at matched FLOPs |
# | **08 bucket and key explorer** | dashboards for row usage (LSH playground, trained MemoryFormer tables, product-key maps and their top-k softmax mass), and why trained hash tables use few of their rows |
# | **09 decode roofline** | one decode step against batch size for dense, MoE, PKM, Memory+ and MemoryFormer layers: bytes and FLOPs counted, time measured on stacks larger than the cache, modelled for this CPU and an H100 |
# | **10 memory parallelism** | one value table sharded by columns over several processes (torch.distributed), its exchange, bytes and a 2-rank training run |
#
# ## Summary
#
# * `memlab.embedding_bag` is the reading step of both layers: a weighted gather-and-sum, equal to the explicit
#   formula exactly, and the backend the environment report names gives the torch reference's numbers.
# * `HashMemory` = addressing (sign codes → rows k·2^τ + h, weights p(z)) then reading, equal to the fused
#   `hash_read`; p(z) in closed form equals the softmax over all 2^τ buckets to < 1e-12.
# * `MemoryBlock` = ML2(LayerNorm(ML1(x))); `ProductKeyMemory` = top-k lookup then one bag of heads × top-k rows;
#   `MemoryPlus` = W2(y ⊙ silu(W1 x)); a `SharedValues` pool is one parameter however many layers read it.
# * Memory for compute: `HashMemory(64, 32, τ=8)` holds exactly 2^τ/τ = 32× the parameters of `nn.Linear(64, 32)`
#   and does K·d_out + d_in = 320 multiply-adds per token against its 2,048.
# * On random inputs the hash reads its buckets as evenly as uniform draws; a fresh product-key memory does not.
#
# ## Exercises
#
# ### Exercise 1
#
# How many parameters does `HashMemory(512, 512, tau=8)` hold, and how many multiply-adds does it do per token?
# Compare with `nn.Linear(512, 512)`. (Build it and check with `flops_per_token()`.)
#
# <details><summary>Answer</summary>
#
# K = 512/8 = 64 tables × 2⁸ = 256 rows × 512 = 8,388,608 parameters (32 MiB in fp32), against 262,144 for the linear
# layer: 32× more. Per token it sums K = 64 rows of 512 (32,768 multiply-adds) plus ~512 for hashing and p(z):
# `flops_per_token()` = 33,280, about 8× fewer than the linear layer's 262,144.
# </details>
#
# ### Exercise 2
#
# Which `HashMemory` row does chunk k of a token read if all its τ numbers are negative? If all are ≥ 0?
#
# <details><summary>Answer</summary>
#
# All negative: every bit is 0, bucket 0, row k·2^τ. All ≥ 0 (zero counts as +): every bit is 1, bucket 2^τ − 1, row
# k·2^τ + 2^τ − 1. `hm.address(x)[0]` shows it; the offsets k·2^τ are `hm.table_offsets`.
# </details>
#
# ### Exercise 3
#
# A `ProductKeyMemory` with `n_keys=1024, heads=4, topk=32` and d_model = 1024: how many value rows, and how many
# rows does one token read?
#
# <details><summary>Answer</summary>
#
# n² = 1,048,576 value rows; at width 1024 that is 2³⁰ floats = 4 GiB in fp32 (`pkm.memory_bytes()`), under memlab's
# default 8 GB build guard (`max_memory_bytes`). One token reads heads × topk = 4 × 32 = 128 rows, i.e. 128 × 1024 of
# the 2³⁰ values: one `embedding_bag` with a bag of 128.
# </details>
#
# ### Exercise 4 (build): the reading step
#
# Write `my_weighted_gather(table, indices, weights)`, the reading step both layers share:
# `out[b] = Σ_j weights[b, j] · table[indices[b, j]]` for a table (R, d), indices (B, n) and weights (B, n), returning
# (B, d). Use `index_select` (or `gather`, or indexing) and a sum — not `memlab.embedding_bag`, which the checker
# compares you with on duplicate rows, zero and negative weights, bags of one row and float64 tables.

# %%
def my_weighted_gather(table, indices, weights):
    raise NotImplementedError  # your code: gather the rows, weight them, sum each bag


# %%
memlab.exercises.check_weighted_gather(my_weighted_gather)

# %% [markdown]
# <details><summary>Answer</summary>
#
# ```python
# def my_weighted_gather(table, indices, weights):
#     B, n = indices.shape
#     rows = table.index_select(0, indices.reshape(-1)).view(B, n, -1)  # (B, n, d): the gathered rows
#     return (weights.unsqueeze(-1).to(table.dtype) * rows).sum(dim=1)  # weight each row, sum over the bag
# ```
# This materialises the (B, n, d) gathered rows; `F.embedding_bag` and memlab's kernels (notebook 04) sum as they
# gather and never store them — the same numbers, fewer bytes moved.
# </details>
