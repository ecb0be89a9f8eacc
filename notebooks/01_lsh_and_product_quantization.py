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
# # 01 · Locality-sensitive hashing and product quantization
#
# **What this notebook teaches.** Both memory layers in this lab rest on an old idea from nearest-neighbour search,
# and every claim below is checked numerically:
#
# 1. **Random-hyperplane LSH**: two vectors at angle θ get the same sign bit with probability 1 − θ/π. MemoryFormer's
#    hash is sign hashing of input chunks: each chunk goes to a vertex of the hypercube {±1}^τ. We measure why a
#    **LayerNorm in front** matters for bucket balance.
# 2. **Product quantization**: split vectors into sub-vectors and quantize each with its own codebook — m·k stored
#    centroids stand for k^m codewords. More sub-spaces win at equal storage and lose at equal code bits.
# 3. **Product keys**: product quantization of the *keys* with m = 2. Two top-k's over n half-keys give the **exact**
#    top-k over n² keys, for O(n·d) instead of O(n²·d) multiply-adds — and we measure how much of that saving a CPU
#    turns into time.
#
# **Paper sections.** Charikar, "Similarity estimation techniques from rounding algorithms" (STOC 2002), §3 (random
# hyperplanes); MemoryFormer (Ding et al., NeurIPS 2024, arXiv 2411.12992), §2.1 (the hash of the Memory Layer) and
# Figure 4 (bucket use); Jégou et al., "Product quantization for nearest neighbor search" (TPAMI 2011), §II (product
# quantizers); Lample et al., "Large Memory Layers with Product Keys" (NeurIPS 2019, arXiv 1907.05242), §3 (product
# keys); Memory Layers at Scale (Berges, Oğuz et al., ICML 2025, arXiv 2412.09764), §2.
#
# **Before this:** notebook 00 (the two layers as addressing → reading, and `memlab.stats`).
#
# Library code used: `memlab.lsh`, `memlab.hashing`, `memlab.stats`, `memlab.quantization`, `memlab.product_keys`.

# %%
import memlab

FAST = memlab.fast_mode()

import math

import matplotlib.pyplot as plt
import torch

from memlab import hashing, lsh, product_keys, stats, plots
from memlab import quantization as pq
from memlab.lab.timing import time_side_by_side

# %matplotlib inline
torch.manual_seed(0)
print("fast mode:", FAST)

# %% [markdown]
# ## 1. Random hyperplanes: collision probability 1 − θ/π
#
# Draw a hyperplane through the origin with a Gaussian normal r. Two unit vectors u, v at angle θ fall on different
# sides exactly when the plane's trace in the (u, v) plane lands inside the angle between them — a 2-D event of
# probability θ/π. So
#
# $$P[\operatorname{sign}(r\cdot u) = \operatorname{sign}(r\cdot v)] = 1 - \theta/\pi,
# \qquad P[\text{all } b \text{ bits agree}] = (1-\theta/\pi)^b .$$
#
# `memlab.lsh.collision_curve` builds pairs at an exact angle and counts agreeing bits over many random planes.
# Every sample is a Bernoulli(1 − θ/π) draw, so we know the statistical error to expect.

# %%
n_pairs, n_planes = (500, 32) if FAST else (2000, 64)
thetas = torch.linspace(0, math.pi, 13, dtype=torch.float64)
curve = lsh.collision_curve(thetas, dim=32, n_pairs=n_pairs, n_planes=n_planes, seed=0)

max_dev = float(curve["abs_error"].max())
max_z = float((curve["abs_error"] / curve["std_error"].clamp_min(1e-12)).max())
print(f"{n_pairs * n_planes} bit comparisons per angle")
print(f"max |measured - (1 - θ/π)| = {max_dev:.4f}  (largest binomial std error {float(curve['std_error'].max()):.4f})")
print(f"worst deviation in standard errors: {max_z:.2f}")
assert max_dev < 0.02
assert max_z < 5

fig, ax = plt.subplots(figsize=(6, 4))
deg = (curve["theta"] * 180 / math.pi).numpy()
dense = torch.linspace(0, math.pi, 200, dtype=torch.float64)
for b in (1, 4, 8):
    ax.plot((dense * 180 / math.pi).numpy(), lsh.collision_probability(dense, bits=b).numpy(), lw=1,
            label=f"theory (1 − θ/π)^{b}")
