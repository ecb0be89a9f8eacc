"""``python -m memlab train``: one trainer for every tiny model (every variant of ``memlab.lab.models.VARIANTS``).

    AdamW (β = 0.9, 0.95), linear warm-up then cosine decay to ``min_lr_ratio``·LR, gradient clipping, and separate
    parameter groups: MemoryFormer tables at ``table_lr_mult`` × LR (3×, the paper), product-key values at their own
    ``values_lr`` (1e-3, the released code) with their own clipping (paper §3).

Every run lives in ``runs/<name>/``: ``checkpoint.pt`` (written atomically: temporary file, then ``os.replace``),
``results.json`` (configs, sizes, FLOPs, final metrics, the whole history), ``history.csv``, ``evals.csv`` and, for
models with memory layers, ``usage_snapshots.npz`` (row hits per table or head at step 0 and every stats step).
``--resume`` continues from the checkpoint — model, optimiser, data-sampler RNG and history — so on CPU a run that was
killed and resumed reproduces the uninterrupted run's losses exactly.

    python -m memlab train --model memoryformer --steps 300 --set d_model=128 --set tau=8 --name mf
    python -m memlab train --name mf --resume          # after a kill: continues where the checkpoint left off

``train`` is a short loop over named steps, which a notebook can also call one at a time:

    run = build_run(model_config, train_config)   # configs checked; data, seeded model, optimiser (resume: restored)
    record = train_step(run)                      # one optimisation step → {"step", "loss", "lr", "tokens", ...}
    record_validation(run)                        # mean validation loss on fixed batches, appended to run.state
    save_checkpoint(run)                          # everything --resume needs, written atomically
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from . import data as data_lib
from . import knowledge as knowledge_lib
from .._checks import check_known_keys, check_positive_int, did_you_mean
from .io import atomic_write_text
from .snapshots import record_snapshot
from .models import GPT, MODEL_TYPES, ModelConfig, usage_statistics
from .row_sparse import RowSparseAdam, clip_sparse_grad_norm_
from ..layers.hash_memory import HashMemory
from .tables import csv_text
from .distributed import is_main_process
from .sharded_checkpoint import read_checkpoint
from .values_parallel import SingleProcess, parallel_for


# ---------------------------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """How to train. Sizes default to a run of a few minutes on 2 CPU cores."""

    name: str = "run"
    out_dir: str = "runs"
    corpus: str = data_lib.DEFAULT_CORPUS
    text: str | None = None          # a local text file instead of ``corpus``
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3                 # MemoryFormer's code: 3e-3
    min_lr_ratio: float = 0.1        # cosine decays to lr · min_lr_ratio
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    clip: float = 1.0
    table_lr_mult: float = 3.0       # MemoryFormer tables: 3 × the base LR (paper, Table 4)
    values_lr: float = 1e-3          # product-key values: their own LR (released code)
    memory_weight_decay: float = 0.0  # tables/values: most rows are not read in a step, so no decay by default
    table_optimizer: str = "adamw"   # MemoryFormer tables: "adamw" (dense gradient, the paper) or "lazy" (row-sparse
                                     #   gradient + memlab.RowSparseAdam: lazy AdamW, only rows read are stepped)
    fact_entities: int = 200         # synthetic facts mixed into training (0: none)
    fact_fraction: float = 0.25      # share of each batch's rows drawn from the fact stream
    seed: int = 0
    device: str = "auto"             # auto: CUDA when present
    eval_every: int = 50
    eval_batches: int = 8
    stats_every: int = 50            # usage statistics of every memory layer (0: never)
    ckpt_every: int = 50
    log_every: int = 10
    max_seconds: float | None = None  # stop early (and say so) when training exceeds this wall time
    stop_after: int | None = None    # stop after this step as if killed (tests --resume); the checkpoint is kept
    values_parallel: int = 1         # shard product-key values by columns over this many processes (torchrun)
    task: str = "lm"                 # "lm": the corpus (+ facts); "knowledge": fact lines only, scored in bits at the end
    knowledge_entities: int = 1000   # task="knowledge" (memlab.lab.knowledge): N entities, A attributes, V values,
    knowledge_attributes: int = 4    #   and held-out entities that are never trained (the chance control);
    knowledge_values: int = 256      #   run length sets the exposures per fact: knowledge.steps_for_exposures
    knowledge_heldout: int = 64

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        check_known_keys([f.name for f in fields(cls)], values, "train")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "log_every", "values_parallel"):
            check_positive_int(getattr(self, name), name)
        if not 0 <= self.fact_fraction < 1:
            raise ValueError(f"fact_fraction must lie in [0, 1), got {self.fact_fraction}")
        if self.lr <= 0 or self.values_lr <= 0:
            raise ValueError(f"learning rates must be > 0, got lr={self.lr}, values_lr={self.values_lr}")
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is not one of {TASKS}{did_you_mean(str(self.task), TASKS)}")
        if self.table_optimizer not in TABLE_OPTIMIZERS:
            raise ValueError(f"table_optimizer={self.table_optimizer!r} is not one of {TABLE_OPTIMIZERS}"
                             f"{did_you_mean(str(self.table_optimizer), TABLE_OPTIMIZERS)}")


TASKS = ("lm", "knowledge")
TABLE_OPTIMIZERS = ("adamw", "lazy")


def knowledge_stream(cfg: TrainConfig, model_config: ModelConfig) -> knowledge_lib.KnowledgeStream | None:
    """The fact stream of ``task="knowledge"`` (None for "lm"): its knowledge base is made from the run's seed."""
    if cfg.task != "knowledge":
        return None
    return knowledge_lib.build_stream(cfg.knowledge_entities, model_config.seq_len, cfg.knowledge_attributes,
                                      cfg.knowledge_values, cfg.knowledge_heldout, seed=cfg.seed)


