# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.16.0
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Bucket and key explorer: are memory rows used evenly, and what makes them so?
#
# **What this notebook teaches.** A memory layer is only as large as the part of it that is read. MemoryFormer's Figure 4 shows every bucket of its
# hash tables retrieved about equally often; product-key memories are known to collapse onto a few values without
# care (Lample et al. 2019, arXiv 1907.05242, who introduced the usage statistics used here). This notebook gives you
# three dashboards to look for yourself, then uses them on two tiny models trained here:
#
# 1. **LSH playground** — sign hashing (MemoryFormer §2.1, arXiv 2411.12992) on inputs you choose: isotropic,
#    low-rank, or real activations; bucket histogram, p(z), collisions against angle (notebook 01's 1 − θ/π).
# 2. **MemoryFormer run explorer** — a trained model's hash tables, table by table and step by step, against
#    initialisation, and Figure 4's layout for this run (Q, K, V share one hash, §2.4).
# 3. **Product-key explorer** — the n × n map of values a head reads, the softmax mass its top-k keep, qk-norm on and
#    off, and one value pool shared by two layers (Memory Layers at Scale §2–3, arXiv 2412.09764).
#
# Then the investigation: the demo's MemoryFormer uses only 19–55 % of its rows where uniform hashing would touch
# ~100 %. Why — the 256 byte embeddings layer 0 sees, unfair bits, dependent bits, training? How do product keys
# compare? And one remedy tried as a sweep with three seeds — **memlab's own experiment, not the paper's**.
#
# Each dashboard is one function with explicit arguments (the static call that CI runs) and a `*_widget` that puts
# ipywidgets controls in front of the same function; the widgets need a live kernel (JupyterLab). `FAST` (CI) trains
# the two models for a few steps at a tiny size; the committed outputs come from the demo's sizes (d = 128, 4 layers,
# 300 steps). A summary of both papers: [paper_notes.md](paper_notes.md).
#
# **Paper sections.** MemoryFormer (Ding et al., NeurIPS 2024, arXiv 2411.12992): §2.1 (sign hashing and p(z)), §2.4
# (Q, K and V share one hash) and Figure 4 (bucket retrieval frequencies). Large Memory Layers with Product Keys
# (Lample et al., NeurIPS 2019, arXiv 1907.05242): the memory-usage statistics and query BatchNorm. Memory Layers at
# Scale (Berges, Oğuz et al., ICML 2025, arXiv 2412.09764): §2 (the product-key layer) and §3 (qk-norm, shared values).
#
# **Before this:** notebooks 01 (sign hashing as random-hyperplane LSH), 02 (the MemoryFormer layer), 03 (product keys,
# Memory+ and the usage statistics of `memlab.stats`), 05 (training a tiny model) and 06 (sweeps and confidence
# intervals over seeds).

# %%
import memlab; FAST = memlab.fast_mode()

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from memlab.lab import data
from memlab.lab import explorer as ex
from memlab.lab.ablations import load_results, plot_study
from memlab.lab.demo import BASE_MODEL, BASE_TRAIN
from memlab.lab.models import ModelConfig
from memlab.lab.sweep import summarize, summary_table
from memlab.lab.train import TrainConfig, train

if FAST:
    torch.set_num_threads(1)  # tiny tensors: extra threads only wait on each other
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)
print("fast mode: two models trained for 12 steps at width 32, so the figures and the numbers of sections 1-5 say "
      "little; the committed notebook shows the full run" if FAST else "normal mode")

# %% [markdown]
# ## 1. Two runs to explore
#
# A MemoryFormer and a Memory+ at the demo's sizes (`memlab.lab.demo`: d = 128, 4 layers, 128-byte context,
# 300 steps, the python-docs corpus; the MemoryFormer is the demo's run exactly). The Memory+ replaces the FFN of
# **two** layers (1 and 3) so that they share one value pool. Training now also writes **usage snapshots**
# (`memlab.lab.snapshots`): the hits of every row, per table or head, on the first validation batch, at
# initialisation and every `stats_every` steps — compact enough to keep (`usage_snapshots.npz`, a few hundred kB).
# The first normal-mode run trains both (a few minutes on 2 cores); running the notebook again reuses the finished
# runs (`resume=True`: nothing left to train).

