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
# # 00 — A tour of memlab
#
# memlab is a small lab for **memory layers**: layers that replace dense matrix multiplies by reading a few rows of a
# large table. It teaches two methods side by side:
#
# * **MemoryFormer** (Ding et al., NeurIPS 2024, §2 — the Memory Layer and the Memory Block): every fully-connected
#   layer becomes K hash tables; an input chunk's sign pattern picks one row per table.
# * **Product-key memory** and **Memory+** (Lample et al. 2019; Berges, Oğuz et al., *Memory Layers at Scale*,
#   ICML 2025, §2–3): a query scores n² keys through two sets of n half-keys and reads the top-k values.
#
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
# and is what `HashMemory.forward` calls. This notebook checks the environment, runs each layer
# once on tiny inputs, verifies "addressing → reading" numerically, and maps the rest of the series.

# %%
import memlab

FAST = memlab.fast_mode()

import torch
from torch import nn

from memlab import hashing, stats

torch.manual_seed(0)
print("memlab", memlab.__version__, "| fast mode:", FAST)

# %% [markdown]
# ## Environment
#
# `memlab.environment_report()` lists versions and devices. On a CPU-only machine the default backend is `torch`
# (`F.embedding_bag`); with CUDA and triton installed it is memlab's Triton kernel. `MEMLAB_BACKEND=torch|triton`
# overrides the choice, and `TRITON_INTERPRET=1` (set before importing memlab) runs the Triton kernels on the CPU.

# %%
report = memlab.environment_report()
for key, value in report.items():
    print(f"{key:>18s}: {value}")
assert report["default_backend"] in ("torch", "triton")
assert report["fast_mode"] == str(FAST)

# %% [markdown]
# ## The one primitive: `memlab.embedding_bag`
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

# %% [markdown]
# ## MemoryFormer's Memory Layer: `HashMemory`
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
# ## The Memory Block: `MemoryBlock`
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
print("x", tuple(x.shape), "-> y", tuple(yb.shape))
assert yb.shape == x.shape

# %% [markdown]
# ## Product-key memory: `ProductKeyMemory`
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
# ## Memory+: `MemoryPlus`
#
# Memory Layers at Scale's version: the product-key read y is gated, W2(y ⊙ silu(W1 x)), and queries and keys are
# normalised (qk-norm). Several layers can share one value pool (`SharedValues`).

# %%
torch.manual_seed(0)
mplus = memlab.MemoryPlus(d_in, n_keys=32, heads=2, topk=8)
print(mplus)
ym = mplus(x)
print("x", tuple(x.shape), "-> y", tuple(ym.shape), "| query norm:", mplus.memory.query_norm)
assert ym.shape == x.shape

shared = memlab.SharedValues(32**2, d_in)
layers = [memlab.MemoryPlus(d_in, n_keys=32, heads=2, topk=8, values=shared) for _ in range(3)]
print("3 layers read one value pool:", all(m.memory.values is shared for m in layers))

# %% [markdown]
# ## Parameters and work per token
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
assert hm_params > linear_params and hm.flops_per_token() < d_in * d_out

# %% [markdown]
# Even at toy size the pattern of the papers shows: `HashMemory` stores 2^τ/τ times the parameters of the `nn.Linear`
# it replaces, yet does less work per token (K = 8 rows of 32 plus the hashing). The per-layer and per-model numbers of the
# papers (MemoryFormer Table 1, Figure 1) come from `memlab.flops` and `python -m memlab compare`.
#
# ## A first look at row usage
#
# A memory is only as big as the part of it that gets read. `memlab.stats` summarises a histogram of row hits
# (Lample et al. 2019; MemoryFormer Figure 4). On random inputs both addressing schemes spread reads over the whole memory:

# %%
n_tokens = 512 if FAST else 8192
xs = torch.randn(n_tokens, d_in)
hash_counts = stats.hash_bucket_counts(hm.codes(xs), tau)  # (K, 2^τ)
pkm_counts = stats.pkm_row_counts(pkm.lookup(xs)[0], pkm.n_values)  # (heads, n²)
for name, counts in (("HashMemory buckets", hash_counts), ("PKM values", pkm_counts)):
    s = stats.usage_summary(counts)
    print(f"{name:19s}: {s['rows']:5d} rows, {s['hits']:9,.0f} hits, used {s['fraction_used']:.3f}, "
          f"KL from uniform {s['kl_uniform']:.3f} nats, Gini {s['gini']:.3f}")
    assert s["fraction_used"] > 0.5

# %% [markdown]
# With trained weights and real text the picture can change (dead rows, hot rows) — notebooks 02, 03 and 05 measure it.
#
# ## Map of the series
#
# | notebook | what it teaches |
# |---|---|
# | **00 tour** | this notebook: the two methods as addressing → reading, the environment, one demo per layer |
# | **01 LSH & product quantization** | random-hyperplane LSH (1 − θ/π), sign hashing as hypercube vertices, why a LayerNorm balances buckets; product quantization; exact product-key top-k and its O(n·d) cost |
# | **02 MemoryFormer layer** | the Memory Layer in detail: p(z) and its closed form, temperature, gradients, the Memory Block, FLOPs (Table 1, Figure 1) |
# | **03 product keys & Memory+** | product-key memory, multi-head lookup, qk-norm, swilu gating, shared values |
# | **04 Triton kernels** | the `embedding_bag` kernel: forward, backward strategies (atomics, reverse indices), correctness and GB/s |
# | **05 tiny-model training** | a small language model with memory layers trained on CPU, compared with its dense baseline |
#
# Planned later: ablations on τ, K and top-k; interactive bucket-frequency visualisations (MemoryFormer Figure 4).
#
# ## Exercises
#
# **1.** How many parameters does `HashMemory(512, 512, tau=8)` hold, and how many multiply-adds does it do per token?
# Compare with `nn.Linear(512, 512)`. (Build it and check with `flops_per_token()`.)
#
# <details><summary>Answer</summary>
#
# K = 512/8 = 64 tables × 2⁸ = 256 rows × 512 = 8,388,608 parameters (32 MiB in fp32), against 262,144 for the linear
# layer: 32× more. Per token it sums K = 64 rows of 512 (32,768 multiply-adds) plus ~512 for hashing and p(z):
# `flops_per_token()` = 33,280, about 8× fewer than the linear layer's 262,144.
# </details>
#
# **2.** Which `HashMemory` row does chunk k of a token read if all its τ numbers are negative? If all are ≥ 0?
#
# <details><summary>Answer</summary>
#
# All negative: every bit is 0, bucket 0, row k·2^τ. All ≥ 0 (zero counts as +): every bit is 1, bucket 2^τ − 1, row
# k·2^τ + 2^τ − 1. `hm.address(x)[0]` shows it; the offsets k·2^τ are `hm.table_offsets`.
# </details>
#
# **3.** A `ProductKeyMemory` with `n_keys=1024, heads=4, topk=32` and d_model = 1024: how many value rows, and how many
# rows does one token read?
#
# <details><summary>Answer</summary>
#
# n² = 1,048,576 value rows; at width 1024 that is 2³⁰ floats = 4 GiB in fp32 (`pkm.memory_bytes()`), under memlab's
# default 8 GB build guard (`max_memory_bytes`). One token reads heads × topk = 4 × 32 = 128 rows, i.e. 128 × 1024 of
# the 2³⁰ values: one `embedding_bag` with a bag of 128.
# </details>
