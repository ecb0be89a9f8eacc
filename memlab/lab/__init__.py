"""The lab around the layers: tiny models, training, data, measurement and the command line.

models/        tiny GPTs whose FFN (or projections) is a memory layer, one registry of variants
train.py       the trainer (build, step, evaluate, checkpoint; exact resume)
data.py        the offline corpus and the synthetic fact probe
knowledge.py   a knowledge base made from a seed, its fact stream (``task="knowledge"``) and the probe scoring it
               in bits; capacity.py: reading the ``capacity`` study (summary, pre-registered verdict, figures)
stats.py       usage statistics of memory rows (fraction used, entropy, KL, Gini, top-x% share)
snapshots.py   usage snapshots: per-row hit counts of every memory layer at each stats step, kept in the run folder
explorer/      notebook 08's dashboards (LSH playground, run explorer, product-key explorer) and its investigation
flops.py       the papers' FLOP and memory formulas
tables.py      the one text-table formatter (commands and notebooks) and CSV text
plots.py       memlab's figures;  timing.py: side-by-side timing;  io.py: atomic writes;  env.py: environment report
row_sparse.py  row-sparse value training: lazy AdamW on the rows read
values_parallel.py  training with the values sharded by columns over processes (``--set values_parallel=P``, torchrun);
               distributed.py: process groups, ranks spawned from Python; sharded_checkpoint.py: per-rank checkpoints,
               re-sharding; comm_model.py: bytes per token; row_sharding.py, parallel_checks.py: notebook 10 and tests
sweep.py       ablation sweeps (``sweep`` command): points × seeds through train(), cached, resumable, DataFrames
studies.py     the shipped studies, one per paper table (mf-tau, pkm-topk, placement, matched-flops, …)
verdicts.py    each study's paper claim as data, and a verdict computed from the results (Welch 95 % CI)
ablations.py   the committed results (data/ablations/*.csv), per-study figures and notebook 06's explorer widget
demo.py, compare.py, generate.py, identities.py   the CLI commands ``demo``, ``compare``, ``generate`` and the
               identities that ``compare`` checks
"""