ax.plot(deg, curve["measured"].numpy(), "ko", ms=4, label="measured, 1 bit")
ax.set_xlabel("angle θ between u and v (degrees)")
ax.set_ylabel("collision probability")
ax.set_title("random-hyperplane LSH")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# The more bits, the sharper the curve: with b = 8 (MemoryFormer's τ = 8) close vectors still share a bucket
# a fair fraction of the time while orthogonal ones almost never do (0.5⁸). That is the "locality" in LSH:
# similar chunks read the same table row. The numbers:

# %%
# NBVAL_CHECK_OUTPUT
for b in (1, 4, 8):
    at30, at90 = lsh.collision_probability(math.pi / 6, b), lsh.collision_probability(math.pi / 2, b)
    print(f"b={b}: P(same bucket) at 30° = {at30:.3f}, at 90° = {at90:.4f}")
    assert abs(at30 - (5 / 6) ** b) < 1e-12 and abs(at90 - 0.5**b) < 1e-12  # (1 − θ/π)^b by hand

# %% [markdown]
# ## 2. Sign hashing = nearest vertex of the hypercube
#
# MemoryFormer does not draw random planes: it hashes a chunk z ∈ R^τ by the signs of its own coordinates,
# `h(z) = Σ_i b_i 2^i` with `b_i = [z_i ≥ 0]` (memlab's bit order: coordinate 0 is the least-significant bit; see
# `memlab.hashing`). The coordinate axes are the hyperplanes. Each bucket is a vertex s_b ∈ {±1}^τ of the cube,
# and the hash picks the vertex with the largest ⟨z, s_b⟩ — the same vertex whose score the softmax weight p(z)
# reads. For τ = 3 the 8 buckets are the 8 corners of a cube:

# %%
# NBVAL_CHECK_OUTPUT
tau = 3
signs = hashing.bucket_sign_vectors(tau)
print("bucket  bits (z0 z1 z2)  vertex s_b")
for b, bits in enumerate(hashing.all_codes(tau)):
    print(f"{b:6d}  {' '.join(map(str, bits)):>15s}  {signs[b].long().tolist()}")
z = torch.tensor([[0.3, -1.2, 2.0], [-0.1, 0.0, -5.0]], dtype=torch.float64)  # 0.0 counts as +
print("sign_codes of", z.tolist(), "->", hashing.sign_codes(z).tolist())

# %%
# NBVAL_CHECK_OUTPUT
z = torch.randn(10_000, 8, dtype=torch.float64)
same = torch.equal(lsh.nearest_vertex_codes(z), hashing.sign_codes(z))
print("argmax_b <z, s_b> == sign_codes(z) for 10,000 random chunks, τ = 8:", same)
assert same

# %% [markdown]
# ## 3. Why a LayerNorm in front balances the buckets
#
# Random-hyperplane LSH is rotation-invariant; axis hashing is not. If the inputs are not centred — a common offset
# in every feature, or ReLU outputs that are 0 or positive (and 0 counts as +) — most bits come out 1 and a few
# buckets take most hits, wasting table rows. MemoryFormer puts a LayerNorm before every Memory Layer. LayerNorm
# subtracts each token's mean over its features and divides by its std: it removes a **common** offset and fixes the
# scale (which leaves the codes alone — signs ignore scale — but sets the size of p(z)).
#
# We hash d = 64 features with τ = 8 (K = 8 tables of 256 buckets) using `HashMemory.codes`, build the bucket
# histogram with `memlab.stats.hash_bucket_counts`, and report the fraction of buckets used, the entropy (uniform:
# log 256 = 5.545 nats per table) and the KL divergence from uniform use.

# %%
d, tau = 64, 8
n_tokens = 4_000 if FAST else 20_000
torch.manual_seed(0)
layer = memlab.HashMemory(d, 1, tau=tau)  # only its addressing is used here
norm = torch.nn.LayerNorm(d, elementwise_affine=False)
base = torch.randn(n_tokens, d)
cases = {
    "isotropic N(0,1)": base,
    "common offset +1": base + 1.0,
    "ReLU outputs": torch.relu(base),
    "scaled x10": 10 * base,
    "per-feature offsets": base + torch.randn(d),
}


def usage(x):
    s = stats.usage_summary(stats.hash_bucket_counts(layer.codes(x), tau))
    return s, float(layer.bucket_weights(x).mean())


