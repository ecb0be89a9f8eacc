"""The build exercises of notebooks 06, 08, 09 and 10: each hidden answer passes its checker, a plausible wrong answer
fails with a message that says what is wrong, and the notebook's stub reads "not written yet"."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from notebook_answers import load_answer  # noqa: E402

from memlab.exercises import (check_column_shard, check_dashboard_control, check_decode_bytes,  # noqa: E402
                              check_study)


def stub(*args):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------------ 06: a sweep study
def _study(name="my-study", **kwargs):
    from memlab.lab.studies import PK_MODEL, STUDIES, Study

    args = dict(model=PK_MODEL, train={**STUDIES["pkm-topk"].train, "steps": 100}, grid={"pkm_topk": [4, 32]},
                seeds=3)
    args.update(kwargs)
    return lambda: Study(name, "a study", **args)


def test_study_answer_passes():
    make_study = load_answer("06_ablations", "Exercise 3 (build)", "make_study")
    verdict = check_study(make_study, varies="pkm_topk").assert_passed()
    assert "12 runs" in verdict.message and "nothing trained" in verdict.message


def test_study_of_notebook_06_passes():
    from memlab.lab.studies import MF_MODEL, STUDIES, Study

    study = Study("my-tau-lr", "t", model=MF_MODEL, train={**STUDIES["mf-lr"].train, "steps": 150},
                  grid={"tau": [4, 8], "table_lr_mult": [1.0, 3.0]}, seeds=3)
    check_study(study, varies="table_lr_mult").assert_passed()  # a Study itself is accepted too


@pytest.mark.parametrize("make, message", [
    (_study(seeds=1), "runs 1 seed(s)"),
    (_study(grid={"pkm_topk": [4, 64]}), "pkm_topk=64 exceeds pkm_n_keys=32"),
    (_study(grid={"pkm_top_k": [4, 32]}), "did you mean 'pkm_topk'"),
    (_study(grid={"pkm_heads": [1, 4]}), "the points never set 'pkm_topk'"),
    (_study(grid=None, points=(("a", {"pkm_topk": 8}), ("b", {"pkm_heads": 4}))), "resolve to the same config"),
    (_study(grid=None, points=(("a", {"pkm_topk": 8}), ("b", {"pkm_topk": 8}))), "resolve to the same config"),
    (_study(grid={"pkm_topk": [8]}), "a study compares at least two"),
    (_study(name="pkm-topk"), "one of memlab's own studies"),
    (lambda: {"pkm_topk": [4, 32]}, "expected a memlab.lab.studies.Study, got dict"),
])
def test_study_wrong_designs_fail_with_a_reason(make, message):
    verdict = check_study(make, varies="pkm_topk")
    assert not verdict.passed and message in verdict.message, verdict.message


def test_study_stub_is_not_written_yet():
    assert "not written yet" in check_study(stub, varies="pkm_topk").message


# ------------------------------------------------------------------------------------------------ 08: a control
def _control(callback_value="new", fixed=True, draw_first=True, names="value", widget="Dropdown"):
    import ipywidgets as widgets

    def add_control(view, name, options, fixed_args):
        control = getattr(widgets, widget)(options=list(options), value=options[0], description=name)
        image = widgets.Image(format="png")

        def redraw(change=None):
            value = control.value if change is None else change[callback_value]
            image.value = view(**(fixed_args if fixed else {}), **{name: value}).png()

        if draw_first:
            redraw()
        control.observe(redraw, names=names)
        return control, image
    return add_control


def test_dashboard_control_answer_passes():
    add_control = load_answer("08_bucket_and_key_explorer", "Exercise 5 (build)", "add_control")
    check_dashboard_control(add_control).assert_passed()


def test_dashboard_control_answer_works_on_a_real_explorer():
    from memlab.lab import explorer as ex

    add_control = load_answer("08_bucket_and_key_explorer", "Exercise 5 (build)", "add_control")
    control, image = add_control(ex.lsh_playground, "inputs", ["isotropic", "correlated"], dict(tau=8, n_tokens=256))
    first = bytes(image.value)
    control.value = "correlated"
    assert first.startswith(b"\x89PNG") and bytes(image.value) != first


@pytest.mark.parametrize("add_control, message", [
    (_control(callback_value="old"), "the view was called with {'tau': 8, 'inputs': 'isotropic'}"),
    (_control(fixed=False), "the first drawing called view({'inputs': 'isotropic'})"),
    (_control(draw_first=False), "the view was not drawn when the control was made"),
    (_control(names="options"), "did not call the view"),
    (_control(widget="SelectionSlider"), "expected an ipywidgets.Dropdown"),
    (_control(names=None), "one change of the control called the view"),  # every trait: value, index, label fire
])
def test_dashboard_control_wrong_wiring_fails_with_a_reason(add_control, message):
    verdict = check_dashboard_control(add_control)
    assert not verdict.passed and message in verdict.message, verdict.message


def test_dashboard_control_stub_is_not_written_yet():
    assert "not written yet" in check_dashboard_control(stub).message


# ------------------------------------------------------------------------------------------------ 09: decode bytes
def _answer_09():
    return load_answer("09_decode_roofline", "Exercise 3 (build)", "decode_bytes")


def test_decode_bytes_answer_passes():
    check_decode_bytes(_answer_09()).assert_passed()


def test_decode_bytes_without_repeated_rows_fails():
    right = _answer_09()

    def every_token_new_rows(layer, batch, e):  # B·K rows: forgets that tokens hash to the same rows
        import memlab

        if isinstance(layer, memlab.HashMemory):
            return (layer.num_tables * batch * layer.out_features + batch * (layer.in_features
                                                                               + layer.out_features)) * e
        return right(layer, batch, e)

    verdict = check_decode_bytes(every_token_new_rows)
    assert not verdict.passed and "HashMemory(32 → 6, τ=4) at batch 5" in verdict.message
    assert "distinct rows" in verdict.message, verdict.message


def test_decode_bytes_without_activations_fails():
    right = _answer_09()

    def weights_only(layer, batch, e):
        if isinstance(layer, torch.nn.Linear):
            return layer.in_features * layer.out_features * e
        return right(layer, batch, e)

    verdict = check_decode_bytes(weights_only)
    assert not verdict.passed and "nn.Linear(7, 5) at batch 3" in verdict.message and "activations" in verdict.message


def test_decode_bytes_stub_is_not_written_yet():
    assert "not written yet" in check_decode_bytes(stub).message


# ------------------------------------------------------------------------------------------------ 10: column shards
def test_column_shard_answer_passes():
    check_column_shard(load_answer("10_memory_parallelism", "Exercise 5 (build)", "column_shard")).assert_passed()


@pytest.mark.parametrize("column_shard, message", [
    (lambda t, r, w: t[:, r * (t.shape[1] // w):(r + 1) * (t.shape[1] // w)], "has shape (5, 3), expected (5, 4)"),
    (lambda t, r, w: torch.tensor_split(t, w, dim=0)[r], "every rank keeps all 6 rows"),
    (lambda t, r, w: torch.tensor_split(t, w, dim=1)[r], "raise ValueError"),  # empty slices instead of an error
    (lambda t, r, w: t, "got the whole table"),
])
def test_column_shard_wrong_slices_fail_with_a_reason(column_shard, message):
    verdict = check_column_shard(column_shard)
    assert not verdict.passed and message in verdict.message, verdict.message


def test_column_shard_stub_is_not_written_yet():
    assert "not written yet" in check_column_shard(stub).message