def split_overrides(pairs: dict) -> tuple[dict, dict]:
    """Route ``key=value`` overrides to the model or the train config; unknown keys → one ValueError."""
    model_keys = {f.name for f in fields(ModelConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    model, train = {}, {}
    for k, v in pairs.items():
        if k in model_keys:
            model[k] = v
        elif k in train_keys:
            train[k] = v
        else:
            raise ValueError(
                f"unknown config key {k!r}{did_you_mean(k, model_keys | train_keys)}"
                + f"; model keys: {', '.join(sorted(model_keys))}; train keys: {', '.join(sorted(train_keys))}"
            )
    return model, train


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------------------- optimiser
def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of every group's base LR at ``step`` (0-based): linear warm-up, then cosine to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with four groups: decayed weights, non-decayed (norms, 1-D), MemoryFormer tables, product-key values.

    ``table_optimizer="lazy"``: the optimizer is chosen per group. The tables group gets row-sparse gradients (every
    ``HashMemory`` of the model is switched to ``sparse_grad=True`` here) and lazy AdamW (``memlab.RowSparseAdam``:
    only the rows read in a step are updated, their moments too — not AdamW's maths, see its docstring); every other
    group keeps torch.optim.AdamW's update bit for bit (``RowSparseAdam`` with ``fused=False`` on a dense gradient)."""
    mem = model.memory_parameters()
    special = {id(p) for ps in mem.values() for p in ps}
    decay, no_decay = [], []
    for p in model.parameters():
        if id(p) in special or not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"name": "weights", "params": decay, "base_lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"name": "no_decay", "params": no_decay, "base_lr": cfg.lr, "weight_decay": 0.0},
        {"name": "tables", "params": mem["tables"], "base_lr": cfg.lr * cfg.table_lr_mult,
         "weight_decay": cfg.memory_weight_decay},
        {"name": "values", "params": mem["values"], "base_lr": cfg.values_lr, "weight_decay": cfg.memory_weight_decay},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = g["base_lr"]
    lazy = cfg.table_optimizer == "lazy"
    for m in model.modules():
        if isinstance(m, HashMemory):
            m.sparse_grad = lazy
    if lazy:
        for g in groups:
            g["fused"] = None if g["name"] == "tables" else False  # fused=False: AdamW's default update, to the bit
            g["in_place"] = g["name"] == "tables"  # the touched rows stepped in place by memlab's C kernel
        return RowSparseAdam(groups, betas=(cfg.beta1, cfg.beta2))
    return torch.optim.AdamW(groups, betas=(cfg.beta1, cfg.beta2))


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float,
                   clip_values=torch.nn.utils.clip_grad_norm_) -> dict[str, float]:
    """Clip the product-key values on their own (paper) and everything else together; returns the norms.
    ``clip_values`` clips the values (a values-parallel run passes one whose norm spans every rank's columns)."""
    norms = {}
    values = [p for g in optimizer.param_groups if g["name"] == "values" for p in g["params"] if p.grad is not None]
    rest = [p for g in optimizer.param_groups if g["name"] != "values" for p in g["params"] if p.grad is not None]
    if max_norm and max_norm > 0:
        sparse = any(p.grad.is_sparse for p in rest)  # row-sparse tables (table_optimizer="lazy")
        norms["grad_norm"] = float((clip_sparse_grad_norm_ if sparse else torch.nn.utils.clip_grad_norm_)(rest, max_norm))
        if values:
            norms["values_grad_norm"] = float(clip_values(values, max_norm))
    return norms


# ---------------------------------------------------------------------------------------------------------- a run
def fresh_state() -> dict:
    """The progress of a run that has not taken a step."""
    return {"step": 0, "history": [], "evals": [], "usage": [], "train_seconds": 0.0}


@dataclass
class Run:
    """One training run in memory: ``build_run`` makes it, ``train_step`` advances it, ``save_checkpoint`` writes it.

    ``state`` is the progress a checkpoint carries besides the weights: ``step`` (steps done), ``history`` (one record
    per step), ``evals`` (validation losses), ``usage`` (memory-row statistics) and ``train_seconds``.
    """

    model_config: ModelConfig
    train_config: TrainConfig
    model: GPT
    optimizer: torch.optim.AdamW
    generator: torch.Generator        # draws the training batches; checkpointed, so a resumed run draws the same ones
    corpus: data_lib.Corpus | None   # None for task="knowledge"
    facts: data_lib.FactSet | None
    fact_stream: torch.Tensor | None  # the facts as training bytes (None: no facts mixed in)
    val_batches: list                 # fixed (inputs, targets) pairs: every evaluation sees the same bytes
    device: torch.device
    state: dict = field(default_factory=fresh_state)
    parallel: SingleProcess = field(default_factory=SingleProcess)  # values parallel: memlab.lab.values_parallel
    knowledge: knowledge_lib.KnowledgeStream | None = None  # task="knowledge": the fact stream and its probe

    @property
    def run_dir(self) -> Path:
        return Path(self.train_config.out_dir) / self.train_config.name

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @property
    def tokens_per_step(self) -> int:
        return self.train_config.batch_size * self.model_config.seq_len


def build_run(model_config: ModelConfig | dict, cfg: TrainConfig | dict | None = None, resume: bool = False,
              verbose: bool = True, corpus: data_lib.Corpus | None = None) -> Run:
    """Check the configs, load the data, build the model (seeded), optimiser and batch sampler; with ``resume``,
    restore all of it from ``runs/<name>/checkpoint.pt``. ``corpus`` skips loading one (the demo shares it)."""
    if isinstance(model_config, dict):
        model_config = ModelConfig.from_dict(model_config)
    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg or {})
    cfg.validate()
    model_config.validate()
    checkpoint_path = Path(cfg.out_dir) / cfg.name / "checkpoint.pt"
    if resume and not checkpoint_path.exists():  # before loading the corpus: fail fast
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint_path}; start the run without --resume")
    device = resolve_device(cfg.device)
    parallel = parallel_for(cfg.values_parallel, device)  # one process, or this rank of a values-parallel run

    knowledge = knowledge_stream(cfg, model_config)
    if knowledge is not None:  # fact lines only: no corpus is read and no other facts are mixed in
        cfg = replace(cfg, fact_entities=0)
    else:
        corpus = corpus or data_lib.load_corpus(cfg.corpus, cfg.text, verbose=verbose)
    facts = data_lib.FactSet(cfg.fact_entities, seed=cfg.seed) if cfg.fact_entities else None
    fact_stream = data_lib.byte_tensor(facts.text(seed=cfg.seed)) if facts else None
    if fact_stream is not None and fact_stream.numel() <= model_config.seq_len + 1:
        raise ValueError(f"fact_entities={cfg.fact_entities} is too few for seq_len={model_config.seq_len}; "
                         "raise fact_entities, or set it to 0 to train without facts")
    val_batches = (knowledge.eval_batches(cfg.eval_batches, cfg.batch_size) if knowledge is not None else
                   data_lib.eval_batches(corpus.val, cfg.eval_batches, cfg.batch_size, model_config.seq_len))

    torch.manual_seed(cfg.seed)  # the initial weights
    model = parallel.shard_(GPT(model_config).to(device))  # values parallel: keep this rank's value columns
    run = Run(model_config, cfg, model, make_optimizer(model, cfg), torch.Generator().manual_seed(cfg.seed),
              corpus, facts, fact_stream, val_batches, device, parallel=parallel, knowledge=knowledge)
    if resume:
        restore_checkpoint(run)
    return run