results = {}
print(f"{'input':22s} {'norm':>5s} {'used':>6s} {'entropy':>8s} {'KL':>7s} {'mean p(z)':>10s}")
for name, x in cases.items():
    for tag, xx in (("raw", x), ("LN", norm(x))):
        s, p = usage(xx)
        results[name, tag] = s
        print(f"{name:22s} {tag:>5s} {s['fraction_used']:6.3f} {s['entropy'] - math.log(layer.K):8.3f} "
              f"{s['kl_uniform']:7.3f} {p:10.3f}")
finite_sample_kl = (2**tau - 1) / (2 * n_tokens)  # KL that a perfectly uniform source shows from finite samples
print(f"\nlog 256 = {math.log(256):.3f} nats; KL expected from sampling noise alone ≈ {finite_sample_kl:.4f}")

# %% [markdown]
# (Entropy is per table: the pooled entropy over all K·2^τ rows minus log K. KL is the mean over the K tables.)

# %%
for name in ("common offset +1", "ReLU outputs"):
    raw, ln = results[name, "raw"]["kl_uniform"], results[name, "LN"]["kl_uniform"]
    print(f"{name}: KL raw {raw:.3f} -> with LayerNorm {ln:.3f}  ({raw / ln:.0f}x lower)")
    assert ln < raw / 5
assert results["common offset +1", "LN"]["kl_uniform"] < 5 * finite_sample_kl + 0.01
assert results["scaled x10", "raw"]["kl_uniform"] == results["isotropic N(0,1)", "raw"]["kl_uniform"]  # signs ignore scale
assert results["per-feature offsets", "LN"]["kl_uniform"] > 0.5  # what LayerNorm cannot fix

# %% [markdown]
# Read the table:
# * a **common offset** collapses usage and LayerNorm undoes it completely (back to the sampling-noise floor);
# * **ReLU outputs** collapse to a single bucket per table (every 0 counts as +, so every bit is 1); after LayerNorm
#   the zeros fall below the token mean and become negative, so nearly all buckets are used — though not uniformly,
#   since only values above the token mean count as + and those are fewer than half;
# * **scale** does not change a single code, but it changes p(z): large inputs push every factor σ(2|z_i|/t) to 1,
#   small ones to ½ — LayerNorm fixes the scale so the weights stay in a useful range;
# * **per-feature offsets** survive LayerNorm (it only removes the per-token mean). A trained network can learn to
#   handle them (LayerNorm's bias, the previous layer); MemoryFormer's Figure 4 shows near-uniform buckets after
#   training.

# %%
curves = {"isotropic N(0,1), raw": cases["isotropic N(0,1)"]}
for name in ("common offset +1", "ReLU outputs"):
    curves[f"{name}, raw"], curves[f"{name}, LN"] = cases[name], norm(cases[name])
fig, ax = plt.subplots(figsize=(6, 3.5))
plots.plot_usage({label: stats.hash_bucket_counts(layer.codes(xx), tau)[0] for label, xx in curves.items()}, ax=ax)
ax.set_title("bucket usage of table 0, most-hit first")
plt.show()

# %% [markdown]
# ## 4. Product quantization
#
# Split x ∈ R^d into m sub-vectors of d/m dims; run k-means with k centroids in each sub-space
# (`memlab.quantization.train_pq`); store a vector as m codes (m·log₂k bits); reconstruct it by concatenating the
# chosen centroids. The stored centroids always take k·d floats, whatever m is — but they stand for k^m codewords.
# We quantize correlated Gaussian vectors (d = 16) and report the relative error ‖x − x̂‖² / ‖x − x̄‖².

# %%
torch.manual_seed(0)
n_vec, iters = (1_000, 10) if FAST else (4_000, 20)
dim = 16
mix = torch.randn(dim, dim, dtype=torch.float64)
data = torch.randn(n_vec, dim, dtype=torch.float64) @ mix
ks = (4, 16, 64)
errors = {}
print(f"{'m':>2s} {'k':>4s} {'codewords k^m':>14s} {'bits':>5s} {'stored floats':>14s} {'rel. error':>11s}")
for m in (1, 2, 4):
    for k in ks:
        books = pq.train_pq(data, m=m, k=k, iters=iters, seed=0)
        errors[m, k] = pq.pq_error(data, books)
        print(f"{m:2d} {k:4d} {k**m:14.3g} {m * int(math.log2(k)):5d} {books.numel():14d} {errors[m, k]:11.3f}")

