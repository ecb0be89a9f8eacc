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
# # 03 · Product keys and Memory+
#
# **What this notebook teaches.** A product-key memory stores $N = n^2$ values but scores only $2n$ half-keys per
# query, and still finds the *exact* top-$k$ of all $N$ keys. We follow one lookup step by step (query → halves → half
# scores → two top-$k$ → $k^2$ candidates → top-$k$ → softmax → weighted read) and check it equals
# `memlab.ProductKeyMemory`; test exactness against brute force over $n^2$ keys; then multi-head reads, the softmax
# over the top-$k$ (and how little of the full softmax it keeps at initialisation), Memory+'s swilu gating, values
# shared across layers, qk-norm and the bound it puts on a score, a parameters-vs-FLOPs table, and usage statistics
# of the value rows (`memlab.stats`).
#
# **Paper sections.** Large Memory Layers with Product Keys (Lample et al., NeurIPS 2019, arXiv 1907.05242): §3
# (the memory: keys, top-$k$, softmax, weighted sum, multi-head memory; product keys and the exact top-$k$),
# and its usage statistics (fraction of rows used, KL from uniform). Memory Layers at Scale (Berges, Oğuz et al.,
# ICML 2025, arXiv 2412.09764): §2 "Memory layers", §3 "Scaling memory layers" (shared memory, Memory+ with swilu
# gating, qk-norm).
#
# **Before this:** notebook 00 (the layer as addressing → reading) and notebook 01 §4–5 (product quantization, and the
# proof that two top-$k$'s over $n$ give the exact top-$k$ over $n^2$).

# %%
import memlab; FAST = memlab.fast_mode()

import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from memlab import flops, product_keys, stats, plots

torch.manual_seed(0)
print("fast mode:", FAST)

# %% [markdown]
# ## 1. One lookup, step by step
#
# A small memory: $d=32$, $n=16$ half-keys per half (so $N = 256$ values), $H=2$ heads, top-$k=4$. The query width
# $k_{dim}$ defaults to $d/2 = 16$, so each half is 8 numbers.

# %%
torch.manual_seed(0)
pkm = memlab.ProductKeyMemory(32, n_keys=16, heads=2, topk=4)
x = torch.randn(3, 32)  # 3 tokens
n, H, k, half = pkm.n_keys, pkm.heads, pkm.topk, pkm.k_dim // 2
print(pkm)
print("half-keys:", tuple(pkm.keys.shape), "= (H, 2, n, k_dim/2);  values:", tuple(pkm.values.weight.shape))

# %% [markdown]
# **Query and halves.** $q = W_q x$ per head, split into $q_1, q_2$ of $k_{dim}/2$ numbers each.

# %%
q = pkm.query(x).view(3, H, pkm.k_dim)  # (tokens, H, k_dim)
q1, q2 = q[..., :half], q[..., half:]
torch.testing.assert_close(torch.stack([q1, q2], dim=-2), pkm.queries(x))

# %% [markdown]
# **Half scores.** Key $(i, j)$ is the concatenation $[K^1_i, K^2_j]$, so its score splits:
# $\;\text{score}(i,j) = q_1\cdot K^1_i + q_2\cdot K^2_j$. Only $2n$ dot products per head, not $n^2$.

# %%
K1, K2 = pkm.keys[:, 0], pkm.keys[:, 1]  # (H, n, half) each
s1 = torch.einsum("thd,hnd->thn", q1, K1)  # (tokens, H, n)
s2 = torch.einsum("thd,hnd->thn", q2, K2)
lib_s1, lib_s2 = pkm.scores(x)
torch.testing.assert_close(s1, lib_s1)
torch.testing.assert_close(s2, lib_s2)

# %% [markdown]
# **Two top-$k$, then $k^2$ candidates, then top-$k$.** Take the $k$ best of each half, form all $k\times k$ sums, keep
# the $k$ best. The winner $(i, j)$ is value row $i\cdot n + j$.