# ---------------------------------------------------------------------------------------------------------- one step
def sample_batch(train: torch.Tensor, facts: torch.Tensor | None, cfg: TrainConfig, seq_len: int,
                 generator: torch.Generator, device: torch.device):
    """A batch of random windows; ``round(fact_fraction · batch_size)`` rows come from the fact stream."""
    n_facts = round(cfg.fact_fraction * cfg.batch_size) if facts is not None else 0
    x, y = data_lib.get_batch(train, cfg.batch_size - n_facts, seq_len, generator)
    if n_facts:
        fx, fy = data_lib.get_batch(facts, n_facts, seq_len, generator)
        x, y = torch.cat([x, fx]), torch.cat([y, fy])
    return x.to(device), y.to(device)


def train_step(run: Run) -> dict:
    """One optimisation step: set the scheduled LR, sample a batch, forward, backward, clip, update.

    Returns the step's record ({step, loss, lr, tokens, tokens_per_s, grad norms}), also appended to the history."""
    cfg, model, optimizer = run.train_config, run.model, run.optimizer
    start = time.perf_counter()
    factor = lr_factor(run.state["step"], cfg)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    if run.knowledge is not None:  # the next rows of the fact stream: a function of the step (exact resume)
        x, y = run.knowledge.batch(run.state["step"], cfg.batch_size, run.device)
    else:
        x, y = sample_batch(run.corpus.train, run.fact_stream, cfg, run.model_config.seq_len, run.generator,
                            run.device)
    x, y = run.parallel.local_rows(x, y)  # values parallel: this rank's rows of the global batch
    model.train()
    _, loss = model(x, y)
    total = loss + model.aux_loss().to(loss.device)  # MoE's load-balancing loss; 0 for the other models
    optimizer.zero_grad(set_to_none=True)
    run.parallel.backward(total)  # values parallel: + the dense gradients summed over ranks
    grad_norms = clip_gradients(optimizer, cfg.clip, run.parallel.clip_grad_norm_)
    optimizer.step()
    loss_value = loss.detach().item()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    loss_value, seconds = run.parallel.agree(loss_value, seconds)  # values parallel: global loss, slowest rank

    step = run.state["step"] + 1
    record = {"step": step, "loss": loss_value, "lr": cfg.lr * factor, "tokens": step * run.tokens_per_step,
              "tokens_per_s": run.tokens_per_step / seconds, **grad_norms}
    run.state["step"] = step
    run.state["train_seconds"] += seconds
    run.state["history"].append(record)
    return record