for m in (1, 2, 4):
    assert errors[m, ks[0]] > errors[m, ks[1]] > errors[m, ks[2]]  # more codes, less error
for k in ks:
    assert errors[1, k] > errors[2, k] > errors[4, k]  # same stored floats, more sub-spaces, less error

fig, ax = plt.subplots(figsize=(5, 3.5))
for m in (1, 2, 4):
    ax.plot(ks, [errors[m, k] for k in ks], "o-", label=f"m = {m} sub-spaces")
ax.set_xscale("log", base=2)
ax.set_xlabel("codes per sub-space k")
ax.set_ylabel("relative reconstruction error")
ax.set_title("product quantization")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# At equal storage (k·d floats, the same k on the x-axis) more sub-spaces win because the product codebook is
# exponentially larger: k^m codewords. The price is that the sub-spaces are quantized independently, so correlations
# *between* sub-vectors are not modelled.
#
# **At equal code bits the order reverses.** A code of b = m·log₂k bits names one of 2^b codewords whatever m is. With
# m = 1 those 2^b codewords are placed freely by k-means; with m > 1 they are forced onto a Cartesian grid of
# sub-codebooks — a constrained codebook of the same size, so it can only fit the data worse. What more sub-spaces
# buy at equal bits is cheaper storage and training: k = 2^{b/m} centroids per sub-space, so the stored floats fall
# from 2^b·d to 2^{b/m}·d. The pairs with equal bits in the grid above:

# %%
print(f"{'bits':>4s}  {'m':>2s} {'k':>3s} {'stored floats':>13s} {'rel. error':>10s}")
for bits, pair in ((4, ((1, 16), (2, 4))), (8, ((2, 16), (4, 4)))):
    for m, k in pair:
        assert m * int(math.log2(k)) == bits
        print(f"{bits:4d}  {m:2d} {k:3d} {k * dim:13d} {errors[m, k]:10.3f}")
    (m_few, k_few), (m_many, k_many) = pair
    assert errors[m_few, k_few] < errors[m_many, k_many]  # equal bits: fewer sub-spaces, less error
if not FAST:  # the numbers quoted below (4,000 vectors, 20 k-means iterations, seed 0)
    assert abs(errors[2, 16] - 0.466) < 0.02 and abs(errors[4, 4] - 0.537) < 0.02

# %% [markdown]
# With 8 bits per vector, m = 2 sub-spaces of k = 16 centroids reach a relative error of about 0.466, while m = 4
# sub-spaces of k = 4 reach only about 0.537 — though they store 4× fewer floats (64 against 256). Product keys choose
# m = 2: n² keys from 2n stored half-keys, few enough sub-spaces to keep the keys expressive.
#
# ## 5. Product keys: exact top-k over n² keys from two top-k's over n
#
# A product-key memory is PQ with m = 2 applied to the keys: key (i, j) = [K1_i, K2_j], so for a query q = [q1, q2]
#
# $$\text{score}(i, j) = q_1\cdot K^1_i + q_2\cdot K^2_j .$$
#
# **Why two top-k's suffice.** Let (i, j) be in the true top-k. If i were not in the top-k of q1·K1, there would be
# k indices i' with q1·K1_{i'} > q1·K1_i, and the k pairs (i', j) would all beat (i, j) — contradiction. Same for j.
# So every top-k pair lies in the k × k grid of half-winners, and a top-k over those k² sums is exact.
# `memlab.product_keys.product_topk` does this; `bruteforce_topk` scores all n² pairs.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
batch, n, k = 64, 128, 16
s1, s2 = torch.randn(batch, n, dtype=torch.float64), torch.randn(batch, n, dtype=torch.float64)
fast_scores, fast_idx = product_keys.product_topk(s1, s2, k)
ref_scores, ref_idx = product_keys.bruteforce_topk(s1, s2, k)
same = torch.equal(fast_idx, ref_idx) and torch.equal(fast_scores, ref_scores)
print(f"product_topk == bruteforce_topk over {n}² = {n * n} keys, {batch} queries, top-{k}:", same)
assert same

# %% [markdown]
# The same check with real keys and queries, and a measured time. Brute force materialises all n² full keys
# [K1_i, K2_j] (index i·n + j, as in `product_topk`) and multiplies; the product version scores 2·n half-keys.