# %%
top1, i1 = s1.topk(k, dim=-1)  # (tokens, H, k)
top2, i2 = s2.topk(k, dim=-1)
candidates = top1.unsqueeze(-1) + top2.unsqueeze(-2)  # (tokens, H, k, k)
print("token 0, head 0: the k×k candidate scores (rows: best q1·K1, columns: best q2·K2)")
print(candidates[0, 0].detach().numpy().round(3))
best, flat = candidates.flatten(-2).topk(k, dim=-1)
i = i1.gather(-1, flat // k)
j = i2.gather(-1, flat % k)
indices = i * n + j  # (tokens, H, k) rows of the n² values

# %% [markdown]
# **Softmax and the weighted read.** The weights are a softmax over the $k$ selected scores; the output sums
# $w\cdot V[\text{row}]$ over the top-$k$ **and over the heads** (all heads read the same value table).

# %%
weights = torch.softmax(best, dim=-1)
V = pkm.values.weight
y_manual = (weights.unsqueeze(-1) * V[indices]).sum(dim=(1, 2))  # Σ_heads Σ_topk w · V[row]

lib_idx, lib_w = pkm.lookup(x)
assert torch.equal(indices, lib_idx)
torch.testing.assert_close(weights, lib_w)
torch.testing.assert_close(y_manual, pkm(x))
print("manual lookup == ProductKeyMemory.lookup, manual read == ProductKeyMemory.forward:", tuple(y_manual.shape))

# %% [markdown]
# ## 2. Exactness: the same answer as brute force over all $n^2$ keys
#
# Why two top-$k$'s suffice: suppose pair $(i, j)$ is in the true top-$k$ but $i$ is *not* among the $k$ best first
# halves. Then there are $k$ indices $i'$ with $q_1\cdot K^1_{i'} > q_1\cdot K^1_i$, and each pair $(i', j)$ beats
# $(i, j)$ — $k$ pairs better than a member of the top-$k$, a contradiction. The same holds for $j$. So every top-$k$
# pair lies in the $k\times k$ grid of candidates. Test it on many random queries (float64, so no ties):

# %%
torch.manual_seed(1)
n_queries = 200 if FAST else 2000
checked = 0
for n_, k_ in ((8, 1), (8, 8), (64, 4), (64, 16), (256, 32)):
    a = torch.randn(n_queries, n_, dtype=torch.float64)
    b = torch.randn(n_queries, n_, dtype=torch.float64)
    fast_scores, fast_idx = product_keys.product_topk(a, b, k_)
    brute_scores, brute_idx = product_keys.bruteforce_topk(a, b, k_)
    assert torch.equal(fast_idx, brute_idx)  # same rows, in the same (descending) order
    torch.testing.assert_close(fast_scores, brute_scores)
    checked += n_queries
print(f"product top-k == brute-force top-k over n² keys for {checked} queries "
      f"(n up to 256, i.e. 65,536 keys; k up to 32)")

# %% [markdown]
# The layer itself against a brute force that materialises every one of the $n^2$ full keys $[K^1_i, K^2_j]$:

# %%
full_keys = torch.cat([K1.unsqueeze(2).expand(H, n, n, half), K2.unsqueeze(1).expand(H, n, n, half)], dim=-1)
full_scores = torch.einsum("thd,hnd->thn", q, full_keys.reshape(H, n * n, pkm.k_dim))  # (tokens, H, n²)
brute_best, brute_rows = full_scores.topk(k, dim=-1)
assert torch.equal(brute_rows, lib_idx)
torch.testing.assert_close(brute_best, best)
print("layer's rows == top-k over all", n * n, "materialised keys")

# %% [markdown]
# ## 3. Softmax over the top-$k$, and heads summed into one bag
#
# The softmax runs over the $k$ selected scores only. That equals the softmax over all $N$ scores *restricted to the
# top-$k$ and renormalised* — the other $N-k$ keys are simply dropped. Each head's weights sum to 1, so the output is a
# sum of $H$ convex combinations of value rows.

# %%
# NBVAL_CHECK_OUTPUT
full_softmax = torch.softmax(full_scores, dim=-1).gather(-1, brute_rows)
torch.testing.assert_close(full_softmax / full_softmax.sum(-1, keepdim=True), lib_w)
torch.testing.assert_close(lib_w.sum(-1), torch.ones(3, H))
kept = full_softmax.sum(-1).detach()
score_std = full_scores.std(-1).detach()
print(f"share of the full softmax mass kept by the top-{k} of N = {n * n} keys, per token (rows) and head (columns):")
print(kept.numpy().round(3))
print(f"a uniform softmax would keep k/N = {k / (n * n):.4f}; the scores' std over the N keys is "
      f"{score_std.min():.2f}–{score_std.max():.2f}")
assert 0.02 < kept.min() and kept.max() < 0.08  # 2–8 %: a few times k/N = 1.6 %, far from 1
assert score_std.max() < 1.0  # at initialisation the N scores are close together

# %% [markdown]
# At initialisation the top-$k$ keeps only **3–6 %** of the full softmax mass. The scores of a fresh memory are small
# and close together (std ≈ 0.4–0.5 over the $n^2 = 256$ keys here: a Xavier-initialised query against half-keys
# drawn from $U(\pm 1/\sqrt{k_{dim}})$), so the softmax over all $N$ keys is nearly uniform: each key gets about
# $1/N$, and the $k$ best get a few times $k/N = 1.6\,\%$ because they sit one or two std above the rest. Dropping
# the other $N - k$ keys therefore changes the read a lot compared with the full softmax — the layer never computes
# that full softmax, and renormalising over the top-$k$ makes the weights sum to 1 anyway. As training separates the
# scores the top-$k$ share grows; notebook 08 shows it for a trained model.

# %%
# Multi-head: the H·k reads form ONE bag of the weighted EmbeddingBag; equivalently, H per-head reads summed.
per_head = sum(memlab.embedding_bag(V, lib_idx[:, h], lib_w[:, h]) for h in range(H))
one_bag = memlab.embedding_bag(V, lib_idx.flatten(-2), lib_w.flatten(-2))
torch.testing.assert_close(per_head, pkm(x))
torch.testing.assert_close(one_bag, pkm(x))
print(f"bag size = heads × top-k = {H} × {k} = {lib_idx.flatten(-2).shape[-1]} rows per token")

# %% [markdown]
# ## 4. Memory+: swilu gating
#
# Memory+ wraps the lookup $y$ in a gate: $\;\text{Memory+}(x) = W_2\big(y \odot \operatorname{silu}(W_1 x)\big)$ — two
# extra $d\times d$ projections (the paper's ablation finds swilu beats plain gating), with qk-norm on by default.

# %%
torch.manual_seed(2)
mp = memlab.MemoryPlus(32, n_keys=16, heads=2, topk=4)
x = torch.randn(5, 32)
idx, w = mp.lookup(x)
y = memlab.embedding_bag(mp.memory.values.weight, idx.flatten(-2), w.flatten(-2))  # the product-key read
manual = mp.out_proj(y * F.silu(mp.gate_proj(x)))  # W2(y ⊙ silu(W1 x))
torch.testing.assert_close(manual, mp(x))
print(mp)
print("MemoryPlus(x) == W2(y ⊙ silu(W1 x))")

# %% [markdown]
# ## 5. One value pool, shared by several layers
#
# Memory Layers at Scale shares one value table among all memory layers; each layer keeps its own keys and queries.
# `memlab.SharedValues` is that pool: pass it to several layers and it is **one** parameter that collects gradient
# from all of them.

# %%
torch.manual_seed(3)
pool = memlab.SharedValues(16**2, 32)
layer_a = memlab.ProductKeyMemory(32, n_keys=16, heads=2, topk=4, values=pool)
layer_b = memlab.ProductKeyMemory(32, n_keys=16, heads=2, topk=4, values=pool)
stack = nn.ModuleList([layer_a, layer_b])
params = list(stack.parameters())
assert sum(p is pool.weight for p in params) == 1  # counted once
print(f"parameters: {sum(p.numel() for p in params):,} in the stack; the pool holds {pool.weight.numel():,} of them once")

x = torch.randn(6, 32)


def pool_grad(use_a: bool, use_b: bool) -> torch.Tensor:
    """Gradient on the pool from a residual 2-layer stack h = x + a(x); out = h + b(h)."""
    pool.weight.grad = None
    h = x + layer_a(x) if use_a else x
    out = h + layer_b(h) if use_b else h
    out.square().sum().backward()
    return pool.weight.grad.clone()


g_both = pool_grad(True, True)
rows_a = layer_a.lookup(x)[0].unique()
rows_b = layer_b.lookup(x + layer_a(x))[0].unique()
rows_with_grad = (g_both.abs().sum(-1) > 0).nonzero().squeeze(-1)
assert torch.equal(rows_with_grad, torch.cat([rows_a, rows_b]).unique())
print(f"rows read by layer a: {rows_a.numel()}, by layer b: {rows_b.numel()}, "
      f"rows of the shared pool with gradient: {rows_with_grad.numel()} (their union)")

# %% [markdown]
# ## 6. qk-norm: what it does to the score scale
#
# Without normalisation a score is a raw dot product: scale the input by $c$ and every score scales by $c$, so the
# softmax over the top-$k$ sharpens towards one value (or flattens as $c\to 0$). With `query_norm="qk"` each query
# half is RMS-normalised (with a learnable gain $g$, initialised to 1), each half-key is RMS-normalised, and each
# **half-score** is divided by $\sqrt{k_{dim}/2}$. An RMS-normalised vector of $h = k_{dim}/2$ numbers has norm
# $\sqrt{h}$, so by Cauchy–Schwarz
#
# $$|q_1\cdot K^1_i| \;\le\; \frac{\lVert g\odot \hat q_1\rVert\,\lVert \hat K^1_i\rVert}{\sqrt{h}}
#   \;\le\; \max_j |g_j|\,\sqrt{h},$$
#
# which is $\sqrt{k_{dim}/2}$ **per half-score, while the gains are 1**. A full score is the sum of two half-scores,
# so $|\text{score}(i,j)| \le 2\sqrt{k_{dim}/2}$; and once training moves the gains the bound scales with $\max|g|$.
# All three, whatever the input scale:

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(4)
plain = memlab.ProductKeyMemory(64, n_keys=32, heads=2, topk=8, query_norm=None)
qk = memlab.ProductKeyMemory(64, n_keys=32, heads=2, topk=8, query_norm="qk")
qk.load_state_dict(plain.state_dict(), strict=False)  # same queries and keys; qk adds an RMSNorm gain (init 1)
x = torch.randn(256, 64)
bound = math.sqrt(qk.k_dim // 2)
print(f"  c    plain: score std   max weight     qk: score std   max weight   (qk half-score bound {bound:.2f})")
with torch.no_grad():
    qk_ref = qk.scores(x)[0]
    for c in (0.1, 1.0, 10.0, 100.0):
        sp, sq = plain.scores(c * x)[0], qk.scores(c * x)[0]
        wp, wq = plain.lookup(c * x)[1], qk.lookup(c * x)[1]
        print(f"{c:5g}   {sp.std().item():16.3f}   {wp.max(-1).values.mean().item():10.3f}"
              f"   {sq.std().item():16.3f}   {wq.max(-1).values.mean().item():10.3f}")
        torch.testing.assert_close(sq, qk_ref, rtol=1e-3, atol=1e-3)  # invariant to the input scale

    h1, h2 = qk.scores(x)
    full = h1.unsqueeze(-1) + h2.unsqueeze(-2)  # (tokens, H, n, n): every full score
    half_max, full_max = torch.maximum(h1.abs().max(), h2.abs().max()).item(), full.abs().max().item()
    print(f"gains 1:   max |half-score| = {half_max:.3f} ≤ √(k_dim/2) = {bound:.2f};   "
          f"max |full score| = {full_max:.3f} ≤ 2√(k_dim/2) = {2 * bound:.2f}")
    assert half_max <= bound + 1e-5 and bound < full_max <= 2 * bound + 1e-5  # the full score exceeds √(k_dim/2)

    qk.query_norm_layer.weight.fill_(2.0)  # as if training had doubled the gains
    g1, g2 = qk.scores(x)
    gain_max = torch.maximum(g1.abs().max(), g2.abs().max()).item()
    print(f"gains 2:   max |half-score| = {gain_max:.3f} > √(k_dim/2); ≤ max|g|·√(k_dim/2) = {2 * bound:.2f}")
    assert bound < gain_max <= 2 * bound + 1e-5
    qk.query_norm_layer.weight.fill_(1.0)

# %% [markdown]
# The plain memory's scores (and so its softmax sharpness) follow the activations' scale — a source of instability
# when activations drift in training. With qk-norm the score scale is fixed by construction; the softmax temperature
# is then whatever the (learnable) RMSNorm gains make it.
#
# ## 7. Parameters vs FLOPs
#
# A product-key memory is the opposite of a dense layer: a huge table, of which each token reads $H\cdot k$ rows.
# Sizes at $d = 1024$, $H = 4$, $k = 32$ (the paper's defaults with $n = 1024$), built on the meta device (no memory
# allocated), next to a dense FFN $d\to 4d\to d$:

# %%
# NBVAL_CHECK_OUTPUT
d = 1024
table = [{"layer": "dense FFN d→4d→d", "values": 0, "params (M)": 8 * d * d / 1e6, "fp16 GB": 8 * d * d * 2 / 1e9,
          "MACs/token (M)": 2 * flops.linear_flops_per_token(d, 4 * d) / 1e6}]
for n_keys in (128, 256, 512, 1024):
    with torch.device("meta"):
        m = memlab.ProductKeyMemory(d, n_keys=n_keys, heads=4, topk=32)
    table.append({"layer": f"PKM n={n_keys}", "values": m.n_values,
                  "params (M)": sum(p.numel() for p in m.parameters()) / 1e6,
                  "fp16 GB": m.memory_bytes(torch.float16) / 1e9, "MACs/token (M)": m.flops_per_token() / 1e6})
with torch.device("meta"):
    m = memlab.MemoryPlus(d, n_keys=1024, heads=4, topk=32)
table.append({"layer": "Memory+ n=1024", "values": m.memory.n_values,
              "params (M)": sum(p.numel() for p in m.parameters()) / 1e6,
              "fp16 GB": m.memory_bytes(torch.float16) / 1e9, "MACs/token (M)": m.flops_per_token() / 1e6})
for row in table:
    row["params / MAC"] = row["params (M)"] / row["MACs/token (M)"]
print(plots.format_table(table, floatfmt=",.4g"))
ffn, pkm_1m = table[0], table[4]
assert 120 < pkm_1m["params (M)"] / ffn["params (M)"] < 130 and 0.4 < pkm_1m["MACs/token (M)"] / ffn["MACs/token (M)"] < 0.6

# %% [markdown]
# At $n = 1024$ the memory holds ~1 M values and ~1.07 B parameters — 128× the FFN — while doing about half the FFN's
# multiply-adds per token. As $n$ grows the parameters grow like $n^2$ but the FLOPs only like $n$ (the half-key
# scores). The cost that does grow is *bytes*: a 2 GB fp16 table that every token reads from at random.
#
# ## 8. Which values get used? (`memlab.stats`)
#
# A memory only helps if its rows are read. `stats.pkm_row_counts` builds the per-head histogram of reads,
# `stats.usage_summary` the statistics XLM's evaluator reported (fraction of rows used, KL from uniform, Gini, the
# fraction of rows that take 50/90/99 % of the hits). Random inputs through a freshly initialised memory, against a
# reference that picks rows uniformly at random with the same number of hits:

# %%
torch.manual_seed(5)
memory = memlab.ProductKeyMemory(64, n_keys=32, heads=4, topk=8)  # 1024 values
tokens = 512 if FAST else 4096
x = torch.randn(tokens, 64)
with torch.no_grad():
    idx, w = memory.lookup(x)
counts = stats.pkm_row_counts(idx, memory.n_values)  # (H, n²)
weighted = stats.pkm_row_counts(idx, memory.n_values, weights=w)
uniform_ref = stats.row_counts(torch.randint(0, memory.n_values, (tokens * memory.topk,)), memory.n_values)

summaries = [{"histogram": f"head {h}", **stats.usage_summary(counts[h])} for h in range(memory.heads)]
summaries.append({"histogram": "all heads", **stats.usage_summary(counts.sum(0))})
summaries.append({"histogram": "all heads, score-weighted", **stats.usage_summary(weighted.sum(0))})
summaries.append({"histogram": "uniform reference (1 head)", **stats.usage_summary(uniform_ref)})
print(f"{tokens} tokens × top-{memory.topk} per head over {memory.n_values} values")
print(plots.format_table(summaries, floatfmt=".3f"))

expected_used = 1 - (1 - 1 / memory.n_values) ** (tokens * memory.topk)
print(f"expected fraction used by uniform reads with {tokens * memory.topk} hits: {expected_used:.3f}")
assert all(s["gini"] > summaries[-1]["gini"] for s in summaries[: memory.heads])  # each head less even than uniform

# %%
fig, ax = plt.subplots(figsize=(7, 4))
plots.plot_usage({"head 0": counts[0], "head 1": counts[1], "uniform reference": uniform_ref}, ax=ax)
ax.set_title(f"value rows of a fresh product-key memory, most-hit first ({tokens} random tokens)")
plt.show()

# %% [markdown]
# Even at initialisation a product-key memory does not read its rows uniformly: the Gini coefficient and KL of the
# heads sit above the uniform reference, because a row's chance of being selected depends on both of its half-keys
# landing in the top-$k$ of their half. Lample et al. found BatchNorm on the queries (`query_norm="batch"`) raises
# usage in training; tracking these numbers during training is the way to see a memory collapse.
#
# ## Summary
#
# * One lookup built by hand — query halves, $2n$ half-scores, two top-$k$, the $k\times k$ grid, top-$k$, softmax,
#   weighted read — equals `memlab.ProductKeyMemory` exactly (indices equal, weights and output to float tolerance).
# * The product top-$k$ equals the brute-force top-$k$ over all $n^2$ keys for every one of thousands of random
#   queries (n up to 256, k up to 32), and the layer's rows equal the top-$k$ over its materialised keys.
# * The top-$k$ softmax is the full softmax restricted and renormalised; at initialisation the top-$k$ holds only
#   2–8 % of the full mass (asserted; 3–6 % here) because the scores are nearly uniform.
# * Memory+ is exactly $W_2(y \odot \operatorname{silu}(W_1 x))$; one `SharedValues` pool is one parameter and collects
#   gradient on exactly the union of rows its layers read.
# * qk-norm makes the scores independent of the input scale and bounds each half-score by $\max|g|\sqrt{k_{dim}/2}$
#   (a full score by twice that); at gains 1 a full score does exceed $\sqrt{k_{dim}/2}$ (asserted).
# * At $n = 1024$ a PKM holds ≈ 128× the parameters of a $d \to 4d \to d$ FFN for about half its multiply-adds;
#   at initialisation its heads read rows less evenly than uniform draws (Gini above the uniform reference).
#
# ## Exercises
#
# ### Exercise 1
#
# The candidate grid is $k\times k$. Could it be smaller — e.g. the top-$k$ pairs always lie in the first
# $k$ rows *and* on or above the anti-diagonal? How many candidates suffice, and why does the library still use $k^2$?
#
# <details><summary>Answer</summary>
#
# With both halves sorted descending, candidate $(a, b)$ (rank $a$ in half 1, rank $b$ in half 2, from 0) is beaten by
# every $(a', b')$ with $a'\le a$, $b'\le b$ — that is $(a+1)(b+1)-1$ pairs. So it can only be in the top-$k$ if
# $(a+1)(b+1)\le k$: about $k\ln k$ candidates instead of $k^2$. The library keeps the full $k^2$ grid because it is one
# dense `topk` on a small tensor (fast on GPUs, simple to vectorise), and $k^2 = 1024$ for $k = 32$ is negligible next
# to the $2n$ half-key scores.
# </details>
#
# ### Exercise 2
#
# For the paper's default (d = 1024, n = 1024, H = 4, k = 32, $k_{dim}$ = 512) count by hand the multiply-adds
# per token of each part of `ProductKeyMemory.flops_per_token()`, and say which dominates.
#
# <details><summary>Answer</summary>
#
# Queries $d\cdot H\cdot k_{dim} = 1024\cdot4\cdot512 = 2.10$ M; half-key scores $H\cdot n\cdot k_{dim} = 2.10$ M
# (two halves of $n$ keys of 256); candidates $H k^2 = 4096$; read $H k\, d = 131$ k. Total ≈ 4.33 M
# (`memlab.ProductKeyMemory(...).flops_per_token()` on the meta device agrees): the query projection and the half-key
# scores dominate; the read itself is 3 %. In *bytes*, though, the read dominates: $H k = 128$ random rows of 1024
# numbers per token.
# </details>
#
# ### Exercise 3
#
# Three Memory+ layers (n = 1024, d = 1024) either each own their values or share one pool. How many fp16 bytes
# of values in each case, and how many tokens does it take before a value row is expected to have been read once?
#
# <details><summary>Answer</summary>
#
# Own values: $3\times 2^{20}\times1024\times2$ B ≈ 6.4 GB; shared: 2.1 GB (`SharedValues(1024**2, 1024).memory_bytes(torch.float16)`).
# Each token reads $H k = 128$ rows per layer; with uniform reads a given row is hit with probability $\approx 128/2^{20}$
# per token and layer, so about 8 192 tokens per layer (≈ 2 730 with three layers reading a shared pool) before the
# expected count reaches 1 — each value row gets rare, sparse updates, which is why the paper gives values their own
# learning rate.
# </details>
#
# ### Exercise 4 (build): the exact product-key top-k
#
# Write `my_product_topk(scores1, scores2, k)`: given the two half-score tensors $q_1\cdot K^1_i$ and $q_2\cdot K^2_j$ of
# shape $(\dots, n)$, return `(scores, indices)` of shape $(\dots, k)$: the $k$ largest sums
# `scores1[i] + scores2[j]` over all $n^2$ pairs, sorted descending, and their rows $i\cdot n + j$ — without
# materialising the $n^2$ sums (section 2 proves the $k\times k$ grid is enough). Ties may break either way; the
# checker compares your sorted scores with the brute force and checks that each index is a distinct row whose
# score is the one you return beside it.

# %%
def my_product_topk(scores1, scores2, k):
    raise NotImplementedError  # your code: two top-k's, the k×k grid, one more top-k, rows i·n + j


# %%
memlab.exercises.check_product_topk(my_product_topk)

# %% [markdown]
# <details><summary>Answer</summary>
#
# ```python
# def my_product_topk(scores1, scores2, k):
#     n = scores1.shape[-1]
#     top1, idx1 = scores1.topk(k, dim=-1)                        # (..., k) best first halves
#     top2, idx2 = scores2.topk(k, dim=-1)                        # (..., k) best second halves
#     grid = (top1.unsqueeze(-1) + top2.unsqueeze(-2)).flatten(-2)  # (..., k·k) candidate sums
#     best, flat = grid.topk(k, dim=-1)                           # the k best candidates, sorted
#     i = idx1.gather(-1, torch.div(flat, k, rounding_mode="floor"))
#     j = idx2.gather(-1, flat % k)
#     return best, i * n + j
# ```
# This is `memlab.product_keys.product_topk`. A common slip is to pair the halves position by position
# (`top1 + top2`): that misses pairs such as (best first half, second-best second half).
# </details>
