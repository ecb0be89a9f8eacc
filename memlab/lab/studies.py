"""The ablation studies memlab ships: each one re-runs the design of one paper table at a size 2 CPU cores can train.

A ``Study`` is a base model config, a base train config, and either a ``grid`` (key → values, every combination is a
point) or a list of named ``points`` (label → overrides); every point runs for ``seeds`` seeds. ``python -m memlab
sweep --study NAME`` runs one (``sweep.py``: cached, resumable, parallel), ``--list`` prints them all.

    name              reproduces                                                     points×seeds steps  est. time
    mf-tau            MemoryFormer Table 3: τ ∈ {4, 6, 8, 10} at d = 120, so K = d/τ varies      4 × 3    400   ~7.5 min
    mf-lr             MemoryFormer Table 4: memory-layer LR {1, 2, 3, 4} × base LR 1e-3         4 × 3    800   ~7 min
    mf-expand-bits    MemoryFormer Table 5: expanding bits e ∈ {0, 1, 2, 3}                     4 × 3    800   ~6 min
    mf-gelu           MemoryFormer Table 6: GeLU between the two memory layers, or none         2 × 3    800   ~10 min
    mf-temperature    MemoryFormer: hash temperature t ∈ {0.5, 1, 2, 4} (the paper gives none)  4 × 3    800   ~6 min
    mf-weighting      MemoryFormer: the paper's p(z) vs the released code's ‖z‖₁·p(z)           2 × 3    800   ~3.5 min
    mf-hash-input     memlab's own: hash x, a fixed random rotation of x, or x centred (nb 08)  3 × 3    400   ~5 min
    pkm-topk          product keys: top-k ∈ {4, 8, 16, 32}                                      4 × 3    800   ~9 min
    pkm-heads         product keys: heads ∈ {1, 2, 4, 8}                                        4 × 3    800   ~9 min
    pkm-keys          product keys: n ∈ {16, 32, 64, 128} half-keys (n² values), ~fixed FLOPs  4 × 3    800   ~10 min
    memoryplus-parts  Memory Layers at Scale: PKM → +swilu → +qk-norm → +shared values         4 × 3    800   ~10 min
    placement         Memory Layers at Scale: which layers hold the memory                      4 × 3    800   ~12.5 min
    matched-flops     dense, MoE, MemoryFormer, PKM, Memory+, PEER at one width and depth       6 × 3    400   ~11 min
    capacity          factual capacity (notebook 07): bits stored vs N entities, 7 archs        26 pts, 36 runs  ~2 h
                      (per-point steps: 400 exposures per fact; 3 seeds where dense bends, ``CAPACITY_BEND``;
                      ``make capacity``, not in ``--study all``)
    lazy-adam         memlab's: the demo's MemoryFormer, tables on AdamW vs lazy AdamW (not in all) 2 × 3    300   ~15 min

Estimated times are for ``--jobs 1`` on 2 CPU cores, from per-step times measured at these sizes (each study's
``notes``; ~1.5 h for all on a quiet machine, ``make ablations``; the committed run took 2 h 34 min with
``JOBS=2`` on a shared one). mf-tau was checked end to end: one seed of its four points took 147 s.
The machine they were measured on was shared: under load the same runs took up to 2× longer (matched-flops: 509 s
per seed at 600 steps, hence 400). ``--jobs 2`` rarely helps on 2 cores; a SLURM array (``--shard``) does.

The sizes are tiny on purpose: the studies show the *design* of each table and how to read it (mean ± 95 % CI over
seeds), not the papers' numbers. At a few hundred steps on a byte-level corpus, differences smaller than the CI are
noise, and the ranking can differ from the paper's (in one seed of mf-tau, τ = 4 led: its small tables train faster).

Knobs ``ModelConfig`` does not have yet are listed in ``Study.requires``: such a study shows in ``--list`` as
unavailable and runs once the field exists.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

from .._checks import did_you_mean
from .models import ModelConfig
from .models.variants import VARIANTS
from .train import TrainConfig

#: Train config shared by every study: batch 16 × 64 bytes, 50 synthetic facts mixed in (fact recall is a metric),
#: validation and usage statistics every 100 steps and at the end, a checkpoint every 50 steps (resume granularity).
TRAIN_BASE = dict(batch_size=16, warmup_steps=30, eval_every=100, eval_batches=8, stats_every=100, ckpt_every=50,
                  log_every=100, fact_entities=50, fact_fraction=0.25)

#: MemoryFormer base: width 64, 2 layers, τ = 8 (K = 8 tables of 256 rows), e = 2; 4.3 M parameters, 62 k FLOPs/token.
MF_MODEL = dict(model="memoryformer", d_model=64, n_layers=2, n_heads=4, seq_len=64, tau=8, expand_bits=2)

#: Product-key base: width 64, 4 layers, the FFN of the centre layer (layer 2) replaced by a memory of n² = 32² = 1024
#: values, 4 heads, top-8.
PK_MODEL = dict(model="pkm", d_model=64, n_layers=4, n_heads=4, seq_len=64, pkm_n_keys=32, pkm_heads=4, pkm_topk=8,
                n_memory_layers=1)


@dataclass(frozen=True)
class Study:
    """A named ablation: ``model`` and ``train`` (base configs, as overrides of the defaults), then either ``grid``
    ({key: [values]}: every combination, in order) or ``points`` ((label, {key: value}) pairs), × ``seeds``.

    ``requires``: config fields the study needs; if one is missing the study is unavailable (``missing()`` says why).
    ``notes``: the paper table it mirrors, what differs at this size, and the measured time per point.
    """

    name: str
    title: str
    model: dict
    train: dict
    grid: dict | None = None
    points: tuple = ()
    seeds: int = 3
    notes: str = ""
    requires: tuple = ()
    in_all: bool = True  # part of ``--study all`` (make ablations); False for studies run on their own (capacity)
    seeds_at: dict | None = None  # label → seeds, for points that run fewer (or more) seeds than ``seeds``

    def __post_init__(self):
        if (self.grid is None) == (not self.points):
            raise ValueError(f"study {self.name!r}: give either a grid or a list of named points, not both or neither")
        if self.grid is not None:
            empty = [k for k, v in self.grid.items() if not list(v)]
            if empty:
                raise ValueError(f"study {self.name!r}: grid key(s) {empty} have no values")
        labels = [label for label, _ in self.points]
        if len(set(labels)) != len(labels):
            raise ValueError(f"study {self.name!r}: point labels must be distinct, got {labels}")
        unknown = set(self.seeds_at or {}) - {label for label, _ in self.point_list()}
        if unknown:
            raise ValueError(f"study {self.name!r}: seeds_at names unknown point(s) {sorted(unknown)}")

    def point_list(self) -> list[tuple[str, dict]]:
        """[(label, overrides)] in run order: the grid's combinations ("tau=4, expand_bits=2") or the named points."""
        if self.grid is None:
            return [(label, dict(values)) for label, values in self.points]
        keys = list(self.grid)
        return [(", ".join(f"{k}={v}" for k, v in zip(keys, combo)), dict(zip(keys, combo)))
                for combo in itertools.product(*(list(self.grid[k]) for k in keys))]

    def seeds_of(self, label: str) -> int:
        """Seeds point ``label`` runs: ``seeds_at[label]`` where given, else ``seeds``."""
        return (self.seeds_at or {}).get(label, self.seeds)

    def swept_keys(self) -> list[str]:
        """The config keys the points change (DataFrame columns), in order of first appearance."""
        return list(dict.fromkeys(k for _, values in self.point_list() for k in values))

    def missing(self) -> str | None:
        """None if the study can run here, else the reason (a config field it needs does not exist)."""
        known = {f.name for f in fields(ModelConfig)} | {f.name for f in fields(TrainConfig)}
        absent = [k for k in self.requires if k not in known]
        if absent:
            return f"needs config field(s) {absent}, which ModelConfig/TrainConfig do not have yet"
        return None