# ---------------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: GPT, batches, device) -> float:
    """Mean cross-entropy (nats/byte) over fixed validation batches."""
    was_training = model.training
    model.eval()
    losses = [float(model(x.to(device), y.to(device))[1]) for x, y in batches]
    model.train(was_training)
    return sum(losses) / len(losses)


def record_validation(run: Run) -> dict:
    """Evaluate on the run's validation batches and append {step, val_loss, val_ppl} to its evals."""
    val_loss = evaluate(run.model, run.val_batches, run.device)
    entry = {"step": run.state["step"], "val_loss": val_loss, "val_ppl": math.exp(val_loss)}
    run.state["evals"].append(entry)
    return entry


def record_usage(run: Run) -> None:
    """Append the usage statistics of every memory layer (on the first validation batch); dense models have none.
    The per-row hit counts behind them go to ``usage_snapshots.npz`` in the run folder (``memlab.lab.snapshots``)."""
    layers = usage_statistics(run.model, run.val_batches[0][0].to(run.device))
    if layers:
        run.state["usage"].append({"step": run.state["step"], "layers": layers})
    record_snapshot(run.model, run.val_batches[0][0].to(run.device), run.state["step"], run.run_dir,
                    write=run.parallel.is_main)


# ---------------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(run: Run) -> None:
    """Write everything a bit-exact resume needs — weights, optimiser, both RNGs, progress, configs — atomically."""
    run.parallel.save_checkpoint({  # values parallel: each rank's value columns in their own file
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "generator": run.generator.get_state(), "torch_rng": torch.get_rng_state(), "state": run.state,
        "model_config": run.model_config.to_dict(), "train_config": asdict(run.train_config),
    }, run.checkpoint_path, run.optimizer)