# %%
torch.manual_seed(0)
n, k_dim, k, batch = (128, 64, 16, 32) if FAST else (256, 64, 16, 64)
half = k_dim // 2
K1, K2 = torch.randn(n, half), torch.randn(n, half)
full_keys = torch.cat([K1.repeat_interleave(n, 0), K2.repeat(n, 1)], dim=-1)  # (n², k_dim), row i·n + j
q = torch.randn(batch, k_dim)


def brute():
    return (q @ full_keys.T).topk(k, dim=-1)


def product():
    return product_keys.product_topk(q[:, :half] @ K1.T, q[:, half:] @ K2.T, k)


assert torch.equal(brute()[1], product()[1])
threads = torch.get_num_threads()
torch.set_num_threads(1)  # on a small shared CPU, thread-pool overhead would swamp the 0.1 ms product version
times = time_side_by_side({"bruteforce": brute, "product": product}, rounds=5 if FAST else 11)
torch.set_num_threads(threads)
cost = pq.product_key_costs(n, k_dim, k)
print(f"n = {n} (N = {n * n} keys), k_dim = {k_dim}, top-{k}, {batch} queries")
print(f"multiply-adds per query: bruteforce {cost['bruteforce']:,}  product {cost['product']:,}  "
      f"ratio {cost['ratio']:.0f}x")
speedup = times["bruteforce"] / times["product"]
print(f"median time: bruteforce {times['bruteforce'] * 1e3:.2f} ms  product {times['product'] * 1e3:.2f} ms  "
      f"speed-up {speedup:.1f}x (one CPU thread, side by side)")
assert 1 < speedup < cost["ratio"] / 2  # faster, but by far less than the multiply-add ratio

# %% [markdown]
# The measured speed-up is far below the multiply-add ratio. Counting multiply-adds assumes that they are all the work
# and that every one costs the same time; neither holds. Time the parts, side by side on the same thread: each
# version's scoring (matrix multiplies) and its selection (top-k's), and one trivial torch call (adding 1 to a
# one-element tensor) — the fixed cost every operation pays in Python and torch's dispatcher before any arithmetic.

# %%
all_scores = q @ full_keys.T
h1, h2 = q[:, :half] @ K1.T, q[:, half:] @ K2.T
tiny = torch.zeros(1)
torch.set_num_threads(1)
parts = time_side_by_side({"brute: scores": lambda: q @ full_keys.T,
                           "brute: top-k": lambda: all_scores.topk(k, dim=-1),
                           "product: scores": lambda: (q[:, :half] @ K1.T, q[:, half:] @ K2.T),
                           "product: top-k's": lambda: product_keys.product_topk(h1, h2, k),
                           "trivial op": lambda: tiny.add(1)}, rounds=5 if FAST else 11)
torch.set_num_threads(threads)
n_ops = 19  # torch calls in product(): 2 slices, 2 transposes, 2 matmuls, 3 topk, 2 unsqueeze, 2 add, flatten,
            # div, 2 gather, remainder, mul (torch.profiler lists them)
for version in ("brute", "product"):
    sc, tk = parts[f"{version}: scores"], parts[f"{version}: top-k" + ("'s" if version == "product" else "")]
    print(f"{version:8s} scoring {sc * 1e3:8.3f} ms   selection {tk * 1e3:8.3f} ms   "
          f"({tk / (sc + tk):.0%} of its time in top-k, which counts no multiply-adds)")
rate_brute = batch * cost["bruteforce"] / parts["brute: scores"] / 1e9
rate_product = batch * n * k_dim / parts["product: scores"] / 1e9
scoring_speedup = parts["brute: scores"] / parts["product: scores"]
faster = "the product version's small ones" if rate_product > rate_brute else "the brute force's big one"
print(f"scoring alone: {scoring_speedup:.0f}x faster (counted: n = {n}x); rates {rate_brute:.2f} G multiply-adds/s "
      f"(brute force) and {rate_product:.2f} (product): per multiply-add, {faster} ran faster here")
overhead = n_ops * parts["trivial op"]
product_total = parts["product: scores"] + parts["product: top-k's"]
print(f"fixed overhead: one trivial torch call {parts['trivial op'] * 1e6:.1f} µs × {n_ops} calls = "
      f"{overhead * 1e3:.3f} ms, {overhead / product_total:.0%} of the product version's time")
