"""``python -m memlab sweep``: ablation studies — points × seeds, each one ``train()`` run, cached and resumable.

A sweep is a ``Study`` (studies.py: base model + train config, a grid or named points, a number of seeds). Every
(point, seed) runs through the one trainer, ``train.train``, and ends as one result file keyed by a hash of its full
resolved config (model + train, seed included; not name, out_dir, log_every, ckpt_every, stop_after):

    runs/sweeps/<study>/<key>.json          one finished (point, seed): configs, status ok/failed, error, metrics
    runs/sweeps/<study>/<key>.usage.npz     its usage snapshots (memlab.lab.snapshots), read by memlab.lab.explorer
    runs/sweeps/<study>/work/<key>/         a point in progress: its checkpoint (deleted once the result is written)
    runs/sweeps/<study>/manifest.json       the (point, seed) keys of the latest invocation: what ``load`` reads
    runs/sweeps/<study>/results.csv         ``load(study)`` as CSV, rewritten after every invocation

* Cache: a key already on disk is never recomputed, so a second run is served from the files in a second or two.
  Changing one base hyper-parameter changes the keys of exactly the points it affects.
* Resume: every file is written atomically (temporary file, then rename), so a sweep killed at any moment (even
  SIGKILL) restarts with the same command: finished points are read back, the interrupted one resumes from its
  checkpoint (``train(resume=True)``, bit-exact on CPU). A corrupt result file is reported, kept as
  ``<key>.json.corrupt``, and recomputed.
* Bad points: a config that fails validation (d_model not divisible by τ …) or a run that raises is recorded as
  ``status="failed"`` with its error, and the rest of the sweep runs (``--retry-failed`` recomputes failed points).
* Parallel: ``--jobs N`` runs points in N spawned processes with ``cores // N`` torch threads each. ``--shard i/n``
  runs only the i-th of n round-robin slices of the (point, seed) list, so machines sharing ``--out`` split a study:

      #!/bin/bash
      #SBATCH --job-name=mf-tau --array=0-3 --cpus-per-task=4 --time=01:00:00
      python -m memlab sweep --study mf-tau --shard ${SLURM_ARRAY_TASK_ID}/4 --out /shared/memlab/sweeps
      # then, anywhere: python -m memlab sweep --study mf-tau --out /shared/memlab/sweeps  (reads the cache, prints)

  Run each shard once at a time: two processes on the same point would share its checkpoint.

From Python (a notebook)::

    from memlab.lab import sweep
    df = sweep.run_sweep("mf-tau", seeds=3)      # or sweep.load("mf-tau") for what is on disk
    sweep.summarize(df, by="point", metrics=["val_ppl", "fact_recall"])   # mean ± 95 % CI (Student t) over seeds
    sweep.export_csv(df, "mf-tau.csv")
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .._checks import check_known_keys, did_you_mean
from .io import atomic_write_bytes, atomic_write_json, atomic_write_text
from .snapshots import SNAPSHOT_FILE
from .models import ModelConfig
from .studies import STUDIES, Study, get_study, study_names
from .train import TrainConfig, parse_sets, split_overrides

#: Bumped when the meaning of a result file changes: old files then stop matching their keys and are recomputed.
FORMAT = 1
DEFAULT_OUT = "runs/sweeps"
#: Train-config keys that do not change a run's results: left out of the key.
NOT_IN_KEY = ("name", "out_dir", "log_every", "ckpt_every", "stop_after")
#: Config fields added after results were first cached, left out of the key while they hold their default (the value
#: that reproduces the runs made before the field existed), so that adding a field leaves every cached result valid.
#: Add a new field here when its default keeps old runs bit-identical; leave it out when it changes them.
KEY_ONLY_IF_SET = {
    "model": {"mf_hash_input": "identity"},
    "train": {"task": "lm", "knowledge_entities": 1000, "knowledge_attributes": 4, "knowledge_values": 256,
              "knowledge_heldout": 64, "table_optimizer": "adamw"},
}
#: Scalar results whose name starts with one of these become DataFrame columns too (the knowledge probe's ``kb_*``).
RESULT_PREFIXES = ("kb_",)
#: Metrics ``load`` takes from each run's results (NaN where a run has none, e.g. fact recall without facts).
RESULT_COLUMNS = ("model", "params_total", "params_active", "flops_per_token", "memory_mb", "tokens_per_s",
                  "val_loss", "val_ppl", "train_loss", "fact_recall", "fact_qa_heldout", "fact_chance", "steps",
                  "train_seconds")
#: Usage statistics averaged over every memory layer at the last logged step → ``usage_<name>`` columns.
USAGE_COLUMNS = ("fraction_used", "gini", "kl_uniform", "entropy")
DEFAULT_METRICS = ("val_ppl", "val_loss", "fact_recall", "tokens_per_s")


class SweepWarning(UserWarning):
    """Something on disk was not usable (a corrupt result file, a checkpoint that would not resume) and is redone."""


# ---------------------------------------------------------------------------------------------------------- planning
@dataclass
class Task:
    """One (point, seed) of a study, resolved: full configs, the key that names its result file, and any config error."""

    study: str
    label: str
    point: dict          # the point's own overrides (the swept values)
    seed: int
    model: dict          # the full model config (every field)
    train: dict          # the full train config; name = key, out_dir = the study's work folder
    key: str
    error: str | None = None  # the config's validation error: the point is recorded as failed without training


def config_key(model: dict, train: dict) -> str:
    """16 hex digits of SHA-256 over the full configs (minus ``NOT_IN_KEY``): equal configs ⇔ equal keys."""
    def keyed(config: dict, defaults: dict, skip=()) -> dict:
        return {k: v for k, v in config.items() if k not in skip and not (k in defaults and v == defaults[k])}

    payload = {"format": FORMAT, "model": keyed(model, KEY_ONLY_IF_SET["model"]),
               "train": keyed(train, KEY_ONLY_IF_SET["train"], NOT_IN_KEY)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _full_config(config_class, values: dict, what: str) -> tuple[dict, str | None]:
    """(every field of ``config_class`` with ``values`` applied, validation error or None). Unknown keys raise."""
    check_known_keys([f.name for f in fields(config_class)], values, what)
    values = dict(values)
    if config_class is ModelConfig and isinstance(values.get("memory_layers"), list):
        values["memory_layers"] = tuple(values["memory_layers"])
    config = config_class(**values)
    full = config.to_dict() if config_class is ModelConfig else asdict(config)
    try:
        config.validate()
        error = None
    except (ValueError, TypeError) as e:
        error = f"{type(e).__name__}: {e}"
    return full, error


def plan(study: str | Study, seeds: int | None = None, steps: int | None = None, overrides: dict | None = None,
         out: str | os.PathLike = DEFAULT_OUT) -> list[Task]:
    """Every (point, seed) of ``study`` resolved, in run order (points outer, seeds inner).

    Precedence: the study's base configs < ``overrides`` (``--set``) and ``steps`` < the point's own values. Seeds
    are base seed, base seed + 1, …; ``seeds`` defaults to the study's (per point: ``Study.seeds_of``). Unknown study
    or key → ValueError naming the closest match.
    """
    study = get_study(study)
    if study.missing():
        raise ValueError(f"study {study.name!r} cannot run here: {study.missing()}")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    set_model, set_train = split_overrides(dict(overrides or {}))
    if steps is not None:
        set_train["steps"] = steps
    work = str(Path(out) / study.name / "work")
    tasks = []
    for label, values in study.point_list():
        point_model, point_train = split_overrides(values)
        model, model_error = _full_config(ModelConfig, {**study.model, **set_model, **point_model}, "model")
        base_train = {**study.train, **set_train, **point_train}
        first_seed = int(base_train.get("seed", 0))
        for i in range(study.seeds_of(label) if seeds is None else seeds):
            train, train_error = _full_config(TrainConfig, {**base_train, "seed": first_seed + i, "stop_after": None},
                                              "train")
            key = config_key(model, train)
            train.update(name=key, out_dir=work)
            tasks.append(Task(study.name, label, dict(values), first_seed + i, model, train, key,
                              model_error or train_error))
    return tasks


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n (SLURM's ``$SLURM_ARRAY_TASK_ID`` counts from 0 with ``--array=0-…``)."""
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard expects i/n, e.g. 0/4 for the first of 4 slices, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text}: need 0 <= i < n (slices are numbered 0 … n-1)")
    return i, n