def restore_checkpoint(run: Run) -> None:
    """Load a freshly built run's weights, optimiser, RNGs and progress from its checkpoint (``--resume``)."""
    ckpt = run.parallel.load_checkpoint(run.checkpoint_path, run.device, run.optimizer)  # any world size → ours
    if ModelConfig.from_dict(ckpt["model_config"]).to_dict() != run.model_config.to_dict():  # fields added later: defaults
        raise ValueError(f"--resume: the checkpoint in {run.run_dir} was trained with a different model config; "
                         "resume with the same --model and --set values, or start a run under a new --name")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.generator.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    run.state = ckpt["state"]


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[GPT, dict]:
    """(model, checkpoint dict) from a run folder or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python -m memlab train --name …)")
    ckpt = read_checkpoint(path, device)  # a values-parallel run's shards are joined back into whole tables
    model = GPT(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device), ckpt


# ---------------------------------------------------------------------------------------------------------- training
def train(model_config: ModelConfig | dict, cfg: TrainConfig | dict | None = None, resume: bool = False,
          verbose: bool = True, corpus: data_lib.Corpus | None = None, on_step=None) -> dict:
    """Train one model; returns the results dict that is also written to ``runs/<name>/results.json``.

    ``on_step``: optional callable given every step's record ({step, loss, lr, ...}) — progress bars (sweep.py).

    Each step: ``train_step``; every ``eval_every`` steps ``record_validation``, every ``stats_every`` steps
    ``record_usage``, every ``ckpt_every`` steps ``save_checkpoint``. ``stop_after`` stops as if killed (the
    checkpoint is kept for ``resume``); ``max_seconds`` stops early and still finishes the run.
    """
    say = print if verbose else (lambda *args, **kwargs: None)
    run = build_run(model_config, cfg, resume, verbose, corpus)
    cfg = run.train_config
    if resume:
        say(f"resumed {run.run_dir} at step {run.state['step']}")
    report = run.model.report()
    say(f"{cfg.name}: {run.model_config.model}  params {report['params_total']:,} (active {report['params_active']:,})  "
        f"memory {report['memory_mb']:.1f} MB  FLOPs/token {report['flops_per_token']:,}  on {run.device}")

    if cfg.stats_every and run.state["step"] == 0:  # the memories at initialisation, for the explorer's contrast
        record_snapshot(run.model, run.val_batches[0][0].to(run.device), 0, run.run_dir, write=run.parallel.is_main)
    while run.state["step"] < cfg.steps:
        record = train_step(run)
        if on_step is not None:
            on_step(record)
        step = record["step"]
        last = step == cfg.steps
        if step % cfg.eval_every == 0 or last:
            entry = record_validation(run)
            say(f"  step {step:5d}  val loss {entry['val_loss']:.4f}  ppl {entry['val_ppl']:.2f}")
        if cfg.stats_every and (step % cfg.stats_every == 0 or last):
            record_usage(run)
        if step % cfg.log_every == 0 or last:
            recent = [h["tokens_per_s"] for h in run.state["history"][-cfg.log_every:]]
            say(f"  step {step:5d}/{cfg.steps}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                f"tok/s {statistics.median(recent):,.0f}", flush=True)
        over_time = cfg.max_seconds is not None and run.state["train_seconds"] > cfg.max_seconds
        killed = cfg.stop_after is not None and step >= cfg.stop_after
        if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or last or over_time or killed:
            save_checkpoint(run)
        if killed and not last:
            say(f"  stopped after step {step} (stop_after); continue with --resume")
            return {"name": cfg.name, "stopped_at": step, "history": run.state["history"],
                    "run_dir": str(run.run_dir)}
        if over_time and not last:
            say(f"  time budget of {cfg.max_seconds:.0f} s reached at step {step}/{cfg.steps}; stopping early")
            if not run.state["evals"] or run.state["evals"][-1]["step"] != step:
                record_validation(run)
            return finish_run(run, stopped_early=True, say=say)
    return finish_run(run, stopped_early=False, say=say)


# ---------------------------------------------------------------------------------------------------------- results
def tokens_per_second(history: list[dict], skip: int = 2) -> float:
    """Training throughput: tokens / seconds over the steps after the first ``skip`` (warm-up, lazy init).

    Every step trains the same number of tokens, so this is the harmonic mean of the per-step rates — a mean, not a
    median: on a shared machine the slow steps are real time too."""
    rates = [h["tokens_per_s"] for h in (history[skip:] if len(history) > skip else history)]
    return len(rates) / sum(1 / r for r in rates) if rates else float("nan")


def finish_run(run: Run, stopped_early: bool = False, say=print) -> dict:
    """Final metrics (val ppl, fact probes, tokens/s) and the run's files: results.json, history.csv, evals.csv."""
    cfg, state, facts = run.train_config, run.state, run.facts
    final = state["evals"][-1]
    results = {
        "name": cfg.name, **run.model.report(), "steps": state["step"], "stopped_early": stopped_early,
        "tokens_trained": state["step"] * run.tokens_per_step,
        "tokens_per_s": tokens_per_second(state["history"]),
        "train_seconds": state["train_seconds"], "val_loss": final["val_loss"], "val_ppl": final["val_ppl"],
        "train_loss": state["history"][-1]["loss"],
    }
    if facts is not None:
        results["fact_recall"] = data_lib.fact_accuracy(run.model, facts, "statement")
        results["fact_qa_heldout"] = data_lib.fact_accuracy(run.model, facts, "question")
        results["fact_chance"] = facts.chance
    if run.knowledge is not None:  # the capacity probe and its controls: kb_* metrics and their details
        results.update(run.knowledge.score(run.model, state["step"], cfg.batch_size))
    results.update({"model_config": run.model_config.to_dict(), "train_config": asdict(cfg),
                    "history": state["history"], "evals": state["evals"], "usage": state["usage"],
                    "run_dir": str(run.run_dir), "device": str(run.device), "torch_threads": torch.get_num_threads()})
    if run.parallel.is_main:  # values parallel: every rank has the same results; rank 0 writes them
        atomic_write_text(run.run_dir / "results.json", json.dumps(results, indent=1) + "\n")
        atomic_write_text(run.run_dir / "history.csv", csv_text(state["history"]))
        atomic_write_text(run.run_dir / "evals.csv", csv_text(state["evals"]))
    message = f"{cfg.name}: val ppl {results['val_ppl']:.2f}  tok/s {results['tokens_per_s']:,.0f}"
    if facts is not None:
        message += f"  fact recall {results['fact_recall']:.1%}  held-out QA {results['fact_qa_heldout']:.1%}"
    if run.knowledge is not None:
        message += (f"  facts: rank acc {results['kb_rank_acc']:.1%} (chance {results['kb_chance']:.1%}), "
                    f"{results['kb_bits']:,.0f} of {results['kb_bits_max']:,.0f} bits")
    say(message + f"  → {run.run_dir}/results.json")
    return results


