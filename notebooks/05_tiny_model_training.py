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

# %%
import memlab; FAST = memlab.fast_mode()

# %% [markdown]
# # 05 · Training tiny language models with memory layers
#
# Notebooks 02–04 built the layers. Here they go into a language model and learn. One GPT-style decoder
# (`memlab.lab.models`), one way per entry of its registry of variants to fill its blocks:
#
# | model | attention | FFN |
# |---|---|---|
# | `dense` | W_Q, W_K, W_V, W_O | W2 gelu(W1 x) — the Pythia-like baseline |
# | `moe` | dense | top-k mixture of experts, same *active* parameters as dense |
# | `memoryformer` | Q, K, V from three `HashMemory` tables sharing **one** hash; no W_O | `MemoryBlock` |
# | `pkm` | dense | `ProductKeyMemory` in the centre layer(s), values from one `SharedValues` pool |
# | `memoryplus` | dense | `MemoryPlus` (swilu gating, qk-norm) in the centre layer(s), shared values |
# | `peer` | dense | `PEER`: product keys retrieve single-neuron experts, y = Σ g_i σ(u_iᵀx) v_i (He 2024) |
#
# Everything is trained by one function, `memlab.lab.train.train` — the same code as `python -m memlab train` and
# `make demo` — on the offline **python-docs** corpus (CPython's own documentation, bytes as tokens) with synthetic
# facts mixed in. `FAST` (CI) shrinks every size so the notebook runs in seconds; the committed outputs come from a
# normal run of a few minutes on 2 CPU cores.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from memlab.lab import data
from memlab.lab.demo import observations, results_table, plot_loss_curves, plot_ppl_vs_flops, plot_usage
from memlab.lab.generate import sample_text
from memlab.lab.models import MODEL_TYPES, ModelConfig, build_model
from memlab.lab.train import TrainConfig, load_checkpoint, train

if FAST:
    torch.set_num_threads(1)  # tiny tensors: extra threads only wait on each other
print("fast mode" if FAST else "normal mode", "| models:", ", ".join(MODEL_TYPES))

# %% [markdown]
# ## 1 · Building models from a config
#
# A `ModelConfig` names the variant and its sizes; `build_model` turns it into a `GPT`. Each model reports its
# parameters (total and *active per token* — rows a token does not hash to, values it does not retrieve and experts it
# is not routed to are inactive), the MB of its lookup memories, and its forward FLOPs per token (multiply-adds, the
# MemoryFormer paper's convention). The table below uses one small fixed config, so it is the same in every mode —
# and `tests/test_models.py` checks each number against a hand count.

# %%
# NBVAL_CHECK_OUTPUT
small = dict(d_model=16, n_layers=2, n_heads=2, seq_len=8, tau=4, expand_bits=1, pkm_n_keys=8, pkm_heads=2,
             pkm_topk=2, moe_experts=4, moe_topk=2)
for kind in MODEL_TYPES:
    torch.manual_seed(0)
    model = build_model(kind, **small)
    r = model.report()
    print(f"{kind:13s} params {r['params_total']:6,}  active {r['params_active']:6,}  "
          f"memory {model.memory_bytes():6,} B  FLOPs/token {r['flops_per_token']:6,}")

# %% [markdown]
# Read the MemoryFormer row: it has the most parameters but the fewest active ones and the fewest FLOPs — its tables
# are large, but a token reads only K = d/τ rows of each. That is the paper's trade: FLOPs for memory.
#
# Impossible configs fail at once, with the fix in the message:

# %%
# NBVAL_CHECK_OUTPUT
for bad in (dict(model="memoryformer", d_model=100, n_heads=4, tau=8), dict(d_modl=64)):
    try:
        ModelConfig.from_dict(bad)
    except ValueError as e:
        print("ValueError:", str(e)[:150])

# %% [markdown]
# ## 2 · The data: CPython's docs and a fact set
#
# The default corpus is built once from the standard library's *source files* (docstrings read with `ast`, never by
# importing) plus pydoc's topics, and cached under `data/cache/` with a checksum. Fast mode uses a small in-memory
# slice of the same builder.

# %%
corpus = data.quick_python_docs(40) if FAST else data.load_corpus(verbose=True)
print(corpus)
print(bytes(corpus.train[:400].tolist()).decode(errors="replace"))