def shard_tasks(tasks: list[Task], i: int, n: int) -> list[Task]:
    """The i-th of n round-robin slices: disjoint, together every task, and each slice gets a mix of points."""
    return tasks[i::n]


# ---------------------------------------------------------------------------------------------------------- files
def study_dir(study: str, out: str | os.PathLike = DEFAULT_OUT) -> Path:
    return Path(out) / study


def result_path(task: Task, out: str | os.PathLike = DEFAULT_OUT) -> Path:
    return study_dir(task.study, out) / f"{task.key}.json"


def read_result(path: Path, key: str | None = None) -> dict | None:
    """A finished point's record, or None: absent, or unusable (reported, moved to ``.corrupt``, to be recomputed)."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        problem = None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            problem = f"not a format-{FORMAT} sweep result"
        elif key is not None and record.get("key") != key:
            problem = f"its key {record.get('key')!r} does not match the file name"
        elif record.get("status") not in ("ok", "failed") or (record["status"] == "ok" and "results" not in record):
            problem = "no status/results"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"{type(e).__name__}: {e}"
    if problem is None:
        return record
    warnings.warn(f"corrupt result file {path} ({problem}); kept as {path.name}.corrupt and recomputed",
                  SweepWarning, stacklevel=2)
    os.replace(path, path.with_name(path.name + ".corrupt"))
    return None


def write_manifest(study: Study, tasks: list[Task], out: str | os.PathLike) -> None:
    atomic_write_json(study_dir(study.name, out) / "manifest.json", {
        "format": FORMAT, "study": study.name, "swept": study.swept_keys(),
        "tasks": [{"key": t.key, "point": t.label, "seed": t.seed} for t in tasks],
    })


# ---------------------------------------------------------------------------------------------------------- one point
_CORPORA: dict = {}  # (corpus, text) → Corpus, loaded once per process


def _corpus(train: dict):
    from . import data as data_lib

    if train.get("task") == "knowledge":  # trains on fact lines only: no corpus to load
        return None
    key = (train["corpus"], train["text"])
    if key not in _CORPORA:
        _CORPORA[key] = data_lib.load_corpus(train["corpus"], train["text"])
    return _CORPORA[key]


def run_task(task: Task, on_step=None) -> dict:
    """Train one (point, seed) (resuming its checkpoint if there is one) and write its result file; returns the record.

    A config error or an exception in training gives a ``failed`` record with the error; KeyboardInterrupt is not
    caught, so the checkpoint stays for the next run.
    """
    from .train import train

    start = time.perf_counter()
    work = Path(task.train["out_dir"]) / task.key
    checkpoint = work / "checkpoint.pt"
    record = {"format": FORMAT, "key": task.key, "study": task.study, "point": task.label, "values": task.point,
              "seed": task.seed, "model_config": task.model, "train_config": task.train, "status": "failed",
              "error": task.error, "resumed_from": None}

    def first_step(step_record):  # the first step this call trains tells where a resumed run continued
        if record["resumed_from"] is None:
            record["resumed_from"] = step_record["step"] - 1
        if on_step is not None:
            on_step(step_record)

    if task.error is None:
        try:
            model_config, train_config = ModelConfig.from_dict(task.model), TrainConfig.from_dict(task.train)
            results = None
            if checkpoint.exists():
                try:
                    results = train(model_config, train_config, resume=True, verbose=False,
                                    corpus=_corpus(task.train), on_step=first_step)
                    if record["resumed_from"] is None:  # the checkpoint had every step; only the results were left
                        record["resumed_from"] = train_config.steps
                except Exception as e:  # an unreadable checkpoint: start the point again
                    warnings.warn(f"could not resume {checkpoint} ({type(e).__name__}: {e}); training the point "
                                  "from the start", SweepWarning, stacklevel=2)
                    shutil.rmtree(work, ignore_errors=True)
                    record["resumed_from"] = None
            if results is None:
                results = train(model_config, train_config, verbose=False, corpus=_corpus(task.train),
                                on_step=on_step)
            record["results"] = {k: v for k, v in results.items() if k not in ("model_config", "train_config",
                                                                                "run_dir")}
            record["status"] = "ok"
        except Exception as e:
            record["error"] = f"{type(e).__name__}: {e}"
            record["traceback"] = traceback.format_exc()
    record["wall_seconds"] = time.perf_counter() - start
    snapshots = work / SNAPSHOT_FILE  # usage snapshots outlive the work folder, as <key>.usage.npz (the explorer)
    if snapshots.exists():
        atomic_write_bytes(Path(task.train["out_dir"]).parent / f"{task.key}.usage.npz", snapshots.read_bytes())
    atomic_write_json(Path(task.train["out_dir"]).parent / f"{task.key}.json", record)
    shutil.rmtree(work, ignore_errors=True)  # after the result: a kill in between leaves a result and a stale folder
    return record


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(task: Task, queue) -> dict:
    """``run_task`` in a pool process; step progress goes to the parent through ``queue`` (at most 4 per second)."""
    last = [0.0]

    def on_step(record):
        now = time.monotonic()
        if now - last[0] > 0.25 or record["step"] == task.train["steps"]:
            last[0] = now
            queue.put((task.key, record["step"], record["loss"], now))

    return run_task(task, on_step=on_step)


# ---------------------------------------------------------------------------------------------------------- a sweep
class _Progress:
    """A tqdm bar over points whose postfix shows the running point's step, loss and ETA."""

    def __init__(self, total: int, name: str, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=name, unit="point", disable=not enabled, dynamic_ncols=True)
        self.starts: dict[str, tuple[float, int]] = {}  # key → (time, step) when the point was first seen
        self.shown = 0.0

    def step(self, task: Task, step: int, loss: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        t0, s0 = self.starts.setdefault(task.key, (now, step - 1))
        done = step - s0
        eta = (now - t0) / done * (task.train["steps"] - step) if done > 0 else float("nan")
        eta_text = "?" if math.isnan(eta) else f"{eta:.0f}s"
        self.bar.set_postfix_str(f"{task.label} seed {task.seed}: step {step}/{task.train['steps']} "
                                 f"loss {loss:.3f} eta {eta_text}", refresh=False)
        if now - self.shown > 0.2:  # redraw at most 5 times a second
            self.shown = now
            self.bar.refresh()

    def done(self, task: Task, record: dict) -> None:
        if record["status"] == "failed":
            self.write(f"failed: {task.study} {task.label} seed {task.seed}: {record['error']}")
        self.bar.update(1)

    def write(self, text: str) -> None:
        if self.bar.disable:
            print(text, file=sys.stderr)
        else:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def run_sweep(study: str | Study, seeds: int | None = None, steps: int | None = None, overrides: dict | None = None,
              jobs: int = 1, shard: str | tuple[int, int] | None = None, out: str | os.PathLike = DEFAULT_OUT,
              retry_failed: bool = False, progress: bool = True, points: list[str] | None = None):
    """Run every (point, seed) of ``study`` not already on disk; returns ``load``'s DataFrame of this slice.

    ``df.attrs["counts"]`` says how many points were cached, trained and failed. Arguments as ``plan``; ``jobs``
    processes; ``shard`` "i/n" runs one slice; ``retry_failed`` recomputes points recorded as failed; ``points``
    (labels) runs only those points (a pilot: the others stay "pending" in the manifest).
    """
    study = get_study(study)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    tasks = plan(study, seeds, steps, overrides, out)
    if points:  # checked before anything is written
        labels = [label for label, _ in study.point_list()]
        unknown = [p for p in points if p not in labels]
        if unknown:
            raise ValueError(f"study {study.name!r} has no point {unknown[0]!r}{did_you_mean(unknown[0], labels)}; "
                             f"points: {', '.join(labels)}")
    write_manifest(study, tasks, out)
    if points:
        tasks = [t for t in tasks if t.label in points]
    if shard is not None:
        tasks = shard_tasks(tasks, *parse_shard(shard if isinstance(shard, str) else "/".join(map(str, shard))))
    counts = {"cached": 0, "trained": 0, "failed": 0}
    todo, seen = [], set()
    bar = _Progress(len(tasks), study.name, progress)
    try:
        for task in tasks:
            record = read_result(result_path(task, out), task.key)
            if task.key in seen:  # a second point with the same config: one run serves both
                counts["cached"] += 1
                bar.bar.update(1)
                continue
            seen.add(task.key)
            if record is not None and not (retry_failed and record["status"] == "failed"):
                counts["cached"] += 1
                bar.bar.update(1)
                shutil.rmtree(Path(task.train["out_dir"]) / task.key, ignore_errors=True)
            else:
                todo.append(task)
        if jobs == 1 or len(todo) <= 1:
            for task in todo:
                record = run_task(task, on_step=lambda r, task=task: bar.step(task, r["step"], r["loss"]))
                counts["failed" if record["status"] == "failed" else "trained"] += 1
                bar.done(task, record)
        else:
            _run_parallel(todo, jobs, bar, counts)
    finally:
        bar.close()
    try:
        (study_dir(study.name, out) / "work").rmdir()  # only when empty: no point in progress
    except OSError:
        pass
    df = load(study.name, out, keys=[t.key for t in tasks])
    df.attrs["counts"] = counts
    return df


def _run_parallel(todo: list[Task], jobs: int, bar: _Progress, counts: dict) -> None:
    import multiprocessing
    import queue as queue_lib
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    jobs = min(jobs, len(todo))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // jobs)
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    by_key = {t.key: t for t in todo}
    with context.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                                           initargs=(threads,)) as pool:
        messages = manager.Queue()
        pending = {pool.submit(_run_in_worker, task, messages): task for task in todo}
        while pending:
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while True:
                try:
                    key, step, loss, now = messages.get_nowait()
                except queue_lib.Empty:
                    break
                bar.step(by_key[key], step, loss, now)
            for future in finished:
                task = pending.pop(future)
                try:
                    record = future.result()
                except Exception as e:  # the worker died (killed, out of memory): not recorded, rerun next time
                    bar.write(f"worker failed on {task.label} seed {task.seed}: {type(e).__name__}: {e}")
                    counts["failed"] += 1
                    continue
                counts["failed" if record["status"] == "failed" else "trained"] += 1
                bar.done(task, record)


