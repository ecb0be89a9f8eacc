"""Exercise checkers of notebook 05 (training tiny language models): one training step, written by the student.

``check_train_step(my_train_step)`` builds tiny models (seeded) twice, runs the student's step on one copy and
memlab's reference step on an identical copy with the same optimizer settings and the same batches, and compares the
returned loss and every parameter after the update. Wrong answers it recognises and names: the optimizer step
forgotten (parameters unchanged), ``zero_grad`` forgotten (gradients accumulate over two calls), a summed instead of
averaged loss, targets shifted a second time, and logits not flattened for ``F.cross_entropy``.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from .verdict import Mismatch, Verdict, run_cases

__all__ = ["check_train_step", "reference_train_step"]

CLIP = 1.0  # the gradient-norm clip memlab's trainer uses (TrainConfig.clip); clipping is optional in the exercise


def reference_train_step(model, optimizer, batch_x: torch.Tensor, batch_y: torch.Tensor, clip: float | None = CLIP,
                         zero_grad: bool = True) -> float:
    """One optimisation step, as ``memlab.lab.train.train_step`` takes it (without its LR schedule, the values' own
    clipping and the bookkeeping): forward, mean cross-entropy over every position, zero_grad, backward, clip the
    global gradient norm, step.

    ``clip=None`` skips clipping; ``zero_grad=False`` is the classic bug (used by the checker to name it)."""
    model.train()
    logits, _ = model(batch_x)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), batch_y.reshape(-1))
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
    optimizer.step()
    return loss.item()


def _optimizer(model, lr: float = 3e-3):
    """AdamW with groups like ``memlab.lab.train.make_optimizer``'s, simplified: decayed matrices, undecayed vectors,
    and the memory (MemoryFormer tables and product-key values in one group) at 3× LR without decay."""
    mem = model.memory_parameters()
    special = {id(p) for ps in mem.values() for p in ps}
    rest = [p for p in model.parameters() if id(p) not in special]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
              {"params": mem["tables"] + mem["values"], "lr": 3 * lr, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.95))


def _tiny_model(kind: str, seed: int):
    from ..lab.models import build_model

    sizes = dict(d_model=16, n_layers=2, n_heads=2, seq_len=8, tau=4, expand_bits=1, pkm_n_keys=4, pkm_heads=2,
                 pkm_topk=2)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(kind, **sizes)


def _batches(n: int, batch: int, length: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        window = torch.randint(0, 256, (batch, length + 1), generator=g)
        out.append((window[:, :-1], window[:, 1:]))
    return out


def _as_float(loss, call: int) -> float:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise Mismatch(f"call {call} returned a tensor of shape {tuple(loss.shape)}; return the mean loss as one "
                           "float (loss.item())")
        return float(loss.detach())
    if not isinstance(loss, (float, int)):
        raise Mismatch(f"call {call} returned {type(loss).__name__}; return the loss as a float (loss.item())")
    return float(loss)


def _run_student(fn, model, optimizer, x, y, call: int) -> float:
    try:
        loss = fn(model, optimizer, x, y)
    except (RuntimeError, ValueError) as e:
        text = str(e)
        if any(s in text for s in ("target size", "batch_size", "Expected input batch", "only batches of spatial")):
            raise Mismatch(f"F.cross_entropy rejected the shapes ({text.splitlines()[0][:120]}). It wants logits of "
                           "shape (N, vocab) and targets of shape (N,): flatten both, "
                           "logits.reshape(-1, logits.size(-1)) and batch_y.reshape(-1)") from None
        raise
    if loss is None:
        raise Mismatch(f"call {call} returned None; return the loss as a float (loss.item())")
    return _as_float(loss, call)


def _same(a, b, atol: float = 1e-6, rtol: float = 1e-5) -> bool:
    return all(torch.allclose(p.detach(), q.detach(), atol=atol, rtol=rtol)
               for p, q in zip(a.parameters(), b.parameters()))


def _diagnose_loss(got: float, expected: list[float], x: torch.Tensor, model_before, y: torch.Tensor) -> None:
    """Nothing if ``got`` equals one of the ``expected`` losses, else a Mismatch naming the likely bug."""
    if any(math.isclose(got, e, rel_tol=1e-5, abs_tol=1e-6) for e in expected):
        return
    ref = expected[0]
    if math.isclose(got, ref * y.numel(), rel_tol=1e-4):
        raise Mismatch(f"the loss is {got:.4g}, {y.numel()}× the reference {ref:.4g}: that is the sum over "
                       "tokens; use the mean (F.cross_entropy's default reduction='mean')")
    with torch.no_grad():
        logits, _ = model_before(x)
        shifted = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), y[:, 1:].reshape(-1)).item()
    if x.shape[1] > 1 and math.isclose(got, shifted, rel_tol=1e-4):
        raise Mismatch(f"the loss is {got:.4f} where the reference is {ref:.4f}: it matches targets shifted a "
                       "second time. batch_y is already batch_x shifted by one byte (batch_y[:, t] follows "
                       "batch_x[:, t]): compare logits[:, t] with batch_y[:, t] at every t")
    raise Mismatch(f"the loss is {got:.6f}, the reference {ref:.6f} (mean cross-entropy of the logits against "
                   "batch_y over all batch × time positions, before the update)")


def _diagnose_params(student, start, before, references: dict, pairs, call: int) -> list[str]:
    """The names of the references (clip, no clip) the student's parameters match, or a Mismatch naming the likely
    bug. ``start``: the model before the first call; ``before``: before this call; ``pairs``: the batches so far."""
    matching = [name for name, ref in references.items() if _same(student, ref)]
    if matching:
        return matching
    if _same(student, before):
        raise Mismatch(f"after call {call} the parameters are unchanged: call optimizer.step() after loss.backward() "
                       "(and zero_grad before backward, not between backward and step)")
    if call > 1:
        for clip in (CLIP, None):  # the same steps without zero_grad: the gradients of every call summed
            leaky = copy.deepcopy(start)
            opt = _optimizer(leaky)
            for i, (x, y) in enumerate(pairs):
                reference_train_step(leaky, opt, x, y, clip=clip, zero_grad=(i == 0))
            if _same(student, leaky):
                raise Mismatch("the first step matched but the second did not: the gradients of the two calls were "
                               "added up. Call optimizer.zero_grad() before loss.backward() in every step")
    name, ref = next(iter(references.items()))
    for (pname, p), q in zip(student.named_parameters(), ref.parameters()):
        if not torch.allclose(p.detach(), q.detach(), atol=1e-6, rtol=1e-5):
            err = (p.detach() - q.detach()).abs().max().item()
            raise Mismatch(f"after call {call} parameter {pname!r} differs from the reference step by up to {err:.3g} "
                           "(use the optimizer you are given, one optimizer.step() per call, and clip the gradient "
                           f"norm to {CLIP} or not at all)")
    raise Mismatch(f"after call {call} the parameters differ from the reference step")  # pragma: no cover


def _case(fn, kind: str, batch: int, length: int, seed: int):
    """Two calls on one model (two batches), against reference steps with and without clipping."""
    def thunk():
        start = _tiny_model(kind, seed)
        student = copy.deepcopy(start)
        refs = {"clip": copy.deepcopy(start), "no clip": copy.deepcopy(start)}
        opt_s = _optimizer(student)
        opt_r = {name: _optimizer(model) for name, model in refs.items()}
        pairs = _batches(2, batch, length, seed + 100)
        with torch.random.fork_rng():
            for call, (x, y) in enumerate(pairs, start=1):
                before = copy.deepcopy(student)
                got = _run_student(fn, student, opt_s, x.clone(), y.clone(), call)
                expected = {name: reference_train_step(refs[name], opt_r[name], x, y,
                                                        clip=CLIP if name == "clip" else None) for name in refs}
                _diagnose_loss(got, list(expected.values()), x, before, y)
                alive = _diagnose_params(student, start, before, refs, pairs[:call], call)
                refs = {name: refs[name] for name in alive}  # clipping or not: the student's choice, kept after
    return thunk


def check_train_step(fn) -> Verdict:
    """Check ``fn(model, optimizer, batch_x, batch_y) -> float``: one optimisation step of a language model.

    The student writes: logits = model(batch_x)[0] of shape (B, T, vocab); the mean cross-entropy against batch_y
    (B, T) over all B·T positions (logits flattened to (B·T, vocab)); ``optimizer.zero_grad()``; ``loss.backward()``;
    optionally ``torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)``; ``optimizer.step()``; return
    ``loss.item()``. This is the step of ``memlab.lab.train.train_step`` without its LR schedule (the MemoryFormer
    paper trains with AdamW, memory tables at 3× the base LR — its Table 4 — and gradient clipping 1.0).

    Cases: two consecutive calls on tiny seeded models (MemoryFormer, Memory+, dense), including a batch shorter than
    the context and a batch of one row, compared with ``reference_train_step`` on identical copies (loss to 1e-5,
    parameters to 1e-6 absolute + 1e-5 relative). A second call catches gradients that accumulate."""
    cases = [
        ("a MemoryFormer (tables at 3× LR), batch 4 × 8, two calls", _case(fn, "memoryformer", 4, 8, 0)),
        ("a Memory+ (shared values), batch 3 × 5 (shorter than the context), two calls",
         _case(fn, "memoryplus", 3, 5, 1)),
        ("a dense model, batch 1 × 7, two calls", _case(fn, "dense", 1, 7, 2)),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors of a few hundred floats: more threads only wait on each other (10× slower)
    try:
        return run_cases("a training step", cases,
                         hint="logits, _ = model(batch_x); loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), "
                              "batch_y.reshape(-1)); optimizer.zero_grad(); loss.backward(); optimizer.step(); "
                              "return loss.item()")
    finally:
        torch.set_num_threads(threads)
