"""memlab.plots: figure data comes from memlab.lab.flops / memlab.stats and every helper draws on the Agg backend."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from memlab import flops, plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_figure1_data_matches_the_formulas():
    data = plots.figure1_data(hidden_sizes=[512, 1024, 3072], seq_lens=[1024, 2048], tau=8)
    assert set(data) == {1024, 2048}
    for s, series in data.items():
        assert series["d"] == [512, 1024, 3072]
        for d, t, m in zip(series["d"], series["transformer"], series["memoryformer"]):
            assert t == pytest.approx(flops.transformer_block_flops(s, d) / 1e9)
            assert m == pytest.approx(flops.memoryformer_block_flops(s, d, d // 8) / 1e9)
            assert m < t  # MemoryFormer needs fewer FLOPs at every size


def test_figure1_default_axis_is_the_papers():
    data = plots.figure1_data()
    assert data[2048]["d"][0] == 512 and data[2048]["d"][-1] == 3072
    # Table 1's Pythia-410M / MemoryFormer-base totals sit on the s = 2048 curves
    i = data[2048]["d"].index(1024)
    assert round(data[2048]["transformer"][i], 1) == 34.4
    assert round(data[2048]["memoryformer"][i], 1) == 10.2


def test_figure1_rejects_sizes_not_divisible_by_tau():
    with pytest.raises(ValueError, match="divisible"):
        plots.figure1_data(hidden_sizes=[500], tau=8)


def test_plot_figure1_draws_two_lines_per_sequence_length():
    ax = plots.plot_figure1(seq_lens=(1024, 2048))
    assert len(ax.get_lines()) == 4
    assert "hidden size" in ax.get_xlabel()


def test_plot_figure1_uses_given_axes():
    _, ax = plt.subplots()
    assert plots.plot_figure1(ax=ax, seq_lens=(2048,)) is ax
    assert len(ax.get_lines()) == 2


def test_plot_temperature_curves_start_at_one_half():
    ax = plots.plot_temperature(temperatures=(0.5, 1.0, 2.0), points=11)
    lines = ax.get_lines()
    assert len(lines) == 3
    for line in lines:
        y = line.get_ydata()
        assert y[5] == pytest.approx(0.5)  # z = 0 sits in the middle of the grid
        assert y.max() <= 1.0


def test_plot_usage_accepts_tensor_or_mapping():
    counts = torch.tensor([0.0, 3.0, 1.0, 5.0])
    ax = plots.plot_usage(counts)
    assert list(ax.get_lines()[0].get_ydata()) == [5.0, 3.0, 1.0, 0.0]
    ax = plots.plot_usage({"a": counts, "b": torch.ones(7)}, log=False)
    assert len(ax.get_lines()) == 2


def test_format_table_is_aligned_and_formats_floats():
    text = plots.format_table([{"name": "x", "v": 1.23456, "ok": True}, {"name": "longer", "v": 10.0, "ok": False}])
    lines = text.splitlines()
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1
    assert "1.23" in lines[2] and "True" in lines[2]
    assert plots.format_table([]) == ""
    assert plots.format_table([{"a": 1, "b": 2}], columns=["b"]).splitlines()[0].strip() == "b"