# ---------------------------------------------------------------------------------------------------------- results
def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _usage_means(results: dict) -> dict:
    """Mean of each ``USAGE_COLUMNS`` statistic over the memory layers at the last logged usage step."""
    usage = results.get("usage") or []
    layers = list(usage[-1]["layers"].values()) if usage else []
    out = {}
    for stat in USAGE_COLUMNS:
        values = [layer[stat] for layer in layers if stat in layer]
        out[f"usage_{stat}"] = sum(values) / len(values) if values else math.nan
    return out


def record_row(record: dict | None, swept: list[str], task_info: dict | None = None) -> dict:
    """One DataFrame row: point, seed, swept values, metrics, usage means, wall time, status, error, key."""
    if record is None:  # in the manifest but not finished yet
        return {"point": task_info["point"], "seed": task_info["seed"], "status": "pending", "key": task_info["key"]}
    config = {**record["train_config"], **record["model_config"]}
    # two points with equal configs share one file: the manifest knows which point this row is
    row = {"point": (task_info or record)["point"] or record["point"], "seed": record["seed"]}
    row.update({k: _hashable(config.get(k)) for k in swept if k not in ("seed",)})
    results = record.get("results") or {}
    row.update({k: results.get(k, math.nan) for k in RESULT_COLUMNS if k not in row})
    row.update({k: v for k, v in results.items()
                if k.startswith(RESULT_PREFIXES) and isinstance(v, (int, float)) and k not in row})
    if "model" not in swept:
        row["model"] = record["model_config"]["model"]
    row.update(_usage_means(results))
    row.update(wall_seconds=record.get("wall_seconds", math.nan), status=record["status"], error=record.get("error"),
               key=record["key"])
    return row