# %%
if FAST:
    corpus = data.quick_python_docs(40)
    model_sizes = dict(d_model=32, n_layers=2, n_heads=2, seq_len=32, tau=8, expand_bits=1, pkm_n_keys=16,
                       pkm_heads=2, pkm_topk=4)
    train_sizes = dict(steps=12, batch_size=8, warmup_steps=3, eval_every=6, eval_batches=2, stats_every=4,
                       ckpt_every=12, log_every=12, fact_entities=20)
else:
    corpus = data.load_corpus(verbose=False)
    model_sizes, train_sizes = dict(BASE_MODEL), dict(BASE_TRAIN)
out_dir = str((data.repo_root() or Path(".")) / "runs" / ("nb08-fast" if FAST else "nb08"))  # runs/ is git-ignored

runs = {}
for kind, extra in (("memoryformer", {}), ("memoryplus", {"n_memory_layers": 2})):
    cfg = TrainConfig.from_dict({**train_sizes, "name": f"nb08-{kind}", "out_dir": out_dir})
    resume = not FAST and (Path(out_dir) / cfg.name / "checkpoint.pt").exists()
    result = train(ModelConfig.from_dict({**model_sizes, "model": kind, **extra}), cfg, resume=resume, verbose=False,
                   corpus=corpus)
    runs[kind] = run = ex.load_run_data(result["run_dir"])
    size = run.snapshots.path.stat().st_size
    print(f"{kind:13s} val ppl {result['val_ppl']:6.2f}  snapshots at steps {run.steps}  ({size / 1e3:.0f} kB)")
    assert size < 2e6  # compact: a few hundred kB for the demo's sizes
mf, mp = runs["memoryformer"], runs["memoryplus"]
blocks = sorted({int(name.split(".")[0][5:]) for name in mf.layers("hash")})
print("MemoryFormer hash layers:", ", ".join(mf.layers("hash")))
print("Memory+ product-key layers:", ", ".join(mp.layers("product_keys")),
      "| shared pool:", mp.snapshots.layers[mp.layers("product_keys")[0]]["shares_values_with"])

# %% [markdown]
# ## 2. LSH playground
#
# Tokens x ∈ R^d are cut into K = d/τ chunks; chunk z goes to bucket h(z) = Σ_i [z_i ≥ 0]·2^i of its own table,
# weighted by p(z) = Π σ(2|z_i|/t). If the bits are fair coins and independent, N tokens land uniformly and use a
# fraction **1 − (1 − 2^−τ)^N ≈ 1 − e^(−N/2^τ)** of the rows. Isotropic Gaussian inputs do exactly that:

# %%
# NBVAL_CHECK_OUTPUT
view = ex.lsh_playground(tau=8, inputs="isotropic", n_tokens=2048)
for key in ("tokens", "tables", "rows_per_table", "fraction_used", "uniform_fraction_used", "kl_uniform", "gini"):
    print(f"{key:22s} {view.stats[key]:.4g}")
assert abs(view.stats["fraction_used"] - view.stats["uniform_fraction_used"]) < 0.005
assert view.stats["kl_uniform"] < 0.1  # the sampling floor at 8 hits per row is ≈ (R − 1)/(2N) = 0.06 nats

# %% [markdown]
# The figure: table 0's histogram against the uniform level N/2^τ, its Lorenz curve, p(z), the *row weight* (the
# p(z) of the tokens that hit a row, summed: score-weighted use), and collisions against the angle between two
# chunks — per bit it follows random-hyperplane LSH's 1 − θ/π (notebook 01), because an isotropic distribution looks
# the same along the coordinate axes as along random directions.

# %%
view

# %% [markdown]
# Now break it. Inputs of **rank r** (x = A g, g ∈ R^r) put every chunk in an r-dimensional subspace of R^τ, and such
# a subspace meets at most 2·Σ_{i<r} C(τ−1, i) of the 2^τ orthants (`ex.max_buckets_for_rank`): 2 for r = 1, 16 for
# r = 2, 58 for r = 3 — whatever N is. A **shift** shared by all coordinates makes every bit unfair; LayerNorm before
# hashing (what the block's pre-norm does) removes it, because it subtracts each token's own mean:

# %%
# NBVAL_CHECK_OUTPUT
for rank in (1, 2, 3, 8):
    v = ex.lsh_playground(tau=8, inputs="correlated", rank=rank, n_tokens=4096)
    print(f"rank {rank}: fraction used {v.stats['fraction_used']:.3f}  "
          f"(at most {v.stats['max_fraction_for_rank']:.3f})")
    assert v.stats["fraction_used"] <= v.stats["max_fraction_for_rank"]
shifted = {"isotropic + 1.5": ex.synthetic_inputs("isotropic", 4096, 64, seed=1) + 1.5}
for layernorm in (False, True):
    v = ex.lsh_playground(tau=8, inputs="isotropic + 1.5", activations=shifted, layernorm=layernorm)
    print(f"shift 1.5, LayerNorm {layernorm!s:5}: fraction used {v.stats['fraction_used']:.3f}  KL from unfair bits "
          f"{v.stats['kl_from_bit_bias']:.2f}, from dependent bits {v.stats['kl_from_bit_dependence']:.2f} nats")
assert v.stats["fraction_used"] > 0.95  # after LayerNorm: uniform again

# %% [markdown]
# `kl_from_bit_bias` and `kl_from_bit_dependence` split the KL divergence from uniform exactly
# (`ex.kl_decomposition`): log 2^τ − H(P) = Σ_i [log 2 − H(b_i)] + [Σ_i H(b_i) − H(P)] — unfair bits plus the total
# correlation between bits. Low rank is dependence; a shift is bias.
#
# The dashboard: the same function behind sliders, with the trained MemoryFormer's real activations as extra inputs
# (what layer 0's Q/K/V hash and the last Memory Block's first layer read, at initialisation and after training).
# Move τ, the temperature, the rank, toggle LayerNorm.

# %%
acts = {}
for name in ("layer0.qkv", f"layer{blocks[-1]}.mb1"):
    for which, label in (("final", "trained"), ("init", "init")):
        acts[f"{label} {name}"] = ex.layer_activations(mf, name, which)
playground = ex.lsh_playground_widget(activations=acts)
playground.raise_error()
playground

# %% [markdown]
# ## 3. MemoryFormer run explorer
#
# The run's own layout of MemoryFormer's Figure 4: the retrieval frequency of each bucket of one table, for the Q, K,
# V tables and the Memory Block's two layers. In MemoryFormer (and memlab) Q, K and V hash once (§2.4), so their
# three histograms are the same. Dashed: uniform. The paper's histograms are nearly flat; this run's are a few
# spikes: in the last block the busiest bucket of each family takes 6–9 % of all tokens, 22–66 times its share under
# uniform hashing (1/256 of the tokens for Q/K/V and the first layer, 1/1024 for the second). Which bucket, and how
# large a share, changes from one training run to the next; that a few buckets take many times their share does not.

# %%
fig4 = ex.figure4(mf, layer=blocks[-1], table=0)
over_uniform = {family: float(share.max()) * len(share) for family, share in fig4.data.items()}  # one share per row
print("busiest bucket, share of tokens: " + ", ".join(f"{f} {float(share.max()):.1%} ({over_uniform[f]:.0f}× uniform)"
                                                       for f, share in fig4.data.items()))
if not FAST:
    assert all(r > 10 for r in over_uniform.values())  # every family: a bucket with over 10× its uniform share
fig4

# %% [markdown]
# The detailed view of one table, beside the same table at initialisation (grey): bucket order, sorted hits, Lorenz
# curves, and every table of the layer.

# %%
view = ex.memoryformer_view(mf, layer=0, family="qkv", table=0)
print(view.table())
view

# %% [markdown]
# The dashboard adds controls for the run, layer, table family, table, step and layout. Here it shows this
# notebook's run; `ex.run_explorer_widget(root="../runs")` offers every run folder with snapshots under the repository's
# `runs/` instead — `make demo`'s `runs/demo/memoryformer`, a `memlab train` run, or any point of a sweep
# (`runs/sweeps/<study>/<key>.json`; sweeps keep each point's snapshots as `<key>.usage.npz`).

