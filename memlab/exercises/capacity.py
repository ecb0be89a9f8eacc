"""Exercise checkers for notebook 07 (factual capacity)."""
from __future__ import annotations

import math

import torch

from ..lab import knowledge
from .verdict import Mismatch, Verdict, compare, run_cases

__all__ = ["check_bits_stored"]


def check_bits_stored(fn) -> Verdict:
    """Notebook 07, build exercise: ``fn(log_probs, target) -> bits`` per fact.

    ``log_probs`` (n, V) are the model's scores for the V candidate values of n facts (any log-probabilities, not
    necessarily normalised over the candidates), ``target`` (n,) the true value's index. The bits a model stores about
    one fact are log2 V + log2 q(v*), with q the softmax of ``log_probs`` over the V candidates — V bits' worth of
    uncertainty removed, minus what is left (``memlab.lab.knowledge.bits_stored``)."""
    gen = torch.Generator().manual_seed(7)

    def case(log_probs, target):
        def run():
            got = fn(log_probs.clone(), target.clone())
            compare("bits", got, knowledge.bits_stored(log_probs, target), atol=1e-6, rtol=1e-6)
        return run

    n, v = 5, 16
    uniform = torch.zeros(n, v)
    target = torch.randint(0, v, (n,), generator=gen)
    sure = torch.full((n, v), -30.0).scatter(1, target[:, None], 0.0)
    unnormalised = torch.randn(n, v, generator=gen) * 3 + math.log(0.01)  # log-probs of a larger vocabulary
    odd = torch.randn(3, 7, generator=gen)

    def wrong_way_round():
        bad = torch.full((n, v), -30.0).scatter(1, ((target + 1) % v)[:, None], 0.0)
        got = fn(bad, target)
        compare("bits", got, knowledge.bits_stored(bad, target), atol=1e-4, rtol=1e-6)
        if not (torch.as_tensor(got) < 0).all():
            raise Mismatch("a confident wrong answer must store negative bits")

    return run_cases("bits stored per fact", [
        ("a uniform guess over 16 values (0 bits)", case(uniform, target)),
        ("a model sure of every answer (4 bits each)", case(sure, target)),
        ("log-probabilities not normalised over the candidates", case(unnormalised, target)),
        ("3 facts with 7 candidates", case(odd, torch.tensor([0, 6, 3]))),
        ("a model sure of the wrong answer (negative bits)", wrong_way_round),
    ], hint="renormalise over the candidates with log_softmax, then log2 V + log q(v*) / ln 2")
