"""Verdicts on the papers' claims (memlab/lab/verdicts.py) and the ablation views of notebook 06
(memlab/lab/ablations.py), on hand-made DataFrames where the verdict that must come out is known."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from memlab.lab import ablations, verdicts
from memlab.lab.studies import STUDIES, get_study
from memlab.lab.sweep import summarize, t_quantile
from memlab.lab.verdicts import (BETTER, INCONCLUSIVE, NO_CLAIM, NO_DATA, OPEN, OPPOSITE, REPLICATES, SAME,
                                 TOO_FEW_SEEDS, Claim, compare, evaluate)


def frame(points: dict[str, list[float]], metric: str = "val_ppl", study: str = "toy", **extra) -> pd.DataFrame:
    """One row per (point, seed), as ``sweep.load`` returns them (status "ok")."""
    rows = [{"study": study, "point": p, "seed": s, metric: v, "status": "ok", **extra}
            for p, values in points.items() for s, v in enumerate(values)]
    return pd.DataFrame(rows)


def claim(kind=BETTER, better="a", worse="b", metric="val_ppl") -> Claim:
    return Claim("toy", "Paper (arXiv 0000.00000)", "Table 1", "a beats b", "a 1.0, b 2.0", kind, better, worse,
                 metric=metric)


# ------------------------------------------------------------------------------------------------ Welch's interval
def test_welch_interval_by_hand():
    # a = 1, 2, 3 and b = 4, 5, 6: gain 3, SE² = 1/3 + 1/3, ν = (2/3)² / (2 · (1/3)² / 2) = 4
    c = compare([1, 2, 3], [4, 5, 6], lower_better=True)
    half = t_quantile(0.975, 4) * math.sqrt(2 / 3)
    assert c.gain == pytest.approx(3.0)
    assert c.dof == pytest.approx(4.0)
    assert (c.low, c.high) == pytest.approx((3 - half, 3 + half))
    assert half == pytest.approx(2.2669, abs=1e-4)  # t_{0.975, 4} = 2.7764
    assert (c.mean_b, c.mean_w, c.n_b, c.n_w) == (2.0, 5.0, 3, 3)


def test_welch_unequal_variances_and_sizes():
    better, worse = [10.0, 10.2, 9.8, 10.1], [11.0, 13.0]
    c = compare(better, worse)
    vb = pd.Series(better).var() / 4
    vw = pd.Series(worse).var() / 2
    dof = (vb + vw) ** 2 / (vb ** 2 / 3 + vw ** 2 / 1)
    assert c.dof == pytest.approx(dof)
    assert c.high - c.gain == pytest.approx(t_quantile(0.975, dof) * math.sqrt(vb + vw))


def test_higher_is_better_flips_the_sign():
    assert compare([0.9, 0.8], [0.1, 0.2], lower_better=False).gain == pytest.approx(0.7)
    assert compare([0.9, 0.8], [0.1, 0.2], lower_better=True).gain == pytest.approx(-0.7)


def test_group_means_carry_the_same_ci_as_summarize():
    df = frame({"a": [3.0, 3.5, 2.9], "b": [4.0, 4.4, 4.1]})
    c = evaluate(claim(), df).comparison
    s = summarize(df, metrics=["val_ppl"]).set_index("point")
    assert c.ci_b == pytest.approx(s.loc["a", "val_ppl_ci"])
    assert c.ci_w == pytest.approx(s.loc["b", "val_ppl_ci"])


def test_zero_variance_gives_a_point_interval():
    c = compare([2.0, 2.0], [3.0, 3.0])
    assert (c.low, c.high) == (1.0, 1.0)
    assert verdicts.decide(BETTER, c) == REPLICATES
    assert verdicts.decide(SAME, compare([2.0, 2.0], [2.0, 2.0])) == REPLICATES


# ------------------------------------------------------------------------------------------ each verdict comes out
def test_trend_replicates():
    v = evaluate(claim(), frame({"a": [10.0, 10.1, 9.9], "b": [12.0, 12.2, 11.9]}))
    assert v.verdict == REPLICATES
    assert v.comparison.low > 0
    assert "trend replicates" in v.sentence() and "CI [" in v.sentence()


def test_opposite():
    # the paper's better point is clearly worse here: this claim fails, and the verdict must say so
    v = evaluate(claim(), frame({"a": [12.0, 12.2, 11.9], "b": [10.0, 10.1, 9.9]}))
    assert v.verdict == OPPOSITE
    assert v.comparison.high < 0


def test_inconclusive_when_the_interval_contains_zero():
    v = evaluate(claim(), frame({"a": [10.0, 11.5, 9.0], "b": [10.5, 9.5, 11.8]}))
    assert v.verdict == INCONCLUSIVE
    assert v.comparison.low < 0 < v.comparison.high


def test_a_difference_smaller_than_the_noise_is_inconclusive_even_if_every_mean_agrees():
    # a's mean is better, but by less than the seed noise: not "replicates"
    v = evaluate(claim(), frame({"a": [10.0, 10.9, 9.5], "b": [10.3, 11.2, 9.9]}))
    assert v.comparison.gain > 0
    assert v.verdict == INCONCLUSIVE


def test_no_difference_claim():
    same = evaluate(claim(SAME), frame({"a": [10.0, 10.4, 9.8], "b": [10.1, 9.9, 10.3]}))
    assert same.verdict == REPLICATES
    assert same.comparison.low < 0 < same.comparison.high
    assert same.sentence().endswith("no difference detectable, as the paper reports")
    differ = evaluate(claim(SAME), frame({"a": [10.0, 10.1, 9.9], "b": [12.0, 12.2, 11.9]}))
    assert differ.verdict == OPPOSITE
    assert differ.sentence().endswith("a difference the paper did not find")


def test_open_question_reports_numbers_but_no_verdict():
    v = evaluate(claim(OPEN), frame({"a": [10.0, 10.1, 9.9], "b": [12.0, 12.2, 11.9]}))
    assert v.verdict == NO_CLAIM
    assert v.comparison.gain == pytest.approx(2.0333, abs=1e-3) and v.comparison.low > 0


def test_too_few_seeds_and_missing_points():
    assert evaluate(claim(), frame({"a": [10.0], "b": [12.0, 12.1]})).verdict == TOO_FEW_SEEDS
    missing = evaluate(claim(), frame({"a": [10.0, 10.1]}))
    assert missing.verdict == NO_DATA and missing.missing == ("b",)
    assert "no finished run for b" in missing.sentence()


def test_failed_and_nan_rows_do_not_count():
    df = frame({"a": [10.0, 10.1, 9.9], "b": [12.0, 12.2, 11.9]})
    bad = pd.DataFrame([{"study": "toy", "point": "a", "seed": 9, "val_ppl": 50.0, "status": "failed"},
                        {"study": "toy", "point": "b", "seed": 9, "val_ppl": math.nan, "status": "ok"}])
    v = evaluate(claim(), pd.concat([df, bad]))
    assert (v.comparison.n_b, v.comparison.n_w) == (3, 3)
    assert v.verdict == REPLICATES


def test_metric_direction_follows_the_metric():
    df = frame({"a": [0.50, 0.52, 0.51], "b": [0.20, 0.22, 0.21]}, metric="fact_recall")
    assert evaluate(claim(), df, metric="fact_recall").verdict == REPLICATES  # higher recall is better
    df = frame({"a": [0.50, 0.52, 0.51], "b": [0.20, 0.22, 0.21]}, metric="val_loss")
    assert evaluate(claim(), df, metric="val_loss").verdict == OPPOSITE  # higher loss is worse


def test_verdicts_are_computed_not_typed():
    c = verdicts.claims_for("mf-expand-bits")[0]
    good = frame({c.better: [3.0, 3.1, 3.05], c.worse: [3.5, 3.6, 3.55]}, study="mf-expand-bits")
    bad = frame({c.better: [3.5, 3.6, 3.55], c.worse: [3.0, 3.1, 3.05]}, study="mf-expand-bits")
    assert evaluate(c, good).verdict == REPLICATES
    assert evaluate(c, bad).verdict == OPPOSITE


def test_unknown_column_names_the_closest():
    with pytest.raises(ValueError, match="did you mean 'val_ppl'"):
        evaluate(claim(), frame({"a": [1.0, 2.0], "b": [1.0, 2.0]}), metric="val_pp")


def test_claim_rejects_bad_kind_and_same_points():
    with pytest.raises(ValueError, match="kind"):
        claim(kind="maybe")
    with pytest.raises(ValueError, match="two different points"):
        claim(better="a", worse="a")


# -------------------------------------------------------------------------------------------------- the claims data
#: The studies that re-run a paper's table (issue: the shipped ablation lab); each must carry a claim.
PAPER_STUDIES = ["mf-tau", "mf-lr", "mf-expand-bits", "mf-gelu", "mf-temperature", "mf-weighting", "pkm-topk",
                 "pkm-heads", "pkm-keys", "memoryplus-parts", "placement", "matched-flops"]


def test_every_paper_study_has_a_claim_and_every_claim_names_real_points():
    assert verdicts.paper_studies() == PAPER_STUDIES
    assert set(PAPER_STUDIES) <= set(STUDIES)
    for c in verdicts.CLAIMS:
        labels = [label for label, _ in get_study(c.study).point_list()]
        assert c.better in labels and c.worse in labels, (c.study, c.label, labels)
        assert all(label in labels for label, _ in c.paper_values), c.study
        assert "arXiv" in c.paper and c.where and c.quote


def test_quoted_numbers_match_the_papers_tables():
    by_study = {c.study: c for c in verdicts.CLAIMS}
    assert dict(by_study["mf-tau"].paper_values) == {"tau=4": 19.01, "tau=8": 18.82, "tau=10": 18.67}
    assert dict(by_study["mf-lr"].paper_values)["table_lr_mult=3.0"] == 18.82
    assert [v for _, v in by_study["mf-expand-bits"].paper_values] == [19.89, 19.26, 18.82, 18.54]
    for mb in ("33.6", "52.4", "88.1", "157.3"):
        assert mb in by_study["mf-expand-bits"].quote
    assert by_study["mf-gelu"].kind == SAME
    assert by_study["mf-temperature"].kind == OPEN and by_study["mf-weighting"].kind == OPEN


def test_paper_direction_agrees_with_its_numbers():
    # where the paper's numbers cover both points, the "better" point has the better paper number
    for c in verdicts.CLAIMS:
        values = dict(c.paper_values)
        if c.kind != BETTER or c.better not in values or c.worse not in values:
            continue
        lower = "lower is better" in c.paper_metric
        assert (values[c.better] < values[c.worse]) == lower, c.label


def test_verdict_table_covers_missing_studies():
    c = verdicts.claims_for("mf-tau")[0]
    table = verdicts.verdict_table({"mf-tau": frame({c.better: [3.0, 3.1, 3.0], c.worse: [3.3, 3.4, 3.35]}),
                                    "placement": None})
    assert list(table["study"]) == ["mf-tau", "placement", "placement"]
    assert list(table["verdict"]) == [REPLICATES, NO_DATA, NO_DATA]
    assert table.loc[0, "gain"] == pytest.approx(0.3167, abs=1e-3)


def test_paper_side_by_side():
    c = verdicts.claims_for("mf-tau")[0]
    table = verdicts.paper_side_by_side(c, frame({"tau=4": [3.0, 3.2], "tau=10": [2.5, 2.7]}))
    assert list(table["point"]) == ["tau=4", "tau=8", "tau=10"]
    assert list(table.iloc[:, 1]) == [19.01, 18.82, 18.67]
    assert table.iloc[1, 2] == "—" and table.iloc[0, 2].startswith("3.100 ± ")


# -------------------------------------------------------------------------------------------- the ablation views
@pytest.fixture
def frames():
    tau = frame({"tau=4": [3.0, 3.1, 3.05], "tau=6": [2.9, 3.0, 2.95], "tau=8": [2.9, 2.95, 2.9],
                 "tau=10": [2.8, 2.85, 2.9]}, study="mf-tau")
    tau["memory_mb"] = tau["point"].map({"tau=4": 0.5, "tau=6": 1.2, "tau=8": 4.1, "tau=10": 16.3})
    tau["fact_recall"] = 0.1 * tau["seed"]
    return {"mf-tau": tau, "placement": None}


def test_results_dir_and_missing_csv(tmp_path, monkeypatch):
    assert ablations.results_dir().parts[-2:] == ("data", "ablations")
    monkeypatch.setenv("MEMLAB_ABLATIONS", str(tmp_path))
    assert ablations.results_dir() == tmp_path
    assert ablations.load_results("mf-tau") is None
    frame({"tau=4": [1.0]}, study="mf-tau").to_csv(tmp_path / "mf-tau.csv", index=False)
    loaded = ablations.load_all()
    assert list(loaded) == list(STUDIES) and loaded["mf-tau"]["val_ppl"].tolist() == [1.0]
    assert loaded["pkm-keys"] is None


def test_explore_summary_verdict_and_plot(frames):
    result = ablations.explore(frames, "mf-tau")
    summary = result["summary"]
    assert list(summary["point"]) == ["tau=4", "tau=6", "tau=8", "tau=10"]  # the study's order
    assert summary.loc[0, "val_ppl_mean"] == pytest.approx(3.05)
    assert list(summary["n"]) == [3, 3, 3, 3] and result["rows"] == 12
    (v,) = result["verdicts"]
    assert v.verdict == REPLICATES and v.comparison.gain == pytest.approx(0.2, abs=1e-9)
    ax = result["ax"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tau=4", "tau=6", "tau=8", "tau=10"]
    assert "lower is better" in ax.get_ylabel()
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def test_explore_filters_change_the_numbers(frames):
    result = ablations.explore(frames, "mf-tau", seeds=[0, 1], query="point != 'tau=6'")
    assert list(result["summary"]["point"]) == ["tau=4", "tau=8", "tau=10"]
    assert result["summary"].loc[0, "val_ppl_mean"] == pytest.approx(3.05)
    assert set(result["summary"]["n"]) == {2}
    one_seed = ablations.explore(frames, "mf-tau", seeds=[0])
    assert one_seed["verdicts"][0].verdict == TOO_FEW_SEEDS
    import matplotlib.pyplot as plt

    plt.close("all")


def test_explore_numeric_x_and_other_metric(frames):
    result = ablations.explore(frames, "mf-tau", x="memory_mb", metric="fact_recall")
    ax = result["ax"]
    assert ax.get_xscale() == "log"  # 0.5 … 16.3 MB spans more than 20×
    assert ax.get_xlabel() == "memory_mb" and "higher is better" in ax.get_ylabel()
    assert result["summary"]["fact_recall_mean"].tolist() == pytest.approx([0.1] * 4)
    assert [t.get_text() for t in ax.texts] == ["4", "6", "8", "10"]  # "tau=4" → "4" beside each point
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.parametrize("kwargs, message", [
    (dict(study="mf-ta"), "did you mean 'mf-tau'"),
    (dict(study="placement"), "no results for 'placement' yet"),
    (dict(study="mf-tau", metric="val_pp"), "did you mean 'val_ppl'"),
    (dict(study="mf-tau", query="memory_mb <"), "filter 'memory_mb <' failed"),
    (dict(study="mf-tau", query="memory_mb > 100"), "no finished rows"),
])
def test_explore_errors_name_the_fix(frames, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ablations.explore(frames, **kwargs)


def test_explorer_widget_updates_and_reports_errors(frames, capsys):
    w = ablations.explorer(frames)
    study, x, metric, seeds, query = w.children[:5]
    assert study.options == ("mf-tau",)  # studies without results are not offered
    assert w.result["summary"]["val_ppl_mean"].tolist() == pytest.approx([3.05, 2.95, 2.9166667, 2.85])
    seeds.value = (0,)
    assert w.result["seeds"] == (0,) and set(w.result["summary"]["n"]) == {1}
    metric.value = "fact_recall"
    assert w.result["summary"]["fact_recall_mean"].tolist() == pytest.approx([0.0] * 4)
    query.value = "nonsense ==="
    assert "error" in w.result and "failed" in w.result["error"]
    assert "error: filter" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no study has results"):
        ablations.explorer({"mf-tau": None})


def test_summary_table_keeps_integer_columns():
    # notebook 06 prints a study summarised by two swept keys: "n" and "tau" must not turn into "2.0" / "4.0"
    df = pd.DataFrame([dict(point=f"tau={t}, m={m}", tau=t, m=m, seed=s, val_ppl=10.0 + s + t, status="ok")
                       for t in (4, 8) for m in (1.0, 3.0) for s in range(2)])
    from memlab.lab import sweep

    text = sweep.summary_table(sweep.summarize(df, by=["tau", "m"], metrics=["val_ppl"]), ["val_ppl"])
    assert text.splitlines()[2].split()[:3] == ["4", "1.0", "2"]