# %%
explorer = ex.run_explorer_widget({"this notebook's MemoryFormer": mf})
explorer.raise_error()
explorer

# %% [markdown]
# ## 4. Product-key explorer
#
# Value (i, j) of a product-key memory is row i·n + j: one head's hits form an n × n map (row = first half-key,
# column = second). Beside it, the share of the full softmax mass over all n² keys that the top-k keep — cheap
# because log Σ_{i,j} e^{s1_i + s2_j} = logsumexp(s1) + logsumexp(s2) (`memlab.lab.snapshots.log_normalizer`) — with
# qk-norm on (how Memory+ was trained) and off *for the same weights*, the top-k scores, and how much of the shared
# value pool each layer reads.

# %%
pk_layer = mp.layers("product_keys")[0]
view = ex.product_key_view(mp, layer=pk_layer, head=0)
print(view.table())
mass = view.data["mass_qk_on"]
assert torch.all(mass[1:] >= mass[:-1]) and float(mass[-1]) <= 1  # more keys keep more of the mass
shared = view.data["shared"]
assert shared["any layer"] >= max(shared[name] for name in mp.layers("product_keys")) >= shared["2+ layers"]
view

# %%
pk_explorer = ex.product_key_widget({"this notebook's Memory+": mp})  # root="../runs": every run with product keys
pk_explorer.raise_error()
pk_explorer

# %% [markdown]
# ## 5. The investigation: why are the hash tables used so unevenly?
#
# ### 5.1 What was measured
#
# Every hash layer of the trained MemoryFormer at its last step (means over the K = 16 tables of a layer), next to
# what uniform hashing reaches with the same number of tokens. The first-layer tables have 2^8 rows (8 hits per row
# on average); the Memory Block's second layer hashes τ + e = 10 bits into 1024 rows (2 per row).

# %%
table = ex.hash_layer_table(mf)
print(table.round(3).to_string())
lo, hi = table["fraction_used"].min(), table["fraction_used"].max()
print(f"\nfraction of rows used: {lo:.0%} … {hi:.0%}; uniform hashing: "
      f"{table['uniform_fraction_used'].min():.0%} … {table['uniform_fraction_used'].max():.0%}")
print(f"Gini {table['gini'].min():.2f} … {table['gini'].max():.2f}; KL to uniform "
      f"{table['kl_uniform'].min():.2f} … {table['kl_uniform'].max():.2f} nats")
hits = table.loc["layer0.qkv", "hits_per_row"]
floor = ex.uniform_baseline(int(hits * 256), 256)
print(f"uniform hashing at {hits:.0f} hits per row: Gini {floor['gini']:.2f}, KL {floor['kl_uniform']:.3f} nats")
assert (table["fraction_used"] < table["uniform_fraction_used"]).all()
if not FAST:  # the numbers this section explains (the demo's run, step 300)
    assert 0.15 < lo < 0.25 and 0.45 < hi < 0.65
    assert table["gini"].between(0.78, 0.96).all() and table["kl_uniform"].between(1.4, 2.7).all()

# %% [markdown]
# Far from Figure 4's flat histograms. Four questions follow.
#
# ### 5.2 Layer 0 sees only 256 distinct byte embeddings
#
# The first attention hashes LayerNorm(embedding(byte)): a function of the byte alone. A batch of text holds a few
# dozen distinct bytes, so each table can reach at most that many of its 256 rows — a hard ceiling no training fixes.

# %%
ids = torch.from_numpy(mf.snapshots.ids.astype("int64"))
distinct = len(torch.unique(ids))
used0 = table.loc["layer0.qkv", "fraction_used"]
print(f"distinct bytes in the snapshot batch: {distinct} → at most {distinct / 256:.1%} of each table; "
      f"layer0.qkv uses {used0:.1%}")
assert used0 <= distinct / 256