def _study(name, title, model, steps, notes, grid=None, points=(), train=None, requires=()):
    return Study(name, title, dict(model), {**TRAIN_BASE, "steps": steps, **(train or {})}, grid, tuple(points),
                 notes=notes, requires=requires)


_MATCHED = [m for m in ("dense", "moe", "memoryformer", "pkm", "memoryplus", "peer") if m in VARIANTS]

#: The lazy-Adam ablation runs the demo's MemoryFormer (memlab.lab.demo.BASE_MODEL / BASE_TRAIN; a test keeps them equal).
LAZY_ADAM_MODEL = dict(model="memoryformer", d_model=128, n_layers=4, n_heads=4, seq_len=128, tau=8, expand_bits=2,
                       pkm_n_keys=64, pkm_heads=4, pkm_topk=8)
LAZY_ADAM_TRAIN = dict(steps=300, batch_size=16, lr=3e-3, warmup_steps=30, eval_every=50, eval_batches=8,
                       stats_every=50, ckpt_every=100, log_every=50, fact_entities=50, fact_fraction=0.25)

# ---------------------------------------------------------------------------------------------------------- capacity
#: Factual capacity (notebook 07): a 2-layer, width-32 backbone (dense-tiny: 33 k parameters) trained on fact lines
#: only (``task="knowledge"``), every point for ``CAPACITY_EXPOSURES`` passes over its N entities; a row of 147 + 1
#: bytes holds 3 whole fact lines of 49 bytes. Memory variants replace the FFN of layer 1 with 128² = 16 384 values of
#: width 32 (2 heads, top-8), read at ≤ the dense FFN's FLOPs.
CAPACITY_MODEL = dict(model="dense", d_model=32, n_layers=2, n_heads=2, seq_len=147, tau=8, expand_bits=2,
                      pkm_n_keys=128, pkm_heads=2, pkm_topk=8, moe_experts=8, moe_topk=2)
