"""Checkers for the build exercises of notebooks 06 (a sweep study), 08 (a dashboard control), 09 (bytes of a decode
step) and 10 (a rank's column slice of the value table). See memlab/exercises/__init__.py.
"""
from __future__ import annotations

import io
import math

import torch
from torch import nn

from .verdict import Mismatch, Verdict, compare, run_cases

__all__ = ["check_study", "check_dashboard_control", "check_decode_bytes", "check_column_shard"]


# ------------------------------------------------------------------------------------------------ 06: a sweep study
def check_study(make_study, varies: str | None = None, min_seeds: int = 3) -> Verdict:
    """Notebook 06, build exercise: ``make_study()`` returns a ``memlab.lab.studies.Study`` of your own.

    Checked without training anything: the study resolves through ``memlab.lab.sweep.plan`` (every key is a model or
    train config field, every point's config validates), it has a new name, every point runs at least ``min_seeds``
    seeds, no two points resolve to the same config (they would be one run twice), and the config key ``varies`` (if
    given) takes at least two values across the points, as the question of the study needs.
    """
    from memlab.lab import sweep
    from memlab.lab.studies import STUDIES, Study

    state: dict = {}

    def made():
        study = make_study() if callable(make_study) and not isinstance(make_study, Study) else make_study
        if not isinstance(study, Study):
            raise Mismatch(f"expected a memlab.lab.studies.Study, got {type(study).__name__}")
        state["study"] = study

    def named():
        study = state["study"]
        if study.name in STUDIES:
            raise Mismatch(f"{study.name!r} is the name of one of memlab's own studies; give yours a new name (its "
                           f"results folder runs/sweeps/<name>/ would be shared with that study's)")

    def resolves():
        try:
            tasks = sweep.plan(state["study"])
        except ValueError as e:
            raise Mismatch(f"sweep.plan could not resolve it: {e}") from None
        failed = [t for t in tasks if t.error]
        if failed:
            raise Mismatch(f"point {failed[0].label!r} would fail without training: {failed[0].error}")
        state["tasks"] = tasks

    def seeds():
        study = state["study"]
        few = [(label, study.seeds_of(label)) for label, _ in study.point_list() if study.seeds_of(label) < min_seeds]
        if few:
            raise Mismatch(f"point {few[0][0]!r} runs {few[0][1]} seed(s); a verdict needs a confidence interval "
                           f"over seeds: use seeds={min_seeds} or more")

    def distinct():
        seen: dict = {}
        for task in state["tasks"]:
            other = seen.setdefault(task.key, task)
            if other is not task:
                raise Mismatch(f"points {other.label!r} (seed {other.seed}) and {task.label!r} (seed {task.seed}) "
                               f"resolve to the same config (key {task.key}): they would be one run trained twice. "
                               f"Make the points differ in the key you vary")
        points = {t.label for t in state["tasks"]}
        if len(points) < 2:
            raise Mismatch(f"the study has {len(points)} point; a study compares at least two")

    def varied():
        if varies is None:
            return
        study, tasks = state["study"], state["tasks"]
        if varies not in study.swept_keys():
            raise Mismatch(f"the points never set {varies!r}; they vary {study.swept_keys() or 'nothing'}. Put "
                           f"{varies!r} in the grid (or in each named point)")
        values = {str(t.model.get(varies, t.train.get(varies))) for t in tasks}
        if len(values) < 2:
            raise Mismatch(f"{varies!r} takes the single value {values.pop()} in every point: give it two or more")

    cases = [("make_study() returns a Study", made), ("a name of its own", named),
             ("sweep.plan resolves every point", resolves), (f"at least {min_seeds} seeds per point", seeds),
             ("points with distinct configs", distinct),
             (f"the points vary {varies!r}" if varies else "the points vary something", varied)]
    verdict = run_cases("a sweep study", cases,
                        hint="a Study is (name, title, model=…, train=…, grid={key: [values]} or points=((label, "
                             "{key: value}), …), seeds=…); start from MF_MODEL or PK_MODEL and STUDIES[...].train")
    if verdict.passed:
        study, tasks = state["study"], state["tasks"]
        steps = {t.train["steps"] for t in tasks}
        verdict.message = (f"{study.name!r} resolves into {len({t.label for t in tasks})} points × seeds = "
                           f"{len(tasks)} runs of {', '.join(map(str, sorted(steps)))} steps, nothing trained")
    return verdict


# ------------------------------------------------------------------------------------------------ 08: a dashboard control
class _Figure:
    """Stands in for a matplotlib figure: ``savefig`` writes bytes naming the arguments, so each image is distinct."""

    def __init__(self, text: str):
        self.text = text

    def savefig(self, buffer: io.BytesIO, **_):
        buffer.write(self.text.encode())