# %% [markdown]
# ### 5.3 Unfair bits and dependent bits
#
# The KL split of §2, per layer, and what the layers actually hash: the mean sign bias |P(x_i ≥ 0) − ½|, the
# correlation of coordinate pairs inside one chunk against pairs in different chunks, and the effective number of
# dimensions of the activations (participation ratio of the covariance; d for isotropic inputs).

# %%
structure = ex.input_structure(mf)
print(pd.concat([table[["kl_uniform", "kl_bit_bias", "kl_bit_dependence"]], structure], axis=1).round(3).to_string())
gap = structure["corr_within_chunk"] - structure["corr_across_chunks"]
ml2 = gap.index.str.endswith(".mb2")
print(f"\nwithin- minus across-chunk correlation: attention and ML1 inputs {gap[~ml2].min():+.3f} … "
      f"{gap[~ml2].max():+.3f}, ML2 inputs {gap[ml2].min():+.3f} … {gap[ml2].max():+.3f}; effective dims "
      f"{structure['effective_dims'].min():.0f} … {structure['effective_dims'].max():.0f} "
      f"of {structure['width'].min()}–{structure['width'].max()}")
assert ((table["kl_bit_bias"] + table["kl_bit_dependence"] - table["kl_uniform"]).abs() < 1e-9).all()
if not FAST:
    assert (table["kl_bit_bias"] > 0.1).all() and (table["kl_bit_dependence"] > 0.3).all()  # both parts, everywhere
    assert gap[~ml2].abs().max() < 0.03  # Q/K/V and ML1: chunks no more correlated inside than across
    assert gap[ml2].max() > 0.03  # ML2 (LayerNorm of ML1's output): somewhat more inside
    assert (structure["effective_dims"] < 25).all()  # ~10–20 effective dimensions of 128–160

# %% [markdown]
# Both parts matter in every layer. **Bias**: each coordinate keeps a sign preference over tokens — LayerNorm centres
# each token, not each coordinate, and its learned offsets and the residual stream are free to shift a coordinate.
# **Dependence**: the activations span ~10–20 effective dimensions of 128 — transformer representations are strongly
# anisotropic — so the bits of a chunk move together. For the attention and the Memory Block's first layer,
# coordinates inside one chunk are no more correlated than coordinates far apart, so regrouping them (a
# permutation) cannot help; only the second layer's chunks, cut from the LayerNorm of ML1's output, are somewhat
# more correlated inside.
#
# ### 5.4 Does it grow with training?

# %%
over = ex.usage_over_training(mf)
fig, ax = plt.subplots(figsize=(8, 3.6))
ex.plot_usage_over_training(over, ax=ax)
plt.show()

# %%
print(over.round(2).to_string())
deeper = [name for name in over.columns if not name.startswith("layer0.")]
drop = over.loc[over.index[0], deeper].mean() - over.loc[over.index[-1], deeper].mean()
print(f"\nlayers 1+: {over.loc[over.index[0], deeper].mean():.0%} of rows used at initialisation, "
      f"{over.loc[over.index[-1], deeper].mean():.0%} after training")
if not FAST:
    first = over.index[1]
    assert over.loc[over.index[0], deeper].between(0.65, 0.95).all()  # 70–90 % at initialisation (reading below)
    assert drop > 0.25  # training concentrates the hashes
    assert over.loc[first, deeper].mean() < over.loc[over.index[-1], deeper].mean()  # … fastest at the start

# %% [markdown]
# At initialisation the deeper layers see nearly random activations and use 70–90 % of their rows. The collapse
# happens within the first 50 steps (warm-up, large updates), then usage recovers slowly. Layer 0's ceiling is there
# from the start.
#
# ### 5.5 How do product keys compare?
#
# Product keys read heads × top-k values per token over a larger pool, so compare each head with uniform addressing
# at the same number of reads (`uniform_fraction_used`), and compare KL divergences, which do not depend on the pool
# size in the same way as the fraction used.