# %% [markdown]
# The **fact set**: made-up people with a city, a colour, a job and a pet, written as statements and as questions.
# Questions about half of the people are *held out* — the model sees their facts only as statements. The probe asks
# two things, both scored by exact match of greedy decoding: complete a seen statement (`fact_recall`) and answer a
# held-out question (`fact_qa_heldout`, a transfer test). Chance is 1/12.

# %%
# NBVAL_CHECK_OUTPUT
demo_facts = data.FactSet(3, seed=0)
print("\n".join(demo_facts.sentences()[:6]))
print(demo_facts.probe("question")[:2])
print(f"chance: {demo_facts.chance:.3f}")

# %% [markdown]
# ## 3 · Training every model
#
# Same depth, width, context, batch, seed, data and step count for all. AdamW with warm-up and cosine decay; MemoryFormer's
# tables learn at 3× the base LR (paper), product-key values at their own 1e-3 (released code) with their own
# gradient clipping. Usage statistics of every memory layer are logged during training.

# %%
if FAST:
    model_sizes = dict(d_model=32, n_layers=2, n_heads=2, seq_len=32, tau=8, expand_bits=1, pkm_n_keys=16,
                       pkm_topk=4, moe_experts=4, moe_topk=2)
    train_sizes = dict(steps=12, batch_size=8, warmup_steps=3, eval_every=6, eval_batches=2, stats_every=4,
                       ckpt_every=12, log_every=12, fact_entities=20)
else:
    model_sizes = dict(d_model=128, n_layers=4, n_heads=4, seq_len=128, tau=8, expand_bits=2, pkm_n_keys=64,
                       pkm_heads=4, pkm_topk=8, moe_experts=8, moe_topk=2)
    train_sizes = dict(steps=150, batch_size=16, warmup_steps=15, eval_every=25, eval_batches=8, stats_every=25,
                       ckpt_every=150, log_every=150, fact_entities=100)
out_dir = str((data.repo_root() or Path(".")) / "runs" / "nb05")  # runs/ is git-ignored

results = {}
for kind in MODEL_TYPES:
    cfg = TrainConfig.from_dict({**train_sizes, "name": f"nb05-{kind}", "out_dir": out_dir})
    results[kind] = train(ModelConfig.from_dict({**model_sizes, "model": kind}), cfg, verbose=False, corpus=corpus)
    print(f"{kind:13s} done: val ppl {results[kind]['val_ppl']:.2f}  ({results[kind]['train_seconds']:.0f} s)")

print()
print(results_table(list(results.values())))

# %% [markdown]
# ## 4 · Loss curves, and perplexity against FLOPs

# %%
fig = plot_loss_curves(list(results.values()))
plt.show()

# %%
fig = plot_ppl_vs_flops(list(results.values()))
plt.show()

# %% [markdown]
# What the numbers say, derived from this run (not written in advance):

# %%
for note in observations(list(results.values())):
    print("-", note)

# %% [markdown]
# ## 5 · Samples
#
# Byte-level models this small, trained for minutes, write docstring-flavoured near-English. Every run left a
# checkpoint; `python -m memlab generate runs/nb05/nb05-memoryformer` does the same from the shell.

# %%
for kind in ("dense", "memoryformer", "memoryplus"):
    model, _ = load_checkpoint(results[kind]["run_dir"])
    print(f"--- {kind}")
    print(sample_text(model, "Return the ", max_new_tokens=120 if not FAST else 30, temperature=0.7, seed=0))

# %% [markdown]
# ## 6 · The fact probe

# %%
facts = data.FactSet(train_sizes["fact_entities"], seed=0)
for kind, r in results.items():
    print(f"{kind:13s} statement recall {r['fact_recall']:6.1%}   held-out questions {r['fact_qa_heldout']:6.1%}")
model, _ = load_checkpoint(results["memoryplus"]["run_dir"])
pairs = facts.probe("statement")[:6]
for (prompt, answer), said in zip(pairs, data.greedy_answers(model, [p + " " for p, _ in pairs], 10)):
    print(f"{prompt.strip()!r:40s} → {data.normalize_answer(said)!r:12s} (answer {answer!r})")

