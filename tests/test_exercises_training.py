"""Notebook 05's build exercise: ``memlab.exercises.check_train_step`` on the hidden answer, on wrong steps, on the stub."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from notebook_answers import load_answer  # noqa: E402

from memlab.exercises import check_train_step  # noqa: E402
from memlab.exercises.training import reference_train_step  # noqa: E402

NOTEBOOK = "05_tiny_model_training"


def test_hidden_answer_passes():
    fn = load_answer(NOTEBOOK, "Exercise 1 (build)", "my_train_step")
    verdict = check_train_step(fn).assert_passed()
    assert len(verdict.cases) == 3


def _flat(logits):
    return logits.reshape(-1, logits.size(-1))


def without_clipping(model, optimizer, x, y):  # clipping is optional: also right
    _, loss = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss  # a 0-d tensor is accepted as the loss


def test_step_without_clipping_and_a_tensor_loss_pass():
    check_train_step(without_clipping).assert_passed()


def test_reference_is_the_answer():
    check_train_step(reference_train_step).assert_passed()


def no_zero_grad(model, optimizer, x, y):
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return loss.item()


def no_step(model, optimizer, x, y):
    _, loss = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    return loss.item()


def zero_grad_between(model, optimizer, x, y):
    _, loss = model(x, y)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss.item()


def not_flattened(model, optimizer, x, y):
    logits, _ = model(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def summed(model, optimizer, x, y):
    logits, _ = model(x)
    loss = F.cross_entropy(_flat(logits), y.reshape(-1), reduction="sum")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def shifted_twice(model, optimizer, x, y):
    logits, _ = model(x)
    loss = F.cross_entropy(_flat(logits[:, :-1]), y[:, 1:].reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def returns_nothing(model, optimizer, x, y):
    _, loss = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def two_steps(model, optimizer, x, y):
    for _ in range(2):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


@pytest.mark.parametrize("fn, expected", [
    (no_zero_grad, "Call optimizer.zero_grad() before loss.backward()"),
    (no_step, "parameters are unchanged: call optimizer.step()"),
    (zero_grad_between, "parameters are unchanged"),
    (not_flattened, "flatten both"),
    (summed, "that is the sum over tokens"),
    (shifted_twice, "shifted a second time"),
    (returns_nothing, "returned None"),
    (two_steps, "the loss is"),
])
def test_wrong_steps_fail_with_a_specific_message(fn, expected):
    verdict = check_train_step(fn)
    assert not verdict.passed
    assert expected in verdict.message, verdict.message
    assert "Hint:" in verdict.message


def test_stub_is_not_written_yet():
    def my_train_step(model, optimizer, batch_x, batch_y) -> float:
        raise NotImplementedError

    verdict = check_train_step(my_train_step)
    assert not verdict.passed and "not written yet" in verdict.message


def test_checker_leaves_global_state_alone():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    check_train_step(without_clipping)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), state)
