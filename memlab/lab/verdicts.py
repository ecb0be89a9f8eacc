"""What the papers claim for each ablation study, as data, and a verdict computed from memlab's results.

Each shipped study (``studies.py``) re-runs the design of one paper table at tiny scale. A ``Claim`` records, for one
study: the paper, the table or figure, the numbers it prints, and the direction they imply on memlab's metric
(validation perplexity, lower is better) as a pair of points — ``better`` (the point the paper finds better) and
``worse``. ``evaluate(claim, df)`` turns a sweep's DataFrame (``sweep.load`` or a committed CSV, one row per
(point, seed)) into a ``Verdict``; nothing in a verdict is typed in.

The rule (``compare`` below does the arithmetic):

* Take the seeds of each of the two points (rows with ``status == "ok"`` and a value for the metric).
  ``gain`` = mean(worse) − mean(better) for a metric where lower is better (``LOWER_IS_BETTER``), mean(better) −
  mean(worse) otherwise: how much better the paper's better point does. Its 95 % confidence interval is Welch's:
  gain ± t_{0.975, ν} · √(s²_b/n_b + s²_w/n_w), with the Welch–Satterthwaite degrees of freedom ν (the seeds of the
  two points are independent runs and their variances need not be equal).
* A directional claim ("e = 3 beats e = 0") gives
  ``"trend replicates"`` when the whole interval is above 0 (memlab's better point is better, beyond seed noise),
  ``"opposite"`` when the whole interval is below 0 (the paper's worse point is better, beyond seed noise), and
  ``"inconclusive (CIs overlap)"`` when the interval contains 0: the difference is within seed noise.
* A "no difference" claim (MemoryFormer Table 6: GeLU or not) gives ``"trend replicates"`` when the interval contains
  0 — no difference is detectable with these seeds, which is consistent with the claim but is not proof of equality
  (a wide interval also contains 0) — and ``"opposite"`` when it excludes 0: memlab finds a difference the paper did
  not.
* An open question (the paper names the temperature t but gives no value; the paper and its code weight rows
  differently) gives ``"no paper claim"``; the gain and its interval between the two points are still reported, as
  memlab's own finding.
* Fewer than 2 seeds on either side gives ``"inconclusive (fewer than 2 seeds)"`` (no variance, no interval); a point
  with no finished run gives ``"no data"``.

The papers' numbers come from much larger models (MemoryFormer: Pythia-70M-sized on the Pile; Memory Layers at
Scale: 373M–1.3B parameters, NLL or exact match on QA). memlab's studies run models of ~1–25 M parameters for a
few hundred steps on a byte-level corpus, so a verdict says whether the *direction* of a claim shows at that scale,
not whether the paper is right.

Papers: MemoryFormer (Ding et al., NeurIPS 2024, arXiv 2411.12992); Memory Layers at Scale (Berges, Oğuz et al.,
ICML 2025, arXiv 2412.09764); Large Memory Layers with Product Keys (Lample et al., NeurIPS 2019, arXiv 1907.05242).
A summary of all three is in notebooks/paper_notes.md.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._checks import did_you_mean
from .sweep import t_quantile

REPLICATES = "trend replicates"
OPPOSITE = "opposite"
INCONCLUSIVE = "inconclusive (CIs overlap)"
NO_CLAIM = "no paper claim"
TOO_FEW_SEEDS = "inconclusive (fewer than 2 seeds)"
NO_DATA = "no data"
VERDICTS = (REPLICATES, OPPOSITE, INCONCLUSIVE, NO_CLAIM, TOO_FEW_SEEDS, NO_DATA)

#: Kinds of claim: one point beats the other; the two do not differ; the paper leaves it open.
BETTER, SAME, OPEN = "better", "no difference", "open"

#: Metrics where a smaller value is better; every other metric counts as higher-is-better.
LOWER_IS_BETTER = frozenset({"val_ppl", "val_loss", "train_loss", "usage_gini", "usage_kl_uniform", "memory_mb",
                             "flops_per_token", "params_total", "params_active", "train_seconds", "wall_seconds"})

MEMORYFORMER = "MemoryFormer (Ding et al., NeurIPS 2024, arXiv 2411.12992)"
MEMORY_AT_SCALE = "Memory Layers at Scale (Berges, Oğuz et al., ICML 2025, arXiv 2412.09764)"
PRODUCT_KEYS = "Large Memory Layers with Product Keys (Lample et al., NeurIPS 2019, arXiv 1907.05242)"


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


@dataclass(frozen=True)
class Claim:
    """One paper claim about one study, as data.

    study          the study name (``studies.STUDIES``)
    paper, where   the paper and its table / figure / section
    statement      the claim in one sentence
    quote          the paper's numbers, quoted
    kind           ``BETTER`` (``better`` beats ``worse``), ``SAME`` (no difference) or ``OPEN`` (no claim)
    better, worse  memlab point labels (the ``point`` column) of the pair the claim is about
    paper_values   {memlab point label: the paper's number for it} where a row of the paper maps onto a point
    paper_metric   what ``paper_values`` measure ("PPL", "NQ exact match", …) and which way is better
    metric         memlab's metric for the verdict (default validation perplexity)
    scale_note     what differs between the paper's setting and memlab's
    """

    study: str
    paper: str
    where: str
    statement: str
    quote: str
    kind: str
    better: str
    worse: str
    paper_values: tuple = ()
    paper_metric: str = ""
    metric: str = "val_ppl"
    scale_note: str = ""

    def __post_init__(self):
        if self.kind not in (BETTER, SAME, OPEN):
            raise ValueError(f"claim kind must be one of {BETTER!r}, {SAME!r}, {OPEN!r}, got {self.kind!r}")
        if self.better == self.worse:
            raise ValueError(f"a claim compares two different points, got {self.better!r} twice")

    @property
    def label(self) -> str:
        """Short name of the comparison: "tau=10 vs tau=4"."""
        return f"{self.better} vs {self.worse}"


@dataclass(frozen=True)
class Comparison:
    """Welch comparison of two groups of seeds: ``gain`` = how much better group b(etter) does than group w(orse)
    (``mean_w − mean_b`` where lower is better), its CI [``low``, ``high``] and degrees of freedom ``dof``."""

    mean_b: float
    ci_b: float
    n_b: int
    mean_w: float
    ci_w: float
    n_w: int
    gain: float
    low: float
    high: float
    dof: float
    confidence: float


def _mean_ci(values: list[float], confidence: float) -> tuple[float, float]:
    """(mean, t-based CI half-width) of one group; the half-width is NaN for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, t_quantile((1 + confidence) / 2, n - 1) * math.sqrt(var / n)


def compare(better: list[float], worse: list[float], lower_better: bool = True,
            confidence: float = 0.95) -> Comparison:
    """Welch's confidence interval for the gain of ``better`` over ``worse`` (see the module docstring).

    gain = mean(worse) − mean(better) if ``lower_better`` else mean(better) − mean(worse); its standard error is
    √(s²_b/n_b + s²_w/n_w) and ν = SE⁴ / ((s²_b/n_b)²/(n_b − 1) + (s²_w/n_w)²/(n_w − 1)). When both groups have zero
    variance the interval is the single point ``gain``. Needs ≥ 2 values per group for an interval (else NaN).
    """
    better, worse = [float(v) for v in better], [float(v) for v in worse]
    mean_b, ci_b = _mean_ci(better, confidence)
    mean_w, ci_w = _mean_ci(worse, confidence)
    gain = (mean_w - mean_b) if lower_better else (mean_b - mean_w)
    n_b, n_w = len(better), len(worse)
    if n_b < 2 or n_w < 2:
        return Comparison(mean_b, ci_b, n_b, mean_w, ci_w, n_w, gain, math.nan, math.nan, math.nan, confidence)
    var_b = sum((v - mean_b) ** 2 for v in better) / (n_b - 1) / n_b  # squared standard error of each mean
    var_w = sum((v - mean_w) ** 2 for v in worse) / (n_w - 1) / n_w
    se2 = var_b + var_w
    if se2 == 0:
        return Comparison(mean_b, ci_b, n_b, mean_w, ci_w, n_w, gain, gain, gain, math.inf, confidence)
    dof = se2 ** 2 / (var_b ** 2 / (n_b - 1) + var_w ** 2 / (n_w - 1))
    half = t_quantile((1 + confidence) / 2, dof) * math.sqrt(se2)
    return Comparison(mean_b, ci_b, n_b, mean_w, ci_w, n_w, gain, gain - half, gain + half, dof, confidence)


def decide(kind: str, comparison: Comparison | None) -> str:
    """The verdict string for a claim of ``kind`` given its ``comparison`` (None: a point has no data)."""
    if comparison is None or comparison.n_b == 0 or comparison.n_w == 0:
        return NO_DATA
    if kind == OPEN:
        return NO_CLAIM
    if math.isnan(comparison.low):
        return TOO_FEW_SEEDS
    contains_zero = comparison.low <= 0 <= comparison.high
    if kind == SAME:
        return REPLICATES if contains_zero else OPPOSITE
    if contains_zero:
        return INCONCLUSIVE
    return REPLICATES if comparison.low > 0 else OPPOSITE


@dataclass(frozen=True)
class Verdict:
    """A claim, the metric it was judged on, the comparison of the two points, and the computed verdict."""

    claim: Claim
    metric: str
    verdict: str
    comparison: Comparison | None = None
    missing: tuple = field(default=())  # point labels with no finished run

    def sentence(self) -> str:
        """One line: the verdict with its numbers, e.g. "trend replicates: tau=10 val_ppl 7.20 ± 0.10 vs tau=4 …"."""
        c, cl = self.comparison, self.claim
        if self.verdict == NO_DATA:
            return f"{NO_DATA}: no finished run for {', '.join(self.missing) or 'a point'}"
        text = (f"{self.verdict}: {cl.better} {self.metric} {_pm(c.mean_b, c.ci_b)} (n={c.n_b}) vs {cl.worse} "
                f"{_pm(c.mean_w, c.ci_w)} (n={c.n_w})")
        if not math.isnan(c.low):
            text += f"; gain of {cl.better} {c.gain:+.3g}, {c.confidence:.0%} CI [{c.low:+.3g}, {c.high:+.3g}]"
        if cl.kind == SAME and self.verdict in (REPLICATES, OPPOSITE):
            text += (" — no difference detectable, as the paper reports" if self.verdict == REPLICATES
                     else " — a difference the paper did not find")
        return text

    def row(self) -> dict:
        """A flat dict for a summary DataFrame."""
        c, cl = self.comparison, self.claim
        nan = math.nan
        return {
            "study": cl.study, "paper": cl.paper.split(" (")[0], "where": cl.where, "claim": cl.statement,
            "comparison": cl.label, "metric": self.metric, "verdict": self.verdict,
            "better_mean": c.mean_b if c else nan, "better_ci": c.ci_b if c else nan,
            "worse_mean": c.mean_w if c else nan, "worse_ci": c.ci_w if c else nan,
            "gain": c.gain if c else nan, "gain_low": c.low if c else nan, "gain_high": c.high if c else nan,
            "n": f"{c.n_b}+{c.n_w}" if c else "0",
        }


def _pm(mean: float, ci: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.3f}" + ("" if math.isnan(ci) else f" ± {ci:.3f}")


def point_values(df, point: str, metric: str) -> list[float]:
    """The finished seeds' values of ``metric`` at ``point`` (rows with status "ok" and a number)."""
    import pandas as pd

    rows = df[df["point"].astype(str) == point]
    if "status" in rows.columns:
        rows = rows[rows["status"] == "ok"]
    return [float(v) for v in pd.to_numeric(rows[metric], errors="coerce").dropna()]


def evaluate(claim: Claim, df, metric: str | None = None, confidence: float = 0.95) -> Verdict:
    """The verdict on ``claim`` from ``df`` (one row per (point, seed); needs ``point`` and the metric columns).

    ``metric`` defaults to the claim's (validation perplexity); the direction follows ``LOWER_IS_BETTER``.
    """
    metric = metric or claim.metric
    for name in ("point", metric):
        if name not in df.columns:
            columns = [str(c) for c in df.columns]
            raise ValueError(f"no column {name!r}{did_you_mean(name, columns)}; columns: {', '.join(columns)}")
    better, worse = point_values(df, claim.better, metric), point_values(df, claim.worse, metric)
    missing = tuple(label for label, values in ((claim.better, better), (claim.worse, worse)) if not values)
    if missing:
        return Verdict(claim, metric, NO_DATA, None, missing)
    comparison = compare(better, worse, lower_is_better(metric), confidence)
    return Verdict(claim, metric, decide(claim.kind, comparison), comparison)


# ------------------------------------------------------------------------------------------------------- the claims
def _c(study, paper, where, statement, quote, kind, better, worse, paper_values=(), paper_metric="", scale_note=""):
    return Claim(study, paper, where, statement, quote, kind, better, worse, tuple(paper_values), paper_metric,
                 scale_note=scale_note)


#: Every claim memlab checks, in study order; a study may carry more than one (placement, matched-flops).
CLAIMS: tuple[Claim, ...] = (
    _c("mf-tau", MEMORYFORMER, "Table 3",
       "More bits per chunk (larger τ, so fewer but larger tables at fixed d) lowers perplexity.",
       "MF-tiny, Memory Layer in Q only: τ=4 (K=128) PPL 19.01, 0.14 GFLOPs, 2.1 MB; τ=8 (K=64) 18.82, 0.07 G, "
       "16.8 MB; τ=10 (K=51, d=510) 18.67, 0.06 G, 53.5 MB.",
       BETTER, "tau=10", "tau=4", (("tau=4", 19.01), ("tau=8", 18.82), ("tau=10", 18.67)), "PPL (lower is better)",
       "The paper changes τ in the Q layer only; memlab uses τ in every hash table of a d=120 model."),
    _c("mf-lr", MEMORYFORMER, "Table 4",
       "The memory layers train best at a higher learning rate than the baseline's: 3e-3 beats 1e-3.",
       "PPL at 8k steps: LR 1e-3 19.86; 2e-3 19.07; 3e-3 18.82; 4e-3 18.84.",
       BETTER, "table_lr_mult=3.0", "table_lr_mult=1.0",
       (("table_lr_mult=1.0", 19.86), ("table_lr_mult=2.0", 19.07), ("table_lr_mult=3.0", 18.82),
        ("table_lr_mult=4.0", 18.84)), "PPL (lower is better)",
       "memlab multiplies a base LR of 1e-3 for the tables only, so the points are the paper's four LRs."),
    _c("mf-expand-bits", MEMORYFORMER, "Table 5",
       "Expanding bits help: e = 3 has lower perplexity than e = 0, at 4.7× the table memory.",
       "Whole Memory Block, d=512, τ=8, K=64, fp16: e=0 PPL 19.89, 33.6 MB; e=1 19.26, 52.4 MB; e=2 18.82, "
       "88.1 MB; e=3 18.54, 157.3 MB.",
       BETTER, "expand_bits=3", "expand_bits=0",
       (("expand_bits=0", 19.89), ("expand_bits=1", 19.26), ("expand_bits=2", 18.82), ("expand_bits=3", 18.54)),
       "PPL (lower is better)", "memlab: d=64, τ=8, K=8; MB columns scale with d and K but follow the same formula."),
    _c("mf-gelu", MEMORYFORMER, "Table 6",
       "A GeLU between the Memory Block's two memory layers makes no difference (hashing is already non-linear).",
       "Average zero-shot accuracy 0.402 with GeLU, 0.404 without.",
       SAME, "mf_activation=None", "mf_activation=gelu",
       (("mf_activation=None", 0.404), ("mf_activation=gelu", 0.402)), "avg. zero-shot accuracy (higher is better)",
       "The paper compares downstream accuracy; memlab compares validation perplexity."),
    _c("mf-temperature", MEMORYFORMER, "method (Memory Layer weight p(z))",
       "Open: the paper names a temperature t in p(z) but gives no value; its released code has none (t = 1).",
       "No numbers: t is not reported.",
       OPEN, "mf_temperature=1.0", "mf_temperature=4.0",
       scale_note="memlab reports t = 1 (the code's) against t = 4 as its own finding."),
    _c("mf-weighting", MEMORYFORMER, "method vs released code",
       "Open: the paper weights each row by p(z); the released code by ‖z‖₁·p(z). Neither is compared.",
       "No numbers: the two weightings are never compared.",
       OPEN, "mf_weighting=paper", "mf_weighting=l1"),
    _c("pkm-topk", PRODUCT_KEYS, "ablation on k (values selected per head)",
       "Reading more values per head (larger k) improves perplexity and memory usage.",
       "Qualitative here: the paper's main setting is k = 32 per head with H = 4 heads and 512² values; its "
       "ablation finds perplexity improving as k grows. (memlab quotes no numbers for this study.)",
       BETTER, "pkm_topk=32", "pkm_topk=4",
       scale_note="memlab's memory has 32² = 1024 values, so k = 32 reads 3 % of it per head."),
    _c("pkm-heads", PRODUCT_KEYS, "ablation on the number of heads",
       "More heads (each its own query and keys, one value pool) improve perplexity and memory usage.",
       "Qualitative here: the paper's main setting is H = 4; its ablation finds more heads better. "
       "(memlab quotes no numbers for this study.)",
       BETTER, "pkm_heads=8", "pkm_heads=1"),
    _c("pkm-keys", MEMORY_AT_SCALE, "main results (memory size)",
       "A larger memory (more keys and values) at about the same FLOPs is better.",
       "1.3B base, NQ EM / TriviaQA F1: Memory+ with 1M values 13.68 / 42.89; with 64M values 20.78 / 62.14.",
       BETTER, "pkm_n_keys=128", "pkm_n_keys=16", paper_metric="NQ exact match (higher is better)",
       scale_note="memlab: 16² = 256 … 128² = 16 384 values of width 64, trained for 800 steps."),
    _c("memoryplus-parts", MEMORY_AT_SCALE, "Memory+ ablation (gating)",
       "swilu gating improves the memory layer (the paper prefers it to plain gating; Memory+ beats Memory).",
       "1.3B base, NQ EM / TriviaQA F1 / HotpotQA F1: Memory 9.83 / 39.47 / 15.46; Memory+ 13.68 / 42.89 / 16.72.",
       BETTER, "+swilu", "pkm", (("pkm", 9.83), ("+shared values", 13.68)), "NQ exact match (higher is better)",
       "memlab's nearest pair: plain PKM against PKM + swilu (without qk-norm); the paper's gating ablation compares "
       "swilu with plain gating. Its Memory+ (swilu, qk-norm, shared values over 3 layers) is memlab's last point."),
    _c("placement", MEMORY_AT_SCALE, "ablation on memory placement",
       "Memories centred with a stride beat a single memory layer.",
       "373M base, NLL on NQ / TQA answers: layer 12 only 12.13 / 8.34; layers 4, 12, 20: 11.32 / 7.20; six "
       "layers: 11.79 / 7.73.",
       BETTER, "centred stride (1, 3)", "centre (2)", (("centre (2)", 12.13), ("centred stride (1, 3)", 11.32)),
       "NLL on NQ answers (lower is better)",
       "memlab has 4 layers: layers 1 and 3 stand for 4, 12, 20 of 24; all four layers for 'six layers'."),
    _c("placement", MEMORY_AT_SCALE, "ablation on memory placement",
       "More memory layers hurt: three centred layers beat six (each memory replaces an FFN).",
       "373M base, NLL on NQ / TQA answers: layers 4, 12, 20: 11.32 / 7.20; six layers: 11.79 / 7.73.",
       BETTER, "centred stride (1, 3)", "all (0-3)", (("centred stride (1, 3)", 11.32), ("all (0-3)", 11.79)),
       "NLL on NQ answers (lower is better)"),
    _c("matched-flops", MEMORY_AT_SCALE, "main results (equal FLOPs)",
       "At the same FLOPs, Memory+ beats the dense model.",
       "1.3B base, NQ EM / TriviaQA F1 / HotpotQA F1: dense 7.76 / 32.64 / 13.92; MoE 8.14 / 31.46 / 15.15; "
       "PEER 12.33 / 42.46 / 15.39; Memory 9.83 / 39.47 / 15.46; Memory+ 13.68 / 42.89 / 16.72.",
       BETTER, "model=memoryplus", "model=dense",
       (("model=dense", 7.76), ("model=moe", 8.14), ("model=peer", 12.33), ("model=pkm", 9.83),
        ("model=memoryplus", 13.68)), "NQ exact match (higher is better)",
       "The paper measures factual QA after 1T tokens; memlab validation perplexity after 400 steps."),
    _c("matched-flops", MEMORY_AT_SCALE, "main results (equal FLOPs)",
       "At the same FLOPs, PEER beats the dense model.",
       "1.3B base, NQ EM: dense 7.76; PEER 12.33.",
       BETTER, "model=peer", "model=dense", (("model=dense", 7.76), ("model=peer", 12.33)),
       "NQ exact match (higher is better)"),
)


def paper_studies() -> list[str]:
    """The studies that reproduce a paper's table (those with a claim), in ``CLAIMS`` order. memlab's own studies
    (questions no paper asks) have no claim and are not in this list."""
    return list(dict.fromkeys(c.study for c in CLAIMS))


def claims_for(study: str) -> list[Claim]:
    """The claims about ``study`` (empty for a study memlab has no claim for, e.g. one a user defined)."""
    return [c for c in CLAIMS if c.study == study]


def study_verdicts(study: str, df, metric: str | None = None, confidence: float = 0.95) -> list[Verdict]:
    """``evaluate`` for every claim about ``study``."""
    return [evaluate(c, df, metric, confidence) for c in claims_for(study)]


def verdict_table(frames: Mapping[str, object], metric: str | None = None, confidence: float = 0.95):
    """One row per claim (``Verdict.row``) for the studies in ``frames`` ({study: DataFrame, or None if it has no
    results yet: its claims come out as "no data")."""
    import pandas as pd

    rows = []
    for study, df in frames.items():
        for claim in claims_for(study):
            if df is None:
                rows.append(Verdict(claim, metric or claim.metric, NO_DATA, None, (claim.better, claim.worse)).row())
            else:
                rows.append(evaluate(claim, df, metric, confidence).row())
    return pd.DataFrame(rows)


def paper_side_by_side(claim: Claim, df, metric: str | None = None, confidence: float = 0.95):
    """The paper's number next to memlab's mean ± CI for every point the paper has a number for."""
    import pandas as pd

    metric = metric or claim.metric
    rows = []
    for label, value in claim.paper_values:
        mean, ci = _mean_ci(point_values(df, label, metric), confidence)
        rows.append({"point": label, f"paper: {claim.paper_metric}": value, f"memlab: {metric}": _pm(mean, ci)})
    return pd.DataFrame(rows)