def load_run(path: str | os.PathLike) -> dict:
    """A finished run's results.json (from its folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}; train first (python -m memlab train --name …)")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------------- CLI
def parse_value(text: str):
    """``--set`` values: JSON when it parses (numbers, true/false, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help=" | ".join(MODEL_TYPES) + " (default dense)")
    parser.add_argument("--name", default=None, help="run name: results go to runs/NAME (default: the model name)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--corpus", default=None, help=f"one of {data_lib.CORPORA} (default python-docs, offline)")
    parser.add_argument("--text", default=None, help="train on a local text file instead")
    parser.add_argument("--config", default=None, help='JSON file {"model": {...}, "train": {...}}')
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any model or train config key, e.g. --set d_model=64 --set lr=1e-3")
    parser.add_argument("--resume", action="store_true", help="continue runs/NAME from its checkpoint")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda")
    parser.add_argument("--quiet", action="store_true")


def config_from_args(args) -> tuple[ModelConfig, TrainConfig]:
    model_values, train_values = {}, {}
    if args.config:
        path = Path(args.config)
        if not path.exists():
            raise FileNotFoundError(f"config file not found: {path}")
        spec = json.loads(path.read_text())
        unknown = set(spec) - {"model", "train"}
        if unknown:
            raise ValueError(f"config file {path}: unknown section(s) {sorted(unknown)}; use 'model' and 'train'")
        model_values.update(spec.get("model", {}))
        train_values.update(spec.get("train", {}))
    m, t = split_overrides(parse_sets(args.set))
    model_values.update(m)
    train_values.update(t)
    if args.model:
        model_values["model"] = args.model
    for key in ("steps", "corpus", "text", "device"):
        if getattr(args, key) is not None:
            train_values[key] = getattr(args, key)
    if args.resume and not (args.model or args.config or model_values) and (args.name or train_values.get("name")):
        # resume with the configs stored in the checkpoint
        ckpt = Path(train_values.get("out_dir", "runs")) / (args.name or train_values["name"]) / "checkpoint.pt"
        if ckpt.exists():
            stored = torch.load(ckpt, map_location="cpu", weights_only=False)
            model_values = stored["model_config"]
            train_values = {**stored["train_config"], "stop_after": None, **train_values}
    train_values["name"] = args.name or train_values.get("name") or model_values.get("model", "dense")
    return ModelConfig.from_dict(model_values), TrainConfig.from_dict(train_values)


def run(args) -> int:
    try:
        model_config, cfg = config_from_args(args)
        train(model_config, cfg, resume=args.resume, verbose=not args.quiet and is_main_process())
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
