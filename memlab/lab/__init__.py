"""The lab around the layers: tiny models, training, data, measurement and the command line.

models/        tiny GPTs whose FFN (or projections) is a memory layer, one registry of variants
train.py       the trainer (build, step, evaluate, checkpoint; exact resume)
data.py        the offline corpus and the synthetic fact probe
stats.py       usage statistics of memory rows (fraction used, entropy, KL, Gini, top-x% share)
flops.py       the papers' FLOP and memory formulas
tables.py      the one text-table formatter (commands and notebooks) and CSV text
plots.py       memlab's figures;  timing.py: side-by-side timing;  io.py: atomic writes;  env.py: environment report
row_sparse.py  row-sparse value training: lazy AdamW on the rows read
values_parallel.py  training with the values sharded by columns over processes (``--set values_parallel=P``, torchrun);
               distributed.py: process groups, ranks spawned from Python; sharded_checkpoint.py: per-rank checkpoints,
               re-sharding; comm_model.py: bytes per token; row_sharding.py, parallel_checks.py: notebook 10 and tests
sweep.py       ablation sweeps (``sweep`` command): points × seeds through train(), cached, resumable, DataFrames
studies.py     the shipped studies, one per paper table (mf-tau, pkm-topk, placement, matched-flops, …)
demo.py, compare.py, generate.py, identities.py   the CLI commands ``demo``, ``compare``, ``generate`` and the
               identities that ``compare`` checks
"""