# %%
pk = ex.product_key_table(mp)
print(pk.round(3).to_string())
heads = pk.drop("all heads", level="head")
pk_over = ex.usage_over_training(mp, kind="product_keys")
print("\nfraction of values used per head, by step:")
print(pk_over.round(3).to_string())
views = {layer: ex.product_key_view(mp, layer=layer, head=0) for layer in mp.layers("product_keys")}
first = views[mp.layers("product_keys")[0]].stats
print(f"\ntop-{first['k']} of the n² = {first['values']} keys keep {first['mass_kept']:.0%} of the softmax mass "
      f"(head 0; scored without qk-norm, the same weights: {first['mass_kept_qk_off']:.0%})")
shared = views[mp.layers("product_keys")[0]].data["shared"]
print("shared pool, fraction used by:", ", ".join(f"{name} {used:.0%}" for name, used in shared.items()))
print(f"mean KL to uniform: product-key heads {heads['kl_uniform'].mean():.2f} nats, "
      f"hash tables {table['kl_uniform'].mean():.2f} nats")
assert (pk["fraction_used"] <= pk["uniform_fraction_used"] + 1e-9).all()
if not FAST:
    assert (heads["fraction_used"] < 0.5 * heads["uniform_fraction_used"]).all()
    assert 0.05 < heads["fraction_used"].mean() < 0.15 and abs(heads["uniform_fraction_used"].mean() - 0.982) < 0.002
    assert 0.25 < first["mass_kept"] < 0.45 and first["mass_kept_qk_off"] < 0.1  # a third to 2/5; without qk-norm a few %
    assert heads["kl_uniform"].mean() > table["kl_uniform"].mean()  # less even than the hash tables
    assert (pk_over.iloc[0] > pk_over.iloc[-1]).all()  # concentrated by training too

# %% [markdown]
# Product keys are used even *less* evenly than the hash tables here: each head reads ~10 % of the 4096 values where
# uniform addressing would reach 98 %, with a larger KL. The time course is the same as for hashing: already
# uneven at initialisation (random keys against the queries of a few dozen distinct bytes' embeddings), collapsed
# within the first 50 steps, recovering slowly. Each head prefers a few half-keys (the bright rows and columns of its
# map in §4). The top-k keep a third to two fifths of the full softmax mass (this run: the table's `mass_kept`) — the
# rest is spread over values never read — and
# qk-norm is what makes the scores that peaked: the same weights scored without it keep a few per cent. The two
# layers sharing one pool read partly different values, so together they use more of it than either alone.
#
# ### 5.6 What would a map before hashing do?
#
# The same trained activations hashed again — as they are, after a fixed random rotation (random-hyperplane LSH
# instead of the coordinate axes), and centred (minus their mean over the batch). No retraining yet:

# %%
remap = ex.remap_table(mf)
print(remap.round(3).to_string())
mean = remap.mean()
print(f"\nmean fraction used: x {mean['x_fraction_used']:.3f}, rotated {mean['rotated_fraction_used']:.3f}, "
      f"centred {mean['centred_fraction_used']:.3f}")
if not FAST:
    assert mean["centred_fraction_used"] > mean["x_fraction_used"] + 0.05  # centring removes the bias part
    assert abs(mean["rotated_fraction_used"] - mean["x_fraction_used"]) < 0.05  # a rotation cannot undo low rank

# %% [markdown]
# A rotation leaves the covariance's spectrum as it is — the bits stay as dependent as before (for the Memory Block's
# second layer it even mixes its more structured chunks into worse ones) — while centring removes the unfair part.
# But the model was trained *with* the plain hash; trained with a map in front, it could adapt either way. That needs
# a sweep.
#
# ## 6. A remedy, tested — memlab's own experiment, not the paper's
#
# `ModelConfig.mf_hash_input` (`memlab.layers.hash_input`): `"identity"` is the paper's layer (the default, bit for
# bit); `"rotate"` hashes R x with R a fixed random rotation; `"center"` hashes x − μ, μ a running mean of x updated
# in training. The study `mf-hash-input` trains each with three seeds (`python -m memlab sweep --study mf-hash-input
# --export data/ablations`; MemoryFormer d = 64, 2 layers, 400 steps, ~5 min on 2 cores). Its results are committed
# in `data/ablations/mf-hash-input.csv`; mean ± 95 % CI (Student t) over seeds:

