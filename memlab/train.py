"""``python -m memlab train``: one trainer for every tiny model (dense, moe, memoryformer, pkm, memoryplus).

    AdamW (β = 0.9, 0.95), linear warm-up then cosine decay to ``min_lr_ratio``·LR, gradient clipping, and separate
    parameter groups: MemoryFormer tables at ``table_lr_mult`` × LR (3×, the paper), product-key values at their own
    ``values_lr`` (1e-3, the released code) with their own clipping (paper §3).

Every run lives in ``runs/<name>/``: ``checkpoint.pt`` (written atomically: temporary file, then ``os.replace``),
``results.json`` (configs, sizes, FLOPs, final metrics, the whole history), ``history.csv`` and ``evals.csv``.
``--resume`` continues from the checkpoint — model, optimiser, data-sampler RNG and history — so on CPU a run that was
killed and resumed reproduces the uninterrupted run's losses exactly.

    python -m memlab train --model memoryformer --steps 300 --set d_model=128 --set tau=8 --name mf
    python -m memlab train --name mf --resume          # after a kill: continues where the checkpoint left off
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from . import data as data_lib
from .io import atomic_torch_save, atomic_write_text
from .models import GPT, ModelConfig, usage_statistics
from .models.config import check_known_keys


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

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        check_known_keys(cls, values, "train")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0 <= self.fact_fraction < 1:
            raise ValueError(f"fact_fraction must lie in [0, 1), got {self.fact_fraction}")
        if self.lr <= 0 or self.values_lr <= 0:
            raise ValueError("learning rates must be > 0")


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
            import difflib
            close = difflib.get_close_matches(k, sorted(model_keys | train_keys), n=1)
            raise ValueError(
                f"unknown config key {k!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
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


def make_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with four groups: decayed weights, non-decayed (norms, 1-D), MemoryFormer tables, product-key values."""
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
    return torch.optim.AdamW(groups, betas=(cfg.beta1, cfg.beta2))


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float) -> dict[str, float]:
    """Clip the product-key values on their own (paper) and everything else together; returns the norms."""
    norms = {}
    values = [p for g in optimizer.param_groups if g["name"] == "values" for p in g["params"] if p.grad is not None]
    rest = [p for g in optimizer.param_groups if g["name"] != "values" for p in g["params"] if p.grad is not None]
    if max_norm and max_norm > 0:
        norms["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(rest, max_norm))
        if values:
            norms["values_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(values, max_norm))
    return norms


# ---------------------------------------------------------------------------------------------------------- data
def sample_batch(train: torch.Tensor, facts: torch.Tensor | None, cfg: TrainConfig, seq_len: int,
                 generator: torch.Generator, device: torch.device):
    """A batch of random windows; ``round(fact_fraction · batch_size)`` rows come from the fact stream."""
    n_facts = round(cfg.fact_fraction * cfg.batch_size) if facts is not None else 0
    x, y = data_lib.get_batch(train, cfg.batch_size - n_facts, seq_len, generator)
    if n_facts:
        fx, fy = data_lib.get_batch(facts, n_facts, seq_len, generator)
        x, y = torch.cat([x, fx]), torch.cat([y, fy])
    return x.to(device), y.to(device)


@torch.no_grad()
def evaluate(model: GPT, batches, device) -> float:
    """Mean cross-entropy (nats/byte) over fixed validation batches."""
    was_training = model.training
    model.eval()
    losses = [float(model(x.to(device), y.to(device))[1]) for x, y in batches]
    model.train(was_training)
    return sum(losses) / len(losses)


# ---------------------------------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[GPT, dict]:
    """(model, checkpoint dict) from a run folder or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python -m memlab train --name …)")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model = GPT(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device), ckpt


# ---------------------------------------------------------------------------------------------------------- training
def train(model_config: ModelConfig | dict, cfg: TrainConfig | dict | None = None, resume: bool = False,
          verbose: bool = True, corpus: data_lib.Corpus | None = None) -> dict:
    """Train one model; returns the results dict that is also written to ``runs/<name>/results.json``."""
    if isinstance(model_config, dict):
        model_config = ModelConfig.from_dict(model_config)
    cfg = TrainConfig.from_dict(cfg or {}) if not isinstance(cfg, TrainConfig) else cfg
    cfg.validate()
    model_config.validate()
    say = print if verbose else (lambda *a, **k: None)
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.out_dir) / cfg.name
    ckpt_path = run_dir / "checkpoint.pt"
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; start the run without --resume")

    corpus = corpus or data_lib.load_corpus(cfg.corpus, cfg.text, verbose=verbose)
    facts = data_lib.FactSet(cfg.fact_entities, seed=cfg.seed) if cfg.fact_entities else None
    fact_stream = data_lib._from_bytes(facts.text(seed=cfg.seed)) if facts else None
    if fact_stream is not None and fact_stream.numel() <= model_config.seq_len + 1:
        raise ValueError(f"fact_entities={cfg.fact_entities} is too few for seq_len={model_config.seq_len}")
    val = data_lib.eval_batches(corpus.val, cfg.eval_batches, cfg.batch_size, model_config.seq_len)
    stats_ids = val[0][0].to(device)

    torch.manual_seed(cfg.seed)
    model = GPT(model_config).to(device)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    state = {"step": 0, "history": [], "evals": [], "usage": [], "train_seconds": 0.0}
    if resume:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt["model_config"] != model_config.to_dict():
            raise ValueError(f"--resume: the checkpoint in {run_dir} was trained with a different model config")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = ckpt["state"]
        say(f"resumed {run_dir} at step {state['step']}")

    report = model.report()
    say(f"{cfg.name}: {model_config.model}  params {report['params_total']:,} (active {report['params_active']:,})  "
        f"memory {report['memory_mb']:.1f} MB  FLOPs/token {report['flops_per_token']:,}  on {device}")
    tokens_per_step = cfg.batch_size * model_config.seq_len
    stopped_early = False
    model.train()

    def save_checkpoint():
        atomic_torch_save({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(), "state": state, "model_config": model_config.to_dict(),
            "train_config": asdict(cfg),
        }, ckpt_path)

    while state["step"] < cfg.steps:
        step = state["step"]
        t0 = time.perf_counter()
        factor = lr_factor(step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        x, y = sample_batch(corpus.train, fact_stream, cfg, model_config.seq_len, generator, device)
        _, loss = model(x, y)
        total = loss + model.aux_loss().to(loss.device)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        norms = clip_gradients(optimizer, cfg.clip)
        optimizer.step()
        loss_value = loss.detach().item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        state["train_seconds"] += dt
        state["step"] = step = step + 1
        state["history"].append({"step": step, "loss": loss_value, "lr": cfg.lr * factor,
                                 "tokens": step * tokens_per_step, "tokens_per_s": tokens_per_step / dt, **norms})
        last = step == cfg.steps
        if step % cfg.eval_every == 0 or last:
            val_loss = evaluate(model, val, device)
            state["evals"].append({"step": step, "val_loss": val_loss, "val_ppl": math.exp(val_loss)})
            say(f"  step {step:5d}  val loss {val_loss:.4f}  ppl {math.exp(val_loss):.2f}")
        if cfg.stats_every and (step % cfg.stats_every == 0 or last):
            layers = usage_statistics(model, stats_ids)
            if layers:
                state["usage"].append({"step": step, "layers": layers})
        if step % cfg.log_every == 0 or last:
            recent = [h["tokens_per_s"] for h in state["history"][-cfg.log_every:]]
            say(f"  step {step:5d}/{cfg.steps}  loss {loss_value:.4f}  lr {cfg.lr * factor:.2e}  "
                f"tok/s {statistics.median(recent):,.0f}", flush=True)
        over_time = cfg.max_seconds is not None and state["train_seconds"] > cfg.max_seconds
        killed = cfg.stop_after is not None and step >= cfg.stop_after
        if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or last or over_time or killed:
            save_checkpoint()
        if killed and not last:
            say(f"  stopped after step {step} (stop_after); continue with --resume")
            return {"name": cfg.name, "stopped_at": step, "history": state["history"], "run_dir": str(run_dir)}
        if over_time and not last:
            say(f"  time budget of {cfg.max_seconds:.0f} s reached at step {step}/{cfg.steps}; stopping early")
            stopped_early = True
            if not state["evals"] or state["evals"][-1]["step"] != step:
                val_loss = evaluate(model, val, device)
                state["evals"].append({"step": step, "val_loss": val_loss, "val_ppl": math.exp(val_loss)})
            break

    results = finish_run(model, cfg, model_config, state, facts, stopped_early, say)
    return results


def tokens_per_second(history: list[dict], skip: int = 2) -> float:
    """Training throughput: tokens / seconds over the steps after the first ``skip`` (warm-up, lazy init).

    Every step trains the same number of tokens, so this is the harmonic mean of the per-step rates — a mean, not a
    median: on a shared machine the slow steps are real time too."""
    rates = [h["tokens_per_s"] for h in (history[skip:] if len(history) > skip else history)]
    return len(rates) / sum(1 / r for r in rates) if rates else float("nan")


def finish_run(model, cfg, model_config, state, facts, stopped_early, say) -> dict:
    """Final metrics (val ppl, fact probes, tokens/s) and the run's files."""
    run_dir = Path(cfg.out_dir) / cfg.name
    final = state["evals"][-1]
    results = {
        "name": cfg.name, **model.report(), "steps": state["step"], "stopped_early": stopped_early,
        "tokens_trained": state["step"] * cfg.batch_size * model_config.seq_len,
        "tokens_per_s": tokens_per_second(state["history"]),
        "train_seconds": state["train_seconds"], "val_loss": final["val_loss"], "val_ppl": final["val_ppl"],
        "train_loss": state["history"][-1]["loss"],
    }
    if facts is not None:
        results["fact_recall"] = data_lib.fact_accuracy(model, facts, "statement")
        results["fact_qa_heldout"] = data_lib.fact_accuracy(model, facts, "question")
        results["fact_chance"] = facts.chance
    results.update({"model_config": model_config.to_dict(), "train_config": asdict(cfg),
                    "history": state["history"], "evals": state["evals"], "usage": state["usage"],
                    "run_dir": str(run_dir), "device": str(resolve_device(cfg.device)),
                    "torch_threads": torch.get_num_threads()})
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(run_dir / "history.csv", _csv(state["history"]))
    atomic_write_text(run_dir / "evals.csv", _csv(state["evals"]))
    msg = f"{cfg.name}: val ppl {results['val_ppl']:.2f}  tok/s {results['tokens_per_s']:,.0f}"
    if facts is not None:
        msg += f"  fact recall {results['fact_recall']:.1%}  held-out QA {results['fact_qa_heldout']:.1%}"
    say(msg + f"  → {run_dir}/results.json")
    return results


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def load_run(path: str | os.PathLike) -> dict:
    """A finished run's results.json (from its folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}")
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
    parser.add_argument("--model", default=None, help="dense | moe | memoryformer | pkm | memoryplus (default dense)")
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
        train(model_config, cfg, resume=args.resume, verbose=not args.quiet)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