# %% [markdown]
# ## 7 · How the memories are used during training
#
# `memlab.stats` on every memory layer at each logged step: the share of rows read at least once on a fixed validation
# batch, and the KL divergence of the usage from uniform (0 = perfectly balanced). MemoryFormer's Figure 4 reports
# near-uniform bucket use; product-key memories are known to collapse onto few rows without care (XLM tracked exactly
# these numbers).

# %%
fig = plot_usage([results["memoryformer"], results["memoryplus"], results["pkm"]])
plt.show()

# %% [markdown]
# ## Exercises
#
# **1.** For the normal-mode MemoryFormer (d = 128, τ = 8, e = 2, 4 layers, context 128, vocab 256), compute the
# forward FLOPs per token by hand from the per-module counts (`HashMemory`: K·d_out + d_in; Q/K/V share the p(z)
# computation; `MemoryBlock`: both layers plus 5 per hidden unit; attention mixing 2·s·d; head d·V) and compare with
# `build_model("memoryformer", ...).flops_per_token()`.
#
# <details><summary>Answer</summary>
#
# K = 16. Per layer: mixing 2·128·128 = 32,768; Q/K/V 3·16·128 + 128 = 6,272; Memory Block: ML1 16·160 + 128 = 2,688,
# norm 5·160 = 800, ML2 16·128 + 160 = 2,208 → 5,696. Four layers: 4·(32,768 + 6,272 + 5,696) = 178,944; head
# 128·256 = 32,768; total **211,712** — vs 950,272 for the dense model (22 %). Attention mixing is now the largest
# part, which is the paper's point: with the projections and FFN gone, only the s²d term is left.
# ```python
# build_model("memoryformer", d_model=128, n_layers=4, n_heads=4, seq_len=128).flops_per_token()
# ```
# </details>
#
# **2.** MemoryFormer has ~4.5× fewer FLOPs per token than dense, yet on this CPU it trains no faster (see `tokens/s`).
# Why? Name two costs that FLOPs do not count.
#
# <details><summary>Answer</summary>
#
# (a) The optimizer updates *every* table row each step (AdamW reads and writes ~17 M parameters plus two moments),
# though a batch touches only a few rows; (b) the gathers and the sparse scatter-add of the backward are memory-bound
# and irregular, unlike the dense GEMMs the FLOP count favours; (c) the hash (sign bits, p(z)) is elementwise work
# that the count treats as ~free. A sparse optimizer (update only hit rows) and the fused kernels of `memlab.reading.kernels`
# are where the FLOP advantage would turn into time.
# </details>
#
# **3.** The paper trains MemoryFormer's tables at 3× the base learning rate (Table 4: 1e-3 → PPL 19.86, 3e-3 → 18.82).
# Retrain the MemoryFormer with `table_lr_mult=1.0` and compare the validation perplexity.
#
# <details><summary>Answer</summary>
#
# ```python
# cfg = TrainConfig.from_dict({**train_sizes, "name": "nb05-mf-lr1", "out_dir": out_dir, "table_lr_mult": 1.0})
# r = train(ModelConfig.from_dict({**model_sizes, "model": "memoryformer"}), cfg, verbose=False, corpus=corpus)
# print(r["val_ppl"], "vs", results["memoryformer"]["val_ppl"])
# ```
# A table row receives gradient only from the tokens that hash to it, scaled by p(z) ≤ 1, so its updates are rarer and
# smaller than a dense weight's: with the same LR the tables learn more slowly and perplexity is higher after a fixed
# budget. How large the gap is at this scale is what the run tells you.
# </details>
#
# **4.** A run was killed at step 100 of 200. How do you continue it, and why do the losses come out *identical* to an
# uninterrupted run on CPU?
#
# <details><summary>Answer</summary>
#
# `python -m memlab train --name NAME --resume` (or `train(..., resume=True)`). The checkpoint, written atomically at
# every `ckpt_every` steps, holds the model, the AdamW moments, the step (the LR schedule is a function of it), the
# data sampler's `torch.Generator` state, the global RNG state and the history so far. Nothing else is random, and
# CPU kernels are deterministic, so every subsequent batch and update is the same. `tests/test_train.py` checks
# bit-identical losses.
# </details>