#: Batch 8 rows, LR 1e-2, 400 exposures. In the pilot a tiny model memorised nothing at 100 exposures (batch 32, LR
#: 3e-3; nor batch 8–16, LR 1e-2), left a plateau between 150 and 200 exposures at N = 250 (batch 8, LR 1e-2), and at
#: 200 exposures ranked 28 % of the facts first at N = 250 but only 6–8 % at N = 500 (dense and Memory+). Values (and
#: MemoryFormer's tables) learn at 3× the base LR with no weight decay: a value row gets a gradient only in the steps
#: that read it (one exposure of its facts in hundreds of steps), and AdamW's decoupled decay would shrink every row
#: at every step, read or not — wearing away stored facts between their exposures.
CAPACITY_TRAIN = dict(task="knowledge", batch_size=8, lr=1e-2, values_lr=3e-2, table_lr_mult=3.0,
                      memory_weight_decay=0.0, warmup_steps=30, eval_every=1000, eval_batches=4, stats_every=100_000,
                      ckpt_every=500, log_every=1000, fact_entities=0, knowledge_attributes=4, knowledge_values=256,
                      knowledge_heldout=64, max_seconds=1800.0)
CAPACITY_EXPOSURES = 400
CAPACITY_ENTITIES = (125, 250, 500, 1000)
#: label → (model overrides, the N it runs at)
CAPACITY_ARCHS = {
    "dense": ({"model": "dense"}, CAPACITY_ENTITIES),
    "moe": ({"model": "moe"}, CAPACITY_ENTITIES),
    "memoryformer": ({"model": "memoryformer"}, CAPACITY_ENTITIES),
    "pkm": ({"model": "pkm"}, CAPACITY_ENTITIES),
    "memoryplus": ({"model": "memoryplus"}, CAPACITY_ENTITIES),
    "peer": ({"model": "peer"}, CAPACITY_ENTITIES),
    "dense-10x": ({"model": "dense", "d_model": 128, "n_heads": 4}, (125, 500)),
}
#: Where dense-tiny's curve bends: 33 k parameters at 1–2 bits each would hold 1 000–2 000 entities of 32 bits, but in
#: the pilot it had not learned 500 entities in 200 exposures, and in the study's first seed it learned most of N = 500
#: and nothing of N = 1 000. Three seeds there for the models the pre-registered claim turns on: dense, PKM and Memory+
#: at N = 500; dense and Memory+ at N = 1 000 (PKM stored a fifth of Memory+'s bits there in its first seed, and two
#: more PKM seeds would take the study past two hours on 2 cores). One seed elsewhere.
CAPACITY_BEND = (("dense", 500), ("pkm", 500), ("memoryplus", 500), ("dense", 1000), ("memoryplus", 1000))


