"""Notebook 07's build exercise: its hidden answer passes the checker, typical mistakes fail it with a reason."""
import math

import torch
from notebook_answers import load_answer

from memlab.exercises import check_bits_stored


def test_the_hidden_answer_passes():
    fn = load_answer("07_factual_capacity", "Exercise 5 (build)", "my_bits_stored")
    check_bits_stored(fn).assert_passed()


def test_forgetting_to_renormalise_fails_on_the_uniform_guess():
    def no_renorm(log_probs, target):
        return math.log2(log_probs.shape[1]) + log_probs.double().gather(1, target[:, None]).squeeze(1) / math.log(2)

    verdict = check_bits_stored(no_renorm)
    assert not verdict and "uniform guess" in verdict.message and "log_softmax" in verdict.message


def test_natural_log_instead_of_log2_fails():
    def nats(log_probs, target):
        q = torch.log_softmax(log_probs.double(), 1).gather(1, target[:, None]).squeeze(1)
        return math.log(log_probs.shape[1]) + q

    assert "sure of every answer" in check_bits_stored(nats).message


def test_the_stub_is_not_written_yet():
    def my_bits_stored(log_probs, target):
        raise NotImplementedError

    assert "not written yet" in check_bits_stored(my_bits_stored).message
