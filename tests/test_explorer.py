"""The bucket and key explorer: the diagnostics against brute force and closed forms, the three views on tiny trained
runs, and every dashboard driven programmatically — move a control, check that the statistics and the figure change
as they should, and that an exception inside an update is kept and re-raised rather than swallowed."""
from __future__ import annotations

import math

import pytest
import torch

from memlab import stats
from memlab.addressing.lsh import collision_probability
from memlab.lab import data as data_lib
from memlab.lab import explorer as ex
from memlab.lab.models import ModelConfig
from memlab.lab.train import TrainConfig, train
from memlab.layers.hash_input import HashInput, random_rotation
from memlab.layers.hash_memory import HashMemory

TINY = dict(d_model=16, n_layers=2, n_heads=2, seq_len=16, tau=4, expand_bits=1, pkm_n_keys=8, pkm_heads=2,
            pkm_topk=2, n_memory_layers=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny MemoryFormer and a tiny Memory+ (two memory layers sharing one value pool), 8 steps, stats every 4."""
    root = tmp_path_factory.mktemp("explorer")
    path = root / "docs.txt"
    docs = data_lib.docstrings_from_source((data_lib.stdlib_dir() / "argparse.py").read_bytes(), "argparse")
    path.write_text("\n\n".join(d for _, d in docs))
    out = {}
    for kind in ("memoryformer", "memoryplus"):
        cfg = TrainConfig.from_dict(dict(name=kind, out_dir=str(root / "runs"), text=str(path), steps=8, batch_size=4,
                                         warmup_steps=2, eval_every=4, eval_batches=1, stats_every=4, ckpt_every=8,
                                         log_every=8, fact_entities=8))
        train(ModelConfig.from_dict({**TINY, "model": kind}), cfg, verbose=False)
        out[kind] = ex.load_run_data(root / "runs" / kind)
    out["root"] = root / "runs"
    return out


# ---------------------------------------------------------------------------------------------------------- diagnostics
def test_lorenz_curve_gives_the_gini_coefficient():
    counts = torch.tensor([0.0, 1, 1, 3, 7, 0, 2, 30])
    x, y = ex.lorenz_curve(counts)
    assert (x[0], y[0], x[-1], y[-1]) == (0, 0, 1, 1)
    assert abs(ex.gini_from_lorenz(x, y) - stats.gini(counts)) < 1e-12
    assert abs(ex.gini_from_lorenz(*ex.lorenz_curve(torch.ones(16)))) < 1e-12


def test_kl_splits_into_bit_bias_and_bit_dependence():
    gen = torch.Generator().manual_seed(0)
    tau = 4
    fair = ex.hash_counts(torch.randn(200_000, tau, generator=gen), tau)
    split = ex.kl_decomposition(fair)
    assert float(split["kl"]) < 1e-3 and float(split["bias"]) < 1e-3
    biased = ex.hash_counts(torch.randn(200_000, tau, generator=gen) + torch.tensor([1.0, 0, 0, 0]), tau)
    split = ex.kl_decomposition(biased)
    q = 1 - torch.distributions.Normal(0, 1).cdf(torch.tensor(-1.0)).item()  # P(z_0 + 1 ≥ 0)
    expected = math.log(2) + q * math.log(q) + (1 - q) * math.log(1 - q)
    assert abs(float(split["bias"]) - expected) < 2e-3  # one unfair bit, independent of the others
    assert float(split["dependence"]) < 1e-3
    copies = torch.randn(200_000, 1, generator=gen).repeat(1, tau)  # four copies of one bit
    split = ex.kl_decomposition(ex.hash_counts(copies, tau))
    assert float(split["bias"]) < 1e-3 and abs(float(split["dependence"]) - 3 * math.log(2)) < 1e-3
    for value in ex.kl_decomposition(torch.rand(3, 16) * 10).values():
        assert torch.all(value >= -1e-12)


def test_bit_balance_reads_the_bits_in_memlabs_order():
    counts = torch.zeros(1, 8)
    counts[0, 0b011] = 3  # bits 0 and 1 set
    counts[0, 0b100] = 1  # bit 2 set
    assert torch.allclose(ex.bit_balance(counts), torch.tensor([[0.75, 0.75, 0.25]], dtype=torch.float64))


@pytest.mark.parametrize("tau, rank", [(4, 1), (4, 2), (5, 3), (6, 2)])
def test_max_buckets_for_rank_is_reached_and_never_exceeded(tau, rank):
    gen = torch.Generator().manual_seed(tau * 10 + rank)
    basis = torch.randn(rank, tau, generator=gen, dtype=torch.float64)
    z = torch.randn(400_000, rank, generator=gen, dtype=torch.float64) @ basis
    reached = int((ex.hash_counts(z, tau) > 0).sum())
    assert reached == ex.max_buckets_for_rank(tau, rank)
    assert ex.max_buckets_for_rank(tau, tau) == 2**tau and ex.max_buckets_for_rank(8, 1) == 2


def test_uniform_baseline_matches_the_closed_form():
    base = ex.uniform_baseline(2048, 256, trials=10)
    assert abs(base["fraction_used"] - (1 - math.exp(-8))) < 2e-3
    assert abs(base["kl_uniform"] - 255 / (2 * 2048)) < 0.02  # the plug-in KL of uniform draws, ≈ (R − 1)/(2N)


def test_chunk_correlation_and_distinct_inputs():
    gen = torch.Generator().manual_seed(0)
    iso = ex.chunk_correlation(torch.randn(5000, 16, generator=gen), 4)
    assert iso["within_chunk"] < 0.05 and iso["effective_dims"] > 14
    low = ex.chunk_correlation(torch.randn(5000, 2, generator=gen) @ torch.randn(2, 16, generator=gen), 4)
    assert low["effective_dims"] < 2.01 and low["within_chunk"] > 0.3
    assert ex.distinct_inputs(torch.tensor([[1.0, 2], [1, 2], [0, 0]])) == 2


# ---------------------------------------------------------------------------------------------------------- remedy
def test_hash_input_identity_builds_nothing_and_the_others_map_x():
    torch.manual_seed(0)
    plain = HashMemory(16, 8, tau=4)
    assert plain.input_map is None and "input_map" not in str(dict(plain.named_buffers()))
    q = random_rotation(16, torch.Generator().manual_seed(0))
    assert torch.allclose(q @ q.T, torch.eye(16), atol=1e-5)
    layer = HashMemory(16, 8, tau=4, hash_input="rotate")
    x = torch.randn(5, 16)
    torch.testing.assert_close(layer.codes(x), plain.codes(x @ layer.input_map.rotation.T), rtol=0, atol=0)
    centred = HashMemory(16, 8, tau=4, hash_input="center")
    centred.train()
    shifted = torch.randn(64, 16) + 3.0
    before = centred.codes(shifted)
    for _ in range(200):
        centred(shifted)  # each training forward moves the running mean towards the batch mean
    assert torch.allclose(centred.input_map.running_mean, shifted.mean(0), atol=1e-3)
    assert (before == 15).float().mean() > 0.9  # all four bits set: every coordinate is positive before centring
    assert (centred.codes(shifted) == 15).float().mean() < 0.3
    centred.eval()
    mean = centred.input_map.running_mean.clone()
    centred(shifted)
    assert torch.equal(mean, centred.input_map.running_mean)  # eval mode leaves it
    assert HashInput(16, "rotate").flops_per_token() == 256
    with pytest.raises(ValueError, match="hash_input"):
        HashMemory(16, 8, tau=4, hash_input="spin")
    with pytest.raises(ValueError, match="mf_hash_input"):
        ModelConfig.from_dict({"model": "memoryformer", "mf_hash_input": "spin"})


@pytest.mark.parametrize("mode", ["rotate", "center"])
def test_models_with_a_hash_input_map_resume_bit_for_bit(mode, runs, tmp_path):
    text = runs["root"].parent / "docs.txt"
    config = ModelConfig.from_dict({**TINY, "model": "memoryformer", "mf_hash_input": mode})
    base = dict(out_dir=str(tmp_path), text=str(text), steps=6, batch_size=4, warmup_steps=2, eval_every=3,
                eval_batches=1, stats_every=3, ckpt_every=3, log_every=6, fact_entities=8)
    straight = train(config, TrainConfig.from_dict({**base, "name": "a"}), verbose=False)
    train(config, TrainConfig.from_dict({**base, "name": "b", "stop_after": 3}), verbose=False)
    resumed = train(config, TrainConfig.from_dict({**base, "name": "b"}), resume=True, verbose=False)
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in resumed["history"]]
    plain = ModelConfig.from_dict({**TINY, "model": "memoryformer"})
    from memlab.lab.models import build_model
    extra = build_model(config).flops_per_token()["total"] - build_model(plain).flops_per_token()["total"]
    per_map = {"rotate": lambda d: d * d, "center": lambda d: d}[mode]
    # one map per attention (Q, K, V hash once) and one per Memory Block layer (d → d, then (τ + e)·K → …)
    assert extra == TINY["n_layers"] * (2 * per_map(16) + per_map(20))


# ------------------------------------------------------------------------------------------------------ LSH playground
def test_playground_isotropic_inputs_use_buckets_like_uniform_hashing():
    v = ex.lsh_playground(tau=6, inputs="isotropic", n_tokens=4096)
    assert abs(v.stats["fraction_used"] - v.stats["uniform_fraction_used"]) < 0.01
    assert v.stats["kl_uniform"] < 0.05
    c = v.data["collisions"]
    ok = c["pairs"] > 500
    assert torch.allclose(c["bit"][ok], collision_probability(c["theta"][ok]), atol=0.03)  # 1 − θ/π per bit
    assert v.data["counts"].shape == (8, 64) and torch.all(v.data["counts"].sum(-1) == 4096)


def test_playground_low_rank_inputs_reach_at_most_the_rank_bound():
    for rank in (1, 2, 3):
        v = ex.lsh_playground(tau=8, inputs="correlated", rank=rank, n_tokens=8192)
        assert v.stats["fraction_used"] <= v.stats["max_fraction_for_rank"] + 1e-12
        assert v.stats["max_fraction_for_rank"] == ex.max_buckets_for_rank(8, rank) / 256


def test_playground_layernorm_removes_a_shift_shared_by_all_coordinates():
    x = torch.randn(4096, 32, generator=torch.Generator().manual_seed(1)) + 2.0
    off = ex.lsh_playground(tau=8, inputs="shifted", activations={"shifted": x}, n_tokens=4096)
    on = ex.lsh_playground(tau=8, inputs="shifted", activations={"shifted": x}, n_tokens=4096, layernorm=True)
    assert off.stats["fraction_used"] < 0.2 < 0.9 < on.stats["fraction_used"]
    assert off.stats["kl_from_bit_bias"] > 2.0 > 0.1 > on.stats["kl_from_bit_bias"]


def test_playground_rejects_a_tau_that_does_not_divide_the_width():
    with pytest.raises(ValueError, match="try tau in"):
        ex.lsh_playground(tau=5, inputs="a", activations={"a": torch.randn(10, 16)})


def test_playground_widget_updates_and_surfaces_errors():
    dash = ex.lsh_playground_widget(activations={"acts": torch.randn(512, 24)})
    dash.raise_error()
    first_png, first = dash.image.value, dash.result
    assert first.stats["rows_per_table"] == 256 and first_png[:4] == b"\x89PNG"
    dash.controls["tau"].value = 4  # a user's click
    dash.raise_error()
    assert dash.result.stats["rows_per_table"] == 16 and dash.result.data["counts"].shape == (8, 16)
    assert dash.image.value != first_png
    t1 = dash.result.data["p"].mean()
    dash.controls["temperature"].value = 10.0
    assert dash.result.data["p"].mean() < t1  # a flatter softmax over buckets: smaller p(z)
    dash.controls["inputs"].value = "acts"  # width 24: τ must divide it, the slider offers only those τ
    dash.raise_error()
    assert list(dash.controls["tau"].options) == [2, 3, 4, 6, 8, 12]
    assert dash.result.stats["width"] == 24 and dash.controls["table"].max == 24 // dash.controls["tau"].value - 1
    dash.controls["inputs"].value = "correlated"
    dash.set(rank=1, tau=8)
    assert dash.result.stats["fraction_used"] <= 2 / 256
    with pytest.raises(ValueError, match="no control"):
        dash.set(colour="red")


def test_a_dashboard_keeps_the_exception_of_a_callback_instead_of_swallowing_it():
    import ipywidgets as widgets

    def view(n):
        if n < 0:
            raise ValueError(f"n={n} must be >= 0")
        return ex.lsh_playground(tau=2, n_tokens=64 + n, tables=2, pairs=100)

    dash = ex.Dashboard(view, {"n": widgets.IntSlider(value=0, min=-5, max=5)})
    assert dash.error is None and dash.result.stats["tokens"] == 64
    good = dash.image.value
    dash.controls["n"].value = -1  # what a click in the browser does: the callback raises
    assert isinstance(dash.error, ValueError) and "n=-1 must be" in dash.error_box.value
    assert dash.image.value == good and dash.result.stats["tokens"] == 64  # the last good view stays on screen
    with pytest.raises(ValueError, match="must be >= 0"):
        dash.raise_error()
    dash.controls["n"].value = 3
    dash.raise_error()
    assert dash.error_box.value == "" and dash.result.stats["tokens"] == 67


# ---------------------------------------------------------------------------------------------------------- runs
def test_run_data_reads_a_run_folder_and_rebuilds_initialisation(runs):
    run = runs["memoryformer"]
    assert run.steps == [0, 4, 8] and run.checkpoint is not None and "val_ppl" in run.results
    assert run.layers("hash") == [f"layer{i}.{f}" for i in range(2) for f in ("qkv", "mb1", "mb2")]
    for which, step in (("init", 0), ("final", 8)):
        x = ex.layer_activations(run, "layer1.mb2", which)
        assert torch.equal(ex.hash_counts(x, 5), run.snapshots.counts("layer1.mb2", step))
    assert set(ex.find_runs(runs["root"])) == {"memoryformer", "memoryplus"}


def test_memoryformer_view_shows_the_chosen_table_and_step(runs):
    run = runs["memoryformer"]
    v = ex.memoryformer_view(run, layer=1, family="mb2", table=2, step=8)
    assert torch.equal(v.data["counts"], run.snapshots.counts("layer1.mb2", 8)[2])
    assert torch.equal(v.data["counts_init"], run.snapshots.counts("layer1.mb2", 0)[2])
    assert v.stats["rows"] == 32 and v.stats["tokens"] == 64  # τ + e = 5 bits; 4 × 16 tokens
    assert v.stats["fraction_used"] == stats.fraction_used(v.data["counts"])
    assert abs(v.stats["kl_from_bit_bias"] + v.stats["kl_from_bit_dependence"] - v.stats["kl_uniform"]) < 1e-9
    assert ex.memoryformer_view(run, step=5).stats["step"] == 4  # nearest recorded step
    with pytest.raises(ValueError, match="out of range"):
        ex.memoryformer_view(run, table=9)
    with pytest.raises(ValueError, match="no hash layer"):
        ex.memoryformer_view(run, layer=7)
    with pytest.raises(ValueError, match="no hash layer"):
        ex.memoryformer_view(runs["memoryplus"])


def test_figure4_layout_has_q_k_v_from_one_hash_and_both_memory_block_layers(runs):
    v = ex.figure4(runs["memoryformer"], layer=0, table=1)
    assert [ax.get_title() for ax in v.figure.axes] == ["Q", "K", "V", "Memory Block 1", "Memory Block 2"]
    heights = [list(ax.patches[0].get_data().values) for ax in v.figure.axes]  # each panel: one step outline
    assert heights[0] == heights[1] == heights[2] and len(heights[4]) == 32
    assert abs(sum(heights[3]) - 1) < 1e-9
    assert torch.equal(v.data["mb1"], runs["memoryformer"].snapshots.counts("layer0.mb1", 8)[1] / 64)


def test_run_explorer_widget_follows_its_controls(runs):
    dash = ex.run_explorer_widget({"mf": runs["memoryformer"].path})
    dash.raise_error()
    assert list(dash.controls["step"].options) == [0, 4, 8] and dash.controls["step"].value == 8
    png = dash.image.value
    dash.controls["family"].value = "mb2"
    dash.raise_error()
    assert dash.result.stats["rows"] == 32 and dash.image.value != png
    dash.controls["step"].value = 0
    assert dash.result.stats["fraction_used"] == dash.result.stats["fraction_used_at_init"]
    dash.controls["table"].value = 3
    assert torch.equal(dash.result.data["counts"], runs["memoryformer"].snapshots.counts("layer0.mb2", 0)[3])
    dash.controls["layout"].value = "figure4"
    dash.raise_error()
    assert "Figure 4" in dash.result.title
    with pytest.raises(FileNotFoundError, match="no run with MemoryFormer"):
        ex.run_explorer_widget({"mp": runs["memoryplus"]})


# -------------------------------------------------------------------------------------------------------- product keys
def test_kept_mass_is_the_softmax_share_of_the_best_k():
    s1, s2 = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    full = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)
    top = full.sort(-1, descending=True).values
    lse = torch.logsumexp(full, -1)
    for k in (1, 5, 36):
        expected = torch.softmax(full, -1).sort(-1, descending=True).values[:, :k].sum(-1)
        torch.testing.assert_close(ex.kept_mass(top, lse, k), expected)
    with pytest.raises(ValueError, match="k=37"):
        ex.kept_mass(top, lse, 37)


def test_product_key_view(runs):
    run = runs["memoryplus"]
    v = ex.product_key_view(run, layer="layer1.pkm", head=1, step=8, k=2)
    counts = run.snapshots.counts("layer1.pkm", 8)
    assert torch.equal(v.data["grid"], counts[1].reshape(8, 8))
    assert v.stats["qk_norm_trained"] is True and v.stats["k"] == 2
    mass = v.data["mass_qk_on"]
    assert torch.all(mass[1:] >= mass[:-1]) and float(mass[-1]) <= 1  # more keys keep more mass
    assert v.stats["mass_kept"] == v.stats["mass_kept_qk_on"] == float(mass[1])
    shared = v.data["shared"]
    assert set(shared) == {"layer0.pkm", "layer1.pkm", "any layer", "2+ layers"}
    assert shared["any layer"] >= max(shared["layer0.pkm"], shared["layer1.pkm"]) >= shared["2+ layers"]
    assert ex.product_key_view(run, layer=0).stats["layer"] == "layer0.pkm"
    with pytest.raises(ValueError, match="no product-key layer"):
        ex.product_key_view(runs["memoryformer"])
    with pytest.raises(ValueError, match="head=5"):
        ex.product_key_view(run, head=5)


def test_product_key_widget_follows_its_controls(runs):
    dash = ex.product_key_widget({"mp": runs["memoryplus"]}, k=1)
    dash.raise_error()
    assert dash.controls["k"].value == 1 and dash.controls["k"].max == 8
    one = dash.result.stats["mass_kept"]
    png = dash.image.value
    dash.controls["k"].value = 8
    dash.raise_error()
    assert dash.result.stats["mass_kept"] > one and dash.image.value != png
    dash.controls["head"].value = 1
    assert torch.equal(dash.result.data["counts"], runs["memoryplus"].snapshots.counts("layer0.pkm", 8)[1])
    dash.controls["layer"].value = "layer1.pkm"
    dash.raise_error()
    assert dash.result.stats["layer"] == "layer1.pkm"