def capacity_label(arch: str, n_entities: int) -> str:
    return f"{arch}, N={n_entities}"


def _capacity_study() -> Study:
    from .knowledge import steps_for_exposures

    points = [(capacity_label(arch, n), {**overrides, "knowledge_entities": n,
                                         "steps": steps_for_exposures(CAPACITY_EXPOSURES, n, CAPACITY_MODEL["seq_len"],
                                                                      CAPACITY_TRAIN["batch_size"])})
              for arch, (overrides, entities) in CAPACITY_ARCHS.items() for n in entities]
    bend = {capacity_label(arch, n) for arch, n in CAPACITY_BEND}
    return Study(
        "capacity", "Factual capacity: bits of a synthetic knowledge base stored per parameter at matched FLOPs",
        dict(CAPACITY_MODEL), dict(CAPACITY_TRAIN), points=tuple(points), seeds=3, in_all=False,
        seeds_at={label: 1 for label, _ in points if label not in bend},
        notes="Notebook 07. N entities × 4 attributes × 8 bits, 400 exposures per fact (Physics of Language Models "
              "3.3, arXiv 2404.05405, finds ≥ 1 bit per parameter at 100 exposures, Result 4, and ~2 at 1 000, "
              "Result 1, in far larger models; memlab's 33 k-parameter dense-tiny stored nothing at 100 and had not "
              "learned N = 500 at 200). N = 1 000 holds 32 k bits, about dense-tiny's parameter count. "
              "FLOPs/token: dense 51.6 k, moe 52.1 k, pkm 49.2 k, memoryplus 51.2 k, peer 49.7 k; memoryformer 29 k "
              "(its own FLOPs); dense-10x (d = 128) 501 k, at N = 125 and 500 only. Measured at batch 8 × 147 "
              "bytes, one thread, on a loaded 2-core machine, in tokens per CPU-second (≈ a quiet core): dense "
              "47 k (25 ms/step), moe 29 k, memoryformer 33 k, pkm 22 k, memoryplus 22 k, peer 20 k, dense-10x 12 k "
              "(96 ms/step); the probe at N = 1 000 costs ~12 CPU-s for dense. Estimated 4.0 core-hours: ~2 h "
              "with --jobs 2 on a quiet 2-core machine (longest run ~17 min; each capped at 1 800 s of training, the "
              "exposures reached are kb_exposures). make capacity.",
    )


