"""The bucket and key explorer: interactive views of how memory rows are used (notebook 08).

Each dashboard is one function that returns a ``View`` (figure + statistics + the arrays drawn) — the *static call*
a notebook or a test makes with explicit arguments — and a ``*_widget`` that puts ipywidgets controls in front of the
same function:

    lsh_playground(tau, temperature, layernorm, inputs, rank, n_tokens, ...)     lsh_playground_widget(activations)
        sign hashing on isotropic, correlated or real inputs against uniform bucket use
    memoryformer_view(run, layer, family, table, step, layout)                   run_explorer_widget(runs)
        a trained MemoryFormer's hash tables, per table and step, against initialisation; ``figure4``: the paper's
        Figure 4 layout
    product_key_view(run, layer, head, step, k)                                  product_key_widget(runs)
        a product-key memory's n × n value hits, the softmax mass its top-k keep, qk-norm on vs off, shared values

view.py         View, lorenz_curve;  dashboard.py: Dashboard (controls → function → image, errors kept, not swallowed)
runs.py         RunData: a run folder or sweep point read from its own files; the model at init or from its checkpoint
diagnostics.py  the causes of uneven buckets: bit bias vs bit dependence (KL split), rank and distinct-input bounds,
                the uniform-hashing floor at the same number of tokens
investigation.py  notebook 08's questions as DataFrames: per-layer usage, usage over training, input structure,
                what a rotation or centring would do, product-key heads
"""
from .dashboard import Dashboard
from .diagnostics import (bit_balance, chunk_correlation, distinct_inputs, hash_counts, kl_decomposition,
                          max_buckets_for_rank, mean_summary, sign_bias, uniform_baseline)
from .investigation import (hash_layer_table, input_structure, plot_usage_over_training, product_key_table,
                            remap_table, usage_over_training)
from .lsh_playground import lsh_playground, lsh_playground_widget, synthetic_inputs
from .memoryformer_runs import FAMILIES, figure4, memoryformer_view, run_explorer_widget
from .product_keys import kept_mass, product_key_view, product_key_widget, shared_value_use
from .runs import RunData, find_runs, layer_activations, load_run_data, load_runs, model_at
from .view import View, gini_from_lorenz, lorenz_curve

__all__ = [
    "Dashboard", "View", "lorenz_curve", "gini_from_lorenz",
    "lsh_playground", "lsh_playground_widget", "synthetic_inputs",
    "memoryformer_view", "figure4", "run_explorer_widget", "FAMILIES",
    "product_key_view", "product_key_widget", "kept_mass", "shared_value_use",
    "RunData", "load_run_data", "load_runs", "find_runs", "model_at", "layer_activations",
    "bit_balance", "kl_decomposition", "max_buckets_for_rank", "uniform_baseline", "mean_summary", "sign_bias",
    "chunk_correlation", "distinct_inputs", "hash_counts",
    "hash_layer_table", "usage_over_training", "input_structure", "remap_table", "product_key_table",
    "plot_usage_over_training",
]