def check_dashboard_control(add_control) -> Verdict:
    """Notebook 08, build exercise: ``add_control(view, name, options, fixed) -> (control, image)``.

    ``view`` is an explorer function that returns a ``View`` (``memlab.lab.explorer``); the student builds an
    ``ipywidgets.Dropdown`` (description ``name``, the given ``options``, starting at ``options[0]``) and an
    ``ipywidgets.Image`` that shows ``view(**fixed, name=value).png()`` at once and again after every change of the
    control — wired with ``control.observe(callback, names="value")``, as ``memlab.lab.explorer.Dashboard`` does for
    each of its controls. The checker drives it the way a click would (``control.value = …``) with a recording view.
    """
    import ipywidgets as widgets

    from memlab.lab.explorer import View

    def case(name, options, fixed, new_values):
        def thunk():
            calls = []

            def view(**kwargs):
                calls.append(dict(kwargs))
                text = ", ".join(f"{k}={kwargs[k]!r}" for k in sorted(kwargs))
                return View(f"view({text})", _Figure(text), stats=dict(kwargs))

            made = add_control(view, name, list(options), dict(fixed))
            if not (isinstance(made, tuple) and len(made) == 2):
                raise Mismatch(f"add_control should return (control, image), got {type(made).__name__}")
            control, image = made
            if not isinstance(control, widgets.Dropdown):
                raise Mismatch(f"the control is a {type(control).__name__}, expected an ipywidgets.Dropdown")
            if control.description != name:
                raise Mismatch(f"the control's description is {control.description!r}, expected {name!r} (the "
                               f"argument it sets)")
            if list(control.options) != list(options) and [v for _, v in control.options] != list(options):
                raise Mismatch(f"the control's options are {list(control.options)}, expected {list(options)}")
            if control.value != options[0]:
                raise Mismatch(f"the control starts at {control.value!r}, expected the first option {options[0]!r}")
            if not isinstance(image, widgets.Image):
                raise Mismatch(f"the output is a {type(image).__name__}, expected an ipywidgets.Image")
            expected = {**fixed, name: options[0]}
            if not calls:
                raise Mismatch("the view was not drawn when the control was made: call it once before returning, "
                               "so the image is not empty")
            if calls[-1] != expected:
                raise Mismatch(f"the first drawing called view({calls[-1]}), expected view({expected})")
            if bytes(image.value) != View("", _Figure(_text(expected))).png():
                raise Mismatch("the image does not show the first View's png(): set image.value = view(...).png()")
            for value in new_values:
                before = len(calls)
                control.value = value  # what a click does
                expected = {**fixed, name: value}
                if len(calls) == before:
                    raise Mismatch(f"setting the control to {value!r} did not call the view: wire it with "
                                   f"control.observe(callback, names='value')")
                if calls[-1] != expected:
                    raise Mismatch(f"after setting the control to {value!r} the view was called with {calls[-1]}, "
                                   f"expected {expected} (the new value is change['new'], and the fixed arguments "
                                   f"go in every call)")
                if len(calls) - before > 1:
                    raise Mismatch(f"one change of the control called the view {len(calls) - before} times; once "
                                   f"is enough (observe only names='value')")
                if bytes(image.value) != View("", _Figure(_text(expected))).png():
                    raise Mismatch(f"after setting the control to {value!r} the image still shows an older View")
        return (f"{name} over {list(options)}, fixed {fixed}", thunk)

    cases = [case("inputs", ["isotropic", "correlated"], {"tau": 8}, ["correlated", "isotropic"]),
             case("tau", [4, 6, 8, 10], {"n_tokens": 256, "layernorm": False}, [10, 6]),
             case("head", [0, 1, 2], {}, [2, 0, 1])]
    return run_cases("a dashboard control", cases,
                     hint="make the Dropdown and the Image, define `def redraw(change=None): image.value = "
                          "view(**fixed, **{name: control.value}).png()`, call redraw() once, then "
                          "control.observe(redraw, names='value')")


def _text(kwargs: dict) -> str:
    return ", ".join(f"{k}={kwargs[k]!r}" for k in sorted(kwargs))