#: Every shipped study, by name (``python -m memlab sweep --list``).
STUDIES: dict[str, Study] = {s.name: s for s in [
    _study(
        "mf-tau", "MemoryFormer Table 3: bits per chunk τ at fixed width, so K = d/τ tables of 2^τ rows vary",
        {**MF_MODEL, "d_model": 120}, 400, grid={"tau": [4, 6, 8, 10]}, train={"ckpt_every": 100},
        notes="d = 120 is the smallest width every τ divides (the paper: d = 512, and 510 for τ = 10). The paper "
              "changes τ in the Q memory layer only; here every hash table of the model uses τ (ML2: τ + e bits). "
              "Tables grow as 2^τ: τ = 10 has 24 M parameters (a 300 MB checkpoint, so one every 100 steps). "
              "Measured 66–181 ms/step (τ = 4 … 10); one seed of all four points: 147 s.",
    ),
    _study(
        "mf-lr", "MemoryFormer Table 4: the memory layers' learning rate as a multiple of the base LR 1e-3",
        MF_MODEL, 800, grid={"table_lr_mult": [1.0, 2.0, 3.0, 4.0]}, train={"lr": 1e-3},
        notes="Base LR 1e-3 (Pythia's), so the tables train at 1e-3 … 4e-3, the paper's four rows (it finds 3e-3 "
              "best). Measured 31–43 ms/step, ~1.5 s per point besides.",
    ),
    _study(
        "mf-expand-bits", "MemoryFormer Table 5: expanding bits e of the Memory Block (ML2 hashes τ + e bits)",
        MF_MODEL, 800, grid={"expand_bits": [0, 1, 2, 3]},
        notes="τ = 8, d = 64 (K = 8): ML2 tables of 2^(8+e) rows; the paper finds PPL falling as e grows while the "
              "tables grow ~2× per bit. Measured 30–41 ms/step.",
    ),
    _study(
        "mf-gelu", "MemoryFormer Table 6: a GeLU between the Memory Block's two memory layers, or none",
        MF_MODEL, 800, grid={"mf_activation": [None, "gelu"]}, requires=("mf_activation",),
        notes="The paper finds no difference (avg accuracy 0.402 with GeLU, 0.404 without). MemoryBlock has the "
              "`activation` argument, passed on as ModelConfig.mf_activation. Measured 105–167 ms/step (train_seconds / "
              "steps of its 6 runs in data/ablations/mf-gelu.csv, two runs at once on a shared 2-core machine).",
    ),
    _study(
        "mf-temperature", "MemoryFormer: hash temperature t in p(z) = Π σ(2|z_i| / t)",
        MF_MODEL, 800, grid={"mf_temperature": [0.5, 1.0, 2.0, 4.0]},
        notes="The paper names t but gives no value; the released code has none (t = 1). Small t saturates the "
              "weights at 1, large t flattens them towards 2^-τ. Measured 33–39 ms/step.",
    ),
    _study(
        "mf-weighting", "MemoryFormer: the paper's weight p(z) against the released code's ‖z‖₁·p(z)",
        MF_MODEL, 800, grid={"mf_weighting": ["paper", "l1"]},
        notes="Where the paper and its code disagree. Measured 34–41 ms/step.",
    ),
    _study(
        "mf-hash-input", "memlab's own experiment (not in the paper): hash x, a fixed random rotation of x, or x centred",
        MF_MODEL, 400,
        points=[("x (paper)", {"mf_hash_input": "identity"}), ("rotated x", {"mf_hash_input": "rotate"}),
                ("centred x", {"mf_hash_input": "center"})],
        requires=("mf_hash_input",),
        notes="Notebook 08 finds trained MemoryFormer tables using 19–57 % of their rows: the hashed coordinates keep "
              "a sign bias and the activations have an effective rank of ~10 of 128. A random rotation (SimHash with "
              "random hyperplanes) spreads the coordinates; centring (x minus a running mean) removes the bias. "
              "400 steps to fit ~5 min on 2 cores: usage is measured every 100 steps on one validation batch "
              "(1024 tokens, 4 per row of each 256-row table). Measured 85–190 ms/step (1 thread, a loaded "
              "2-core machine), 35–75 s per point.",
    ),
    _study(
        "pkm-topk", "Product-key memory: values read per head, top-k",
        PK_MODEL, 800, grid={"pkm_topk": [4, 8, 16, 32]},
        notes="Lample et al. 2019 sweep k ∈ {8 … 128} at n² = 512²; here n² = 32² = 1024 values, so k = 32 reads "
              "3 % of the memory per head. Measured 45–66 ms/step.",
    ),
    _study(
        "pkm-heads", "Product-key memory: number of heads (each its own query and keys, one value pool)",
        PK_MODEL, 800, grid={"pkm_heads": [1, 2, 4, 8]},
        notes="Lample et al. 2019 find more heads use more of the memory (see usage_fraction_used). "
              "Measured 46–54 ms/step.",
    ),
    _study(
        "pkm-keys", "Product-key memory: memory size n² (n half-keys) at nearly fixed FLOPs",
        PK_MODEL, 800, grid={"pkm_n_keys": [16, 32, 64, 128]},
        notes="256 … 16 384 values of width 64. Top-k and heads are fixed, so only the key scoring (2·n·k_dim/2 per "
              "head) grows with n: FLOPs/token change by 6 %, parameters by 1 M. Measured 39–62 ms/step.",
    ),
    _study(
        "memoryplus-parts", "Memory Layers at Scale: PKM → +swilu gating → +qk-norm → +shared values (Memory+)",
        PK_MODEL, 800,
        points=[("pkm", {"model": "pkm"}),
                ("+swilu", {"model": "memoryplus", "qk_norm": False}),
                ("+qk-norm", {"model": "memoryplus", "qk_norm": True}),
                ("+shared values", {"model": "memoryplus", "qk_norm": True, "n_memory_layers": 2})],
        notes="Each point adds one part. In memlab one value pool is always shared by all memory layers, so "
              "'+shared values' means two memory layers (1 and 3 of 4) reading one pool instead of one layer — "
              "the paper's shared memory across layers; it replaces one more FFN. Measured 50–62 ms/step.",
    ),
    _study(
        "placement", "Memory Layers at Scale: which layers hold the memory (Memory+, 4 layers)",
        {**PK_MODEL, "model": "memoryplus"}, 800,
        points=[("centre (2)", {"n_memory_layers": 1}),
                ("first (0)", {"memory_layers": [0]}),
                ("centred stride (1, 3)", {"n_memory_layers": 2}),
                ("all (0-3)", {"memory_layers": [0, 1, 2, 3]})],
        notes="The paper (24 layers): layer 12 only, layers 4, 12, 20 (best) and six layers (worse: memories "
              "replace FFNs). One value pool is shared by the memory layers. Measured 59–92 ms/step.",
    ),
    _study(
        "matched-flops", "Every model at one width and depth: " + ", ".join(_MATCHED),
        {**PK_MODEL, "model": "dense"}, 400, grid={"model": _MATCHED},
        notes="MoE (8 experts, top-2, active FFN = dense FFN), PKM, Memory+ and PEER replace FFNs at ~the dense "
              "FLOPs/token (within 10 %). MemoryFormer cannot be FLOP-matched at this size (it would need d ≈ 200 "
              "and 40 M parameters): it runs at the same width, with ~1/4 the FLOPs, as in MemoryFormer Table 1. "
              "Measured 49 (dense) – 130 (PEER) ms/step.",
    ),
    _capacity_study(),
    Study(
        "lazy-adam", "Row-sparse tables: dense AdamW vs lazy AdamW (memlab.RowSparseAdam) on MemoryFormer's tables",
        dict(LAZY_ADAM_MODEL), dict(LAZY_ADAM_TRAIN),
        points=(("AdamW (dense)", {"table_optimizer": "adamw"}), ("lazy AdamW (row-sparse)", {"table_optimizer": "lazy"})),
        seeds=3, in_all=False,
        notes="memlab's own question, not a paper table: does updating only the rows read in a step (lazy Adam: "
              "untouched rows keep their moments, bias correction counts the table's steps) change what the demo's "
              "MemoryFormer learns? The demo's model and run (make demo: d = 128, 4 layers, τ = 8, e = 2, 300 steps "
              "of 16 × 128 bytes); every other parameter group keeps AdamW's update bit for bit. At this size a step "
              "reads most rows of every table (2 048 tokens into 256-row tables), so the two optimizers differ "
              "mostly on the Memory Block's 1 024-row tables. Measured with --jobs 2 on a loaded 2-core machine: "
              "1.6 s/step (AdamW), 1.0 s/step (lazy). Not in --study all: python -m memlab sweep --study lazy-adam.",
    ),
]}


def study_names(available_only: bool = False, in_all: bool = False) -> list[str]:
    """Study names; ``available_only``: those that can run here; ``in_all``: those ``--study all`` runs."""
    return [n for n, s in STUDIES.items() if not (available_only and s.missing()) and not (in_all and not s.in_all)]


def get_study(name: str | Study) -> Study:
    """The study called ``name`` (a ``Study`` passes through); an unknown name raises with the closest match."""
    if isinstance(name, Study):
        return name
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}{did_you_mean(str(name), STUDIES)}; studies: {', '.join(STUDIES)}")
    return STUDIES[name]