def load(study: str, out: str | os.PathLike = DEFAULT_OUT, all_results: bool = False, keys: list[str] | None = None):
    """The results of ``study`` on disk as a pandas DataFrame, one row per (point, seed).

    Rows follow the latest invocation's manifest (``status`` "pending" for points not finished yet); ``all_results``
    reads every result file in the folder instead (also those of earlier configs), ``keys`` a chosen few.
    Columns: point, seed, the swept keys, ``RESULT_COLUMNS``, ``usage_*`` means, wall_seconds, status, error, key.
    """
    import pandas as pd

    folder = study_dir(study, out)
    if not folder.is_dir():
        known = sorted(set(STUDIES) | ({p.name for p in Path(out).iterdir() if p.is_dir()}
                                       if Path(out).is_dir() else set()))
        raise FileNotFoundError(f"no results for study {study!r} in {out}{did_you_mean(study, known)}; "
                                f"run: python -m memlab sweep --study {study}")
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    if manifest is not None and not all_results:
        entries = manifest["tasks"]
    else:
        entries = [{"key": p.stem, "point": None, "seed": None} for p in sorted(folder.glob("*.json"))
                   if p.name != "manifest.json"]
    if keys is not None:
        wanted = set(keys)
        entries = [e for e in entries if e["key"] in wanted]
    records = [read_result(folder / f"{e['key']}.json", e["key"]) for e in entries]
    swept = list(manifest["swept"]) if manifest else []
    if not swept or all_results:
        swept = list(dict.fromkeys(swept + [k for r in records if r for k in r.get("values", {})]))
    rows = [record_row(r, swept, e) for r, e in zip(records, entries) if r is not None or manifest is not None]
    df = pd.DataFrame(rows)
    df.insert(0, "study", study)
    return df


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (no scipy): closed forms for df = 1, 2, else bisection
    on the CDF, 1 − ½·I_{df/(df+t²)}(df/2, ½) (regularised incomplete beta, continued fraction)."""
    if not 0 < p < 1 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return front * h / a


def summarize(df, by: str | list[str] | None = None, metrics: list[str] | None = None, confidence: float = 0.95):
    """Mean ± confidence interval over seeds: one row per group of ``by`` (default "point"), for each metric
    ``<m>_mean``, ``<m>_std`` and ``<m>_ci`` (half-width t_{(1+c)/2, n-1} · std / √n; NaN for n = 1), and ``n``.

    Only ``status == "ok"`` rows count. ``metrics`` default: those of ``DEFAULT_METRICS`` the frame has.
    """
    import pandas as pd

    by = ["point"] if by is None else [by] if isinstance(by, str) else list(by)
    metrics = [m for m in DEFAULT_METRICS if m in df.columns] if metrics is None else list(metrics)
    for name in by + metrics:
        if name not in df.columns:
            columns = [str(c) for c in df.columns]
            raise ValueError(f"no column {name!r}{did_you_mean(name, columns)}; columns: {', '.join(columns)}")
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    rows = []
    for group, part in ok.groupby(by, sort=False, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        row = dict(zip(by, group), n=len(part))
        for m in metrics:
            values = pd.to_numeric(part[m], errors="coerce").dropna()
            n = len(values)
            mean = float(values.mean()) if n else math.nan
            std = float(values.std(ddof=1)) if n > 1 else math.nan
            ci = t_quantile((1 + confidence) / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
            row.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_ci": ci})
        rows.append(row)
    return pd.DataFrame(rows)


def export_csv(df, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV atomically (no index); returns the path."""
    return atomic_write_text(path, df.to_csv(index=False))