# ------------------------------------------------------------------------------------------------ 09: decode bytes
def check_decode_bytes(decode_bytes) -> Verdict:
    """Notebook 09, build exercise: ``decode_bytes(layer, batch, bytes_per_value) -> float``, the bytes one decode
    step at ``batch`` tokens reads and writes (the roofline's numerator), for ``nn.Linear``, a dense FFN
    (``nn.Sequential`` of Linear, activation, Linear), ``memlab.HashMemory`` and ``memlab.ProductKeyMemory``.

    Reference: ``sum(memlab.lab.roofline.step_bytes(layer, batch, bytes_per_value).values())`` — weights read whole,
    the *distinct* rows the batch hashes to or picks (items·(1 − (1 − draws/items)^B) with uniform addresses), and the
    activations read and written.
    """
    from memlab import HashMemory, ProductKeyMemory
    from memlab.lab import roofline

    torch.manual_seed(0)
    ffn = nn.Sequential(nn.Linear(12, 48, bias=False), nn.GELU(), nn.Linear(48, 12, bias=False))
    layers = {
        "nn.Linear(7, 5)": nn.Linear(7, 5, bias=False),
        "dense FFN 12 → 48 → 12": ffn,
        "HashMemory(32 → 6, τ=4)": HashMemory(32, 6, tau=4),
        "HashMemory(24 → 10, τ=8)": HashMemory(24, 10, tau=8),
        "ProductKeyMemory(d=16, n=8, 2 heads × top-3)": ProductKeyMemory(16, n_keys=8, heads=2, topk=3),
    }
    hints = {
        "nn.Linear": "a Linear layer reads all in·out weights once, whatever the batch, plus B·(in + out) activations",
        "dense FFN": "add up the Linear layers of the Sequential (the activation has no weights)",
        "HashMemory": "each of the K tables is hit at its distinct rows: 2^τ·(1 − (1 − 2^-τ)^B) rows of d_out, not "
                      "B rows (two tokens can hash to the same row)",
        "ProductKeyMemory": "W_q (d × heads·k_dim) and all heads·n half-keys of k_dim are read whole; the values read "
                            "are n²·(1 − (1 − heads·topk/n²)^B) distinct rows of v_dim",
    }

    def case(name, batch, e):
        layer = layers[name]

        def thunk():
            expected = float(sum(roofline.step_bytes(layer, batch, e).values()))
            got = decode_bytes(layer, batch, e)
            try:
                got = float(got)
            except (TypeError, ValueError):
                raise Mismatch(f"expected a number of bytes, got {type(got).__name__}") from None
            if not math.isfinite(got) or abs(got - expected) > 1e-6 * max(1.0, abs(expected)):
                kind = next(k for k in hints if name.startswith(k))
                raise Mismatch(f"{name} at batch {batch}, {e} bytes per value: got {got:,.1f} bytes, expected "
                               f"{expected:,.1f} ({_parts(roofline.step_bytes(layer, batch, e))}). Look at the "
                               f"{kind}: {hints[kind]}")
        return (f"{name}, B = {batch}, {e} B/value", thunk)

    cases = [case("nn.Linear(7, 5)", 3, 4), case("dense FFN 12 → 48 → 12", 1, 2),
             case("HashMemory(32 → 6, τ=4)", 1, 4), case("HashMemory(32 → 6, τ=4)", 5, 4),
             case("HashMemory(24 → 10, τ=8)", 1000, 2),
             case("ProductKeyMemory(d=16, n=8, 2 heads × top-3)", 1, 4),
             case("ProductKeyMemory(d=16, n=8, 2 heads × top-3)", 20, 2)]
    return run_cases("bytes of a decode step", cases,
                     hint="count every byte once: weights read whole, distinct rows read, activations in and out")


def _parts(parts: dict) -> str:
    return " + ".join(f"{k} {v:,.1f}" for k, v in parts.items())


# ------------------------------------------------------------------------------------------------ 10: column shards
def check_column_shard(column_shard) -> Verdict:
    """Notebook 10, build exercise: ``column_shard(table, rank, world) -> tensor``, the columns of the value table
    that rank ``rank`` of ``world`` holds under memory parallelism (Memory Layers at Scale §3, "parallel memory"):
    every row, d/P columns, the first d mod P ranks one column more — ``torch.tensor_split``'s cut, and
    ``memlab.reading.sharded_bag.column_range``. A world larger than d leaves a rank with no column: raise ValueError.
    """
    from memlab.reading.sharded_bag import column_range

    def case(rows, dim, world):
        def thunk():
            table = torch.arange(rows * dim, dtype=torch.float32).view(rows, dim)
            if world > dim:
                try:
                    column_shard(table, 0, world)
                except ValueError:
                    return
                raise Mismatch(f"{dim} columns over {world} ranks leave a rank with no column: raise ValueError "
                               f"(memlab refuses such a split)")
            pieces = []
            for rank in range(world):
                start, stop = column_range(dim, world, rank)
                got = column_shard(table, rank, world)
                if isinstance(got, torch.Tensor) and got.shape == (rows, dim) and world > 1:
                    raise Mismatch(f"rank {rank} of {world} got the whole table; it holds only its own columns")
                if isinstance(got, torch.Tensor) and got.dim() == 2 and got.shape[0] != rows:
                    raise Mismatch(f"rank {rank} of {world} got {got.shape[0]} rows; memory parallelism shards "
                                   f"columns, so every rank keeps all {rows} rows")
                compare(f"rank {rank} of {world}'s slice of a {rows} × {dim} table", got, table[:, start:stop],
                        atol=0, rtol=0)
                pieces.append(got)
            if not torch.equal(torch.cat(pieces, dim=1), table):
                raise Mismatch("the slices of all ranks, side by side, do not give back the table")
        return (f"{rows} × {dim} over {world} rank(s)", thunk)

    cases = [case(6, 4, 2), case(5, 7, 2), case(3, 5, 3), case(4, 10, 4), case(2, 3, 3), case(3, 6, 1),
             case(2, 2, 3)]
    return run_cases("a rank's column slice", cases,
                     hint="sizes are d // P, and the first d % P ranks get one more column (7 over 2 ranks: 4 + 3); "
                          "torch.tensor_split(table, world, dim=1)[rank] cuts exactly so")