# %%
# NBVAL_CHECK_OUTPUT
study = load_results("mf-hash-input")
metrics = ["val_ppl", "usage_fraction_used", "usage_kl_uniform", "usage_gini"]
summary = summarize(study, metrics=metrics)
print(summary_table(summary, metrics))
s = summary.set_index("point")
paper, rotated, centred = s.loc["x (paper)"], s.loc["rotated x"], s.loc["centred x"]
# centring: more rows used, CIs apart; rotation: no change beyond the CI
assert centred["usage_fraction_used_mean"] - centred["usage_fraction_used_ci"] > \
    paper["usage_fraction_used_mean"] + paper["usage_fraction_used_ci"]
assert abs(rotated["usage_fraction_used_mean"] - paper["usage_fraction_used_mean"]) < \
    rotated["usage_fraction_used_ci"] + paper["usage_fraction_used_ci"]
# perplexity: neither map helps; both are within or above the paper layer's CI
assert rotated["val_ppl_mean"] >= paper["val_ppl_mean"] and centred["val_ppl_mean"] >= paper["val_ppl_mean"]
assert (round(paper["usage_fraction_used_mean"], 2), round(centred["usage_fraction_used_mean"], 2)) == (0.32, 0.37)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
plot_study(study, metric="usage_fraction_used", ax=axes[0], title="fraction of rows used (mean over layers)")
plot_study(study, metric="val_ppl", ax=axes[1], title="validation perplexity")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Centring** raises the share of rows used (and lowers the KL) with non-overlapping 95 % intervals; a **random
# rotation** changes nothing, as §5.6 predicted from the trained activations. Neither improves perplexity at this size:
# both land slightly above the paper's layer (the rotation's interval barely overlaps). More evenly used tables are
# not, by themselves, better tables here — a table row that no token reaches costs memory, not loss. Three seeds at
# 400 steps are small: read these as the direction and size of an effect, not as a result about MemoryFormer at
# scale.
#
# ## Summary
#
# - Uniform hashing uses 1 − e^(−N/2^τ) of the rows; it needs fair, independent bits. Isotropic inputs give them;
#   low-rank or shifted inputs do not (rank r reaches at most 2·Σ_{i<r} C(τ−1, i) buckets of a chunk).
# - The demo's trained MemoryFormer uses 19–55 % of its rows (uniform: 86–100 %), Gini 0.83–0.94, KL 1.7–2.5 nats —
#   not Figure 4's flat histograms. Causes, measured: layer 0 hashes only the few dozen distinct bytes of a batch;
#   every layer's bits are unfair (per-coordinate sign bias) *and* dependent (~10–20 effective dimensions of 128); the
#   concentration appears in the first 50 training steps.
# - Product keys are used even less evenly: each Memory+ head reads ~10 % of its 4096 values (uniform addressing:
#   98 %), with the same time course — uneven at initialisation, collapsed within 50 steps, recovering slowly.
# - memlab's own remedy study: centring the hashed input raises usage (0.32 → 0.37 of rows, CIs apart); a random
#   rotation does not; neither lowers perplexity at this size.
#
# ## Exercises
#
# **Exercise 1.** Predict the fraction of a table's 2^τ rows that N uniformly hashed tokens use, for τ = 8 and N = 64, 256 and
# 2048. Check with `ex.lsh_playground(tau=8, n_tokens=N)`.
#
# <details><summary>Answer</summary>
#
# Each row is missed by one token with probability 1 − 2^−τ, by all N with (1 − 2^−τ)^N ≈ e^(−N/2^τ), so the fraction
# used is 1 − e^(−N/2^τ): N = 64 → 1 − e^(−0.25) = 22.1 %; N = 256 → 63.2 %; N = 2048 → 99.97 %.
# ```python
# for n in (64, 256, 2048):
#     print(n, ex.lsh_playground(tau=8, n_tokens=n).stats["fraction_used"])   # ≈ 0.22, 0.63, 1.00 (mean of 8 tables)
# ```
# The N in `n_tokens` snaps to the slider's values in the widget; the static call takes any N.
# </details>
#
# **Exercise 2.** Find an input distribution that breaks LSH balance — most buckets never used — although every coordinate,
# on its own, is a fair coin (P(x_i ≥ 0) = ½).
#
# <details><summary>Answer</summary>
#
# Fair coins that move together: a low-rank Gaussian. With rank 1 every chunk is a multiple of one vector, so it
# lands in one of **2** buckets (± that vector's sign pattern), for any N:
# ```python
# ex.lsh_playground(tau=8, inputs="correlated", rank=1, n_tokens=8192).stats["fraction_used"]   # ≤ 2/256
# ```
# All of its KL is `kl_from_bit_dependence`; `kl_from_bit_bias` ≈ 0. Other answers: duplicated inputs (a few distinct
# tokens, as in layer 0), or a per-coordinate shift (biased bits — LayerNorm removes only a shift shared by all
# coordinates of a token).
# </details>
#
# **Exercise 3.** Why can a fixed random rotation not fix low-rank inputs, when it does make random-hyperplane LSH out of
# MemoryFormer's axis-aligned hash?
#
# <details><summary>Answer</summary>
#
# A rotation changes the directions the hash tests, not the data: R x still lies in an r-dimensional subspace, and
# a chunk of R x in an (at most) r-dimensional subspace of R^τ, so the rank bound is unchanged. LSH's guarantees
# (notebook 01) are about pairs — collision probability against angle — not about filling buckets evenly; even random
# hyperplanes leave most buckets empty when the data occupy few dimensions. §5.6 and the sweep show it on trained
# activations.
# </details>
#
# **Exercise 4.** A product-key head with n² = 4096 values reads top-k = 8 values for each of 2048 tokens. What fraction of
# the values would uniform addressing reach? Compare with `ex.product_key_table(mp)` in normal mode.
#
# <details><summary>Answer</summary>
#
# 2048 · 8 = 16 384 reads over 4096 values, 4 per value: 1 − e^(−4) = 98.2 % (the table's `uniform_fraction_used`;
# within a token the k values are distinct, which changes this only slightly). The trained heads reach less: some
# half-keys win for most queries.
# </details>