print(f"bytes: brute force streams {n * n * k_dim * 4 / 1e6:.1f} MB of full keys and writes {batch * n * n * 4 / 1e6:.1f} "
      f"MB of scores per call; the product version's half-keys are {2 * n * half * 4 / 1e3:.0f} kB")
share_product = parts["product: top-k's"] / (parts["product: scores"] + parts["product: top-k's"])
share_brute = parts["brute: top-k"] / (parts["brute: scores"] + parts["brute: top-k"])
assert share_product > 0.5 and share_product > share_brute  # selection dominates the product version, not the brute force
assert scoring_speedup > 2 * speedup  # the scoring gain is real; selection is what eats it

# %% [markdown]
# Where the factor between the two numbers goes (the times above are this machine's, under whatever else it runs):
#
# * **Selection is work the count leaves out.** The multiply-add count prices only the scoring. Both versions also
#   select: the brute force one top-k over n² scores per query, the product version two top-k's over n and one over
#   k². The product version cut its scoring by a factor of about n, and its scoring alone does speed up by roughly
#   that much — but its selection is now most of its time. Comparisons and data movement on short rows, a few µs per
#   row in `torch.topk`, cost far more per element than a multiply-add inside a matrix multiply.
# * **Bytes decide the big matrix multiply.** The brute force streams megabytes of full keys and scores through
#   memory, beyond the core's private caches; the product version's half-keys (tens of kB) stay in cache. So a big
#   matrix multiply is not automatically the efficient one: which scoring runs at the higher multiply-add rate depends
#   on the machine's caches and bandwidth (the line above says which won here). Memory traffic slows the brute force,
#   so it widens the speed-up rather than hiding the 252×.
# * **Fixed costs.** Each of the product version's ~20 torch calls pays a fixed cost in Python and torch's
#   dispatcher before computing anything; the line above prices it as a share of the product version's time. It does
#   not grow with n or the batch, so it weighs less on larger memories and batches.
#
# On a GPU the same effects show as the cost of top-k kernels and kernel-launch latency; fusing the scoring, the
# top-k's and the grid into one kernel is how real implementations approach the counted ratio.
#
# So the multiply-add ratio measures the scoring work saved, not the time saved: the time also depends on the
# selection the count leaves out and on how efficiently each version runs its arithmetic.

# %% [markdown]
# The gap grows linearly with n. Counted multiply-adds per query for a few sizes, up to the paper's
# n = 1024 half-keys (N ≈ 1M values) with k_dim = 512 and top-32 (`memlab.quantization.product_key_costs`):

# %%
print(f"{'n':>5s} {'N = n^2':>9s} {'bruteforce n^2*d':>17s} {'product n*d + k^2':>18s} {'ratio':>7s}")
rows = [pq.product_key_costs(n_, 512, 32) for n_ in (64, 256, 1024)]
for r in rows:
    print(f"{r['n']:5d} {r['N=n^2']:9d} {r['bruteforce']:17,d} {r['product']:18,d} {r['ratio']:7.0f}")
assert rows[-1]["ratio"] > 1000

fig, ax = plt.subplots(figsize=(5, 3.5))
ns = [2**p for p in range(4, 12)]
ax.loglog(ns, [pq.product_key_costs(n_, 512, 32)["bruteforce"] for n_ in ns], "o-", label="bruteforce  n²·d")
ax.loglog(ns, [pq.product_key_costs(n_, 512, 32)["product"] for n_ in ns], "s-", label="product keys  n·d + k²")
ax.set_xlabel("half-keys n  (memory holds n² values)")
ax.set_ylabel("multiply-adds per query")
ax.set_title("top-32 over n² keys of width 512: brute force vs product keys")
ax.grid(alpha=0.3, which="both")
ax.legend()
plt.show()