def export_details(study: str, out: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """Write the ``details`` of every finished run that has them (the knowledge probe's per-attribute scores and
    memory rows) as one JSON, {key: {point, seed, model, scalar results…, details}}; None when no run has any."""
    folder = study_dir(study, out)
    found = {}
    for entry in json.loads((folder / "manifest.json").read_text())["tasks"]:
        record = read_result(folder / f"{entry['key']}.json", entry["key"])
        results = (record or {}).get("results") or {}
        if record is None or record["status"] != "ok" or "details" not in results:
            continue
        scalars = {k: v for k, v in results.items() if isinstance(v, (int, float, str, bool)) and k != "name"}
        found[entry["key"]] = {"point": entry["point"], "seed": entry["seed"], **scalars,
                               "model": record["model_config"]["model"], "details": results["details"]}
    return atomic_write_json(path, found) if found else None


def summary_table(summary, metrics: list[str]) -> str:
    """``summarize``'s frame as text: "mean ± ci" per metric."""
    from .tables import format_table

    def cell(row, m):
        mean, ci = row[f"{m}_mean"], row[f"{m}_ci"]
        if isinstance(mean, float) and math.isnan(mean):
            return "—"
        digits = ".0f" if abs(mean) >= 100 else ".3f"
        return f"{mean:{digits}}" + ("" if isinstance(ci, float) and math.isnan(ci) else f" ± {ci:{digits}}")

    keys = [c for c in summary.columns if c == "n" or not any(c.startswith(f"{m}_") for m in metrics)]
    # to_dict("records"), not iterrows: iterrows upcasts a row's ints to float when it holds floats ("n" → "3.0")
    rows = [{**{k: str(r[k]) for k in keys}, **{m: cell(r, m) for m in metrics}}
            for r in summary.to_dict("records")]
    return format_table(rows, keys + metrics, left_aligned=[k for k in keys if k != "n"])


# ---------------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", action="append", default=[], metavar="NAME",
                        help="a study from --list (repeatable), or 'all' for every available one")
    parser.add_argument("--list", action="store_true", help="list the studies and exit")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per point (default: the study's, 3)")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps of every point")
    parser.add_argument("--jobs", type=int, default=1, help="points trained at once, each in its own process")
    parser.add_argument("--shard", default=None, metavar="I/N", help="run only slice I of N (0-based), e.g. a SLURM "
                        "array task: --shard $SLURM_ARRAY_TASK_ID/4")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base model/train config key of the study (the points' own values win)")
    parser.add_argument("--retry-failed", action="store_true", help="recompute points recorded as failed")
    parser.add_argument("--point", action="append", default=None, metavar="LABEL",
                        help="run only this point of the study (repeatable), e.g. a pilot: --point 'dense, N=250'")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--export", default=None, metavar="DIR",
                        help="also write each study's results as DIR/<study>.csv (make ablations: data/ablations, "
                             "committed so notebooks and readers need no retraining)")


def list_studies() -> str:
    lines = []
    for name, s in STUDIES.items():
        missing = s.missing()
        points = len(s.point_list())
        runs = (f"{points} points × {s.seeds} seeds" if not s.seeds_at else
                f"{points} points, {sum(s.seeds_of(label) for label, _ in s.point_list())} runs")
        steps = s.train.get("steps", "per-point")
        lines.append(f"{name:18s} {runs}, {steps} steps  {s.title}"
                     + (f"  [unavailable: {missing}]" if missing else ""))
    return "\n".join(lines)


def run(args) -> int:
    if args.list:
        print(list_studies())
        return 0
    if not args.study:
        print("error: name a study with --study NAME (or --study all); --list shows them", file=sys.stderr)
        return 2
    try:
        names = [n for item in args.study
                 for n in (study_names(available_only=True, in_all=True) if item == "all" else [item])]
        studies = [get_study(n) for n in names]
        overrides = parse_sets(args.set)
        shard = parse_shard(args.shard) if args.shard else None
        for study in studies:
            start = time.perf_counter()
            df = run_sweep(study, seeds=args.seeds, steps=args.steps, overrides=overrides, jobs=args.jobs,
                           shard=shard, out=args.out, retry_failed=args.retry_failed,
                           progress=not args.no_progress, points=args.point)
            full = load(study.name, args.out)
            export_csv(full, study_dir(study.name, args.out) / "results.csv")
            if args.export:
                export_csv(full, Path(args.export) / f"{study.name}.csv")
                export_details(study.name, args.out, Path(args.export) / f"{study.name}.details.json")
            counts = df.attrs["counts"]
            metrics = [m for m in ("val_ppl", "fact_recall", "kb_rank_acc", "kb_bits", "tokens_per_s")
                       if m in full.columns and full[m].notna().any()]
            print(f"\n{study.name}: {study.title}")
            if (full["status"] == "ok").any():
                print(summary_table(summarize(full, metrics=metrics), metrics))
            print(f"{len(df)} runs{'' if shard is None else f' (shard {shard[0]}/{shard[1]})'}: "
                  f"{counts['cached']} cached, {counts['trained']} trained, {counts['failed']} failed "
                  f"({time.perf_counter() - start:.1f} s) → {study_dir(study.name, args.out)}/results.csv")
            for _, row in full[full["status"] == "failed"].iterrows():
                print(f"  failed: {row['point']} seed {row['seed']}: {row['error']}")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