# %% [markdown]
# ### Exercise 5 (build): a dashboard control of your own
#
# Every dashboard in this notebook is an explorer function that returns a `View` and, in front of it, controls that
# re-run the function when they change (`memlab.lab.explorer.Dashboard`). Build that wiring for one control:
# `add_control(view, name, options, fixed)` returns `(control, image)` where
#
# * `control` is an `ipywidgets.Dropdown` with `description=name`, the given `options`, starting at `options[0]`;
# * `image` is an `ipywidgets.Image` that shows `view(**fixed, name=value).png()` for the control's value — drawn once
#   before you return, and again after every change, by a callback registered with
#   `control.observe(callback, names="value")` (the callback receives `change`; the new value is `change["new"]`).
#
# The checker drives your control as a click would (`control.value = ...`) with a view function that records its
# arguments, and checks the control, every call and every image.

# %%
def add_control(view, name, options, fixed):
    raise NotImplementedError  # your code here: return control, image


# %%
memlab.exercises.check_dashboard_control(add_control)

# %% [markdown]
# <details><summary>Answer</summary>
#
# ```python
# import ipywidgets as widgets
#
#
# def add_control(view, name, options, fixed):
#     control = widgets.Dropdown(options=list(options), value=options[0], description=name)
#     image = widgets.Image(format="png")
#
#     def redraw(change=None):
#         value = control.value if change is None else change["new"]
#         image.value = view(**fixed, **{name: value}).png()
#
#     redraw()                                   # the first drawing, before anyone clicks
#     control.observe(redraw, names="value")     # names="value": not on every other trait the widget changes
#     return control, image
# ```
#
# In a notebook: `control, image = add_control(ex.lsh_playground, "inputs", ["isotropic", "correlated"],
# dict(tau=8, n_tokens=2048))`, then `widgets.VBox([control, image])`. Two things `Dashboard` adds: an exception inside
# `view` is caught and shown in the widget (ipywidgets would only log it where nobody looks) and kept for
# `raise_error()`; and sliders update when released (`continuous_update=False`), not at every pixel of a drag.
# </details>