# %% [markdown]
# ## Summary
#
# * Random-hyperplane LSH: the measured collision rate follows 1 − θ/π within 0.02 at every angle (and within 5
#   binomial standard errors); with b bits it is (1 − θ/π)^b — 0.233 at 30° and 0.0039 at 90° for b = 8.
# * Sign hashing picks the nearest hypercube vertex: `argmax_b ⟨z, s_b⟩` equals the sign code for 10,000 chunks.
# * A common offset or ReLU outputs collapse bucket use; a LayerNorm in front lowers the KL from uniform more than
#   5-fold, back to the sampling-noise floor for a common offset. Per-feature offsets survive it.
# * Product quantization: at equal stored floats more sub-spaces give less error; at equal code bits fewer sub-spaces
#   give less error (8 bits: m = 2, k = 16 ≈ 0.466 against m = 4, k = 4 ≈ 0.537), because a product codebook is a
#   constrained one.
# * Product keys: two top-k's over n give exactly the brute-force top-k over n²; the multiply-adds fall 252-fold at
#   n = 256 (over 1000-fold at the paper's n = 1024), but the measured CPU speed-up is far smaller (asserted: below
#   half the ratio): the scoring alone speeds up by about n, but the top-k selection, which the count leaves out,
#   takes most of the product version's time.
#
# ## Exercises
#
# ### Exercise 1
#
# With τ = 8 sign bits, what is the probability that two chunks at 60° share a bucket, if the hash behaved like
# random hyperplanes? Compute it with `lsh.collision_probability`.
#
# <details><summary>Answer</summary>
#
# `lsh.collision_probability(math.pi / 3, bits=8)` = (1 − 1/3)⁸ = (2/3)⁸ ≈ 0.039. Axis hashing equals random-plane
# hashing only for rotation-invariant inputs (e.g. isotropic Gaussian chunks); otherwise the law can fail.
# </details>
#
# ### Exercise 2
#
# In section 3, per-feature offsets survive LayerNorm. Which per-feature operation fixes them, and why does
# MemoryFormer not need it after training?
#
# <details><summary>Answer</summary>
#
# Subtracting the per-feature mean over tokens (BatchNorm-style centring, or a bias b = −E[x]) makes each bit fire
# half the time. In a trained network the features feeding the hash are themselves learned (and LayerNorm has a
# learnable bias), so the model can centre them; the paper's Figure 4 shows near-uniform bucket use after training.
# Try it: `x - x.mean(0)` before `layer.codes` brings the KL of the "per-feature offsets" case down to the noise
# floor.
# </details>
#
# ### Exercise 3
#
# Product quantization with m = 2 and k = 1024 codes per half: how many codewords, and how many bits per
# vector? How does that relate to Memory Layers at Scale's n = 1024 half-keys?
#
# <details><summary>Answer</summary>
#
# 1024² ≈ 1.05M codewords, 2·10 = 20 bits per vector. It is exactly the product-key memory: n = 1024 half-keys per
# half address n² ≈ 1M value rows, and the row index i·n + j is the pair of PQ codes.
# </details>
#
# ### Exercise 4
#
# Does the exactness proof of `product_topk` still hold if the score were q1·K1_i · q2·K2_j (a product instead
# of a sum)?
#
# <details><summary>Answer</summary>
#
# Not in general: the proof needs the score to be increasing in each half score. A product of two scores that can be
# negative is not (two large negatives give a large positive). It would hold again for non-negative half scores, since
# then the product is monotone in each factor.
# </details>
#
# ### Exercise 5 (build): a product-quantization encoder
#
# Write `my_pq_encode(x, codebooks)`: `x` is (N, d), `codebooks` is (m, k, d/m) — k centroids in each of m sub-spaces,
# as `memlab.quantization.train_pq` returns them. Return the (N, m) long tensor of codes: in each sub-space j, the index
# of the centroid nearest (Euclidean distance) to the sub-vector x[:, j·d/m : (j+1)·d/m]. The checker uses centroids of
# very different lengths, points lying exactly on a centroid, k = 1 and m from 1 to 8.

# %%
def my_pq_encode(x, codebooks):
    raise NotImplementedError  # your code: split x into m sub-vectors, nearest centroid in each sub-space


# %%
memlab.exercises.check_pq_encode(my_pq_encode)

# %% [markdown]
# <details><summary>Answer</summary>
#
# ```python
# def my_pq_encode(x, codebooks):
#     m, k, sub = codebooks.shape
#     xs = x.reshape(x.shape[0], m, sub)                                   # (N, m, d/m) sub-vectors
#     d2 = (xs.unsqueeze(2) - codebooks.unsqueeze(0)).pow(2).sum(-1)      # (N, m, k) squared distances
#     return d2.argmin(-1)                                                 # (N, m) nearest centroid per sub-space
# ```
# The largest inner product `xs · c` is not the nearest centroid: ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖², and the ‖c‖² term
# penalises long centroids. `memlab.quantization.pq_encode` computes the same distances without the (N, m, k, d/m)
# intermediate, by expanding that square.
# </details>
