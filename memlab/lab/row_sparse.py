"""Row-sparse training of memory tables: a gradient holding only the rows read, and an Adam step that touches only them.

A product-key memory reads H·k of its N = n² value rows per token (Memory Layers at Scale: 4 heads · top-32 of ~1M rows). With a
dense gradient every step still zero-fills and writes an N × d gradient, and dense AdamW then reads and writes the whole
table and both moments — about 4·N·d·e bytes written per step, however few rows were read. Here:

* ``SharedValues(..., sparse_grad=True)`` makes the layers read with ``embedding_bag(..., sparse=True)``: ``weight.grad``
  is a sparse COO tensor with one row per read (uncoalesced; several layers reading one pool concatenate their rows);
* ``HashMemory(..., sparse_grad=True)`` (and ``MemoryBlock(..., sparse_grad=True)``) does the same for MemoryFormer's
  tables through ``hash_read(..., sparse=True)``: a step at 16 tokens writes ≤ 2 048 of the 32 768 rows at d = 1024,
  τ = 8 (the C backend writes each distinct row once, sorted) instead of a dense 128 MB gradient;
* ``RowSparseAdam`` gathers the touched rows of the parameter and both moments, applies torch's own AdamW update to
  them, and writes them back — untouched rows are not read, not written, and stay bit-identical;
* ``clip_sparse_grad_norm_`` clips gradients by their global L2 norm when some are sparse (torch's
  ``clip_grad_norm_`` raises NotImplementedError on a sparse gradient); the paper clips the values on their own;
* ``split_sparse_parameters`` separates a model's row-sparse parameters from the rest;
* ``memlab.lab.train`` wires it in: ``--set table_optimizer=lazy`` gives the MemoryFormer tables row-sparse gradients
  and this optimizer (their own parameter group; every other group keeps AdamW's exact update).

::

    values = SharedValues(n_keys**2, d, sparse_grad=True)           # read by every memory layer
    dense, sparse = split_sparse_parameters(model)
    opt = RowSparseAdam([{"params": dense, "weight_decay": 0.1}, {"params": sparse, "lr": 1e-3}], betas=(0.9, 0.95))
    loss.backward()
    clip_sparse_grad_norm_(dense, 1.0); clip_sparse_grad_norm_(sparse, 1.0)   # values clipped on their own
    opt.step(); opt.zero_grad(set_to_none=True)

``kernels/bench_sparse.py`` measures what it saves (``kernels/results/sparse-<device>.json``).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.adamw import adamw as adamw_functional

from ..layers.hash_memory import HashMemory
from ..reading.kernels import cpu as cpu_kernel
from ..layers.shared_values import SharedValues

#: Devices where torch has the fused AdamW kernel (CPU since torch 2.4); RowSparseAdam(fused=None) uses it there.
FUSED_DEVICES = ("cpu", "cuda")


def coalesced(grad: torch.Tensor) -> torch.Tensor:
    """``grad.coalesce()``, without its sort and copy when the row ids are already strictly increasing.

    The C backend of ``hash_read`` writes each row once, sorted, and flags its gradient coalesced, but autograd's
    gradient accumulation rebuilds the tensor without the flag; checking the order (one pass over U ids) is far
    cheaper than ``coalesce()`` (a sort and a copy of the (U, d) values). Row-sparse (sparse_dim = 1) only."""
    if grad.is_coalesced():
        return grad
    rows = grad._indices()[0]
    if rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all()):
        return torch.sparse_coo_tensor(grad._indices(), grad._values(), grad.shape, is_coalesced=True,
                                       check_invariants=False)
    return grad.coalesce()


def touched_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row ids, (rows, dim) gradient rows) of a row-sparse gradient, duplicates summed (coalesced)."""
    if grad.sparse_dim() != 1:
        raise ValueError(
            f"RowSparseAdam steps row-sparse gradients (sparse_dim=1, as F.embedding_bag(sparse=True) and "
            f"nn.Embedding(sparse=True) give), got a sparse gradient of shape {tuple(grad.shape)} with "
            f"sparse_dim={grad.sparse_dim()}; densify it (p.grad = p.grad.to_dense()) or use torch.optim.SparseAdam"
        )
    grad = coalesced(grad)
    return grad.indices()[0], grad.values()


class RowSparseAdam(torch.optim.Optimizer):
    """Lazy AdamW: on a row-sparse gradient, Adam's update is applied to the rows read this step and to no other row.

    For a sparse gradient (``SharedValues(sparse_grad=True)``) the touched rows of the parameter and of both moments
    are gathered, stepped by torch's own functional AdamW (``torch.optim.adamw.adamw``: same formula, same ε placement,
    decoupled weight decay), and scattered back. A dense gradient is a step that touches every row and gets the
    ordinary AdamW update, so one optimizer can hold a whole model (dense groups and the values group).

    This is "lazy" Adam (as ``torch.optim.SparseAdam``, TF's LazyAdam): it is NOT dense Adam on a sparse problem.
      * Untouched rows keep their parameter, m and v bit-identical. Dense Adam would decay their moments
        (m ← β1·m, v ← β2·v) and keep moving a recently read row along its momentum; AdamW would also shrink every
        row by lr·weight_decay.
      * Bias correction uses the step count of the parameter (steps in which the table had a gradient, as SparseAdam
        does), not how often the row was read: a row first read at step 1000 is barely corrected, so its first move
        is lr·(1-β1)/√(1-β2) per coordinate (0.45·lr at β = (0.9, 0.95)) instead of dense Adam's first-step lr.
      * Weight decay is lazy too: only touched rows decay, so a row's total decay grows with how often it is read
        (memlab's train config defaults ``memory_weight_decay`` to 0).
    On a row that is read every step the update equals dense AdamW's (tests/test_row_sparse.py checks it bit for bit).

    The paper trains its values with a dense gradient — its custom backward kernels write the whole table gradient
    (Memory Layers at Scale) — under AdamW with their own LR (1e-3) and separate clipping. Lazy Adam is memlab's cheaper
    approximation of that, not the paper's recipe: compare training curves before relying on it.

    Why not ``torch.optim.SparseAdam``: it has no weight decay (a ``weight_decay`` key in a param group is silently
    ignored), it rejects dense gradients (a model then needs two optimizers), and it places ε as lr·√bc2/bc1·m/(√v+ε)
    instead of Adam's lr/bc1·m/(√v/√bc2+ε), so it differs from AdamW even on rows read every step. With
    ``weight_decay=0`` the two agree up to that ε placement (tested). Param groups take ``lr``, ``betas``, ``eps``,
    ``weight_decay``, ``fused``, ``lazy``, ``in_place``; extra keys (e.g. ``name``, ``base_lr`` of memlab's train loop) are kept.

    ``lazy`` (per group, default True): False steps a row-sparse gradient as the dense gradient it stands for (zeros
    in the rows not read), i.e. exact AdamW on every row: the cheap sparse backward with dense AdamW's maths.

    When a sparse gradient touches every row (a large batch on a small table), its coalesced values are the dense
    gradient: the step is done in place, without the gather and scatter (same numbers, bit for bit).

    ``fused``: torch's one-pass fused AdamW kernel on the gathered rows (None: on CPU and CUDA tensors, where torch has
    it): in kernels/results/sparse-*.json the fused AdamW step is ~9× faster than the unfused one; fused=False reproduces
    ``torch.optim.AdamW()``'s default implementation bit for bit, fused=True ``torch.optim.AdamW(fused=True)``'s.
    ``in_place`` (per group, default False): on an fp32 CPU parameter with a row-sparse gradient, memlab's C kernel
    (``kernels.cpu.lazy_adamw_``) updates the touched rows of the parameter and both moments in place, with no
    gather/scatter copies (the same formula; equal to torch's kernels up to fp32 rounding, not bit for bit).
    memlab's trainer sets it for the tables group (``table_optimizer="lazy"``).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused: bool | None = None,
        lazy: bool = True,
        in_place: bool = False,
    ):
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "fused": fused, "lazy": lazy,
                    "in_place": in_place}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.is_sparse:
                    raise ValueError(
                        f"RowSparseAdam needs dense parameters (the gradient is what is sparse), got a sparse "
                        f"parameter of shape {tuple(p.shape)}; keep the table dense and read it with sparse=True"
                    )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            fused = group["fused"]
            in_place = group.get("in_place", False)  # fp32 CPU row-sparse gradients: memlab's C kernel, in place
            if fused is None:
                fused = all(p.device.type in FUSED_DEVICES for p in group["params"])
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            scatter = []  # (full tensor, row ids, gathered rows) to write back after the update
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    # where torch.optim.AdamW keeps it: on the device for the fused kernel, else on the CPU
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if fused else "cpu")
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                tensors, grad = (p, state["exp_avg"], state["exp_avg_sq"]), p.grad
                if grad.is_sparse and not group.get("lazy", True):
                    grad = grad.to_dense()  # exact AdamW: rows not read get a zero gradient and are stepped too
                elif grad.is_sparse:
                    rows, grad = touched_rows(grad)
                    if (in_place and p.dtype == torch.float32 and p.is_cpu and p.is_contiguous()
                            and cpu_kernel.available()):
                        state["step"] += 1
                        cpu_kernel.lazy_adamw_(p, state["exp_avg"], state["exp_avg_sq"], rows, grad,
                                               int(state["step"]), group["lr"], group["betas"], group["eps"],
                                               group["weight_decay"])
                        continue
                    if rows.numel() == p.shape[0]:  # every row read: the coalesced values are the dense gradient
                        grad = grad.reshape(p.shape)
                    else:
                        gathered = tuple(t.index_select(0, rows) for t in tensors)
                        scatter += [(t, rows, g) for t, g in zip(tensors, gathered)]
                        tensors = gathered
                for out, t in zip((params, exp_avgs, exp_avg_sqs), tensors):
                    out.append(t)
                grads.append(grad)
                steps.append(state["step"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            adamw_functional(
                params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, beta1=beta1, beta2=beta2,
                lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, fused=fused,
            )
            for full, rows, updated in scatter:
                full.index_copy_(0, rows, updated)
        return loss


@torch.no_grad()
def clip_sparse_grad_norm_(parameters: torch.Tensor | Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (L2) for gradients of which some may be sparse; returns the total norm.

    Sparse gradients are coalesced in place first (a row read twice must be summed before its norm is taken), then
    every gradient is scaled by min(1, max_norm / (total + 1e-6)), torch's formula. Dense gradients are handled too,
    so it can clip any optimizer group; clip the product-key values on their own, as the paper does.
    """
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = coalesced(p.grad)
        grads.append(p.grad.values() if p.grad.is_sparse else p.grad)
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g).to(grads[0].device) for g in grads]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.to(g.device, g.dtype))
    return total


def split_sparse_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(dense, row-sparse) parameters of ``module``: row-sparse = the weight of each ``SharedValues(sparse_grad=True)``
    inside it (once, however many layers share it) and the tables of each ``HashMemory(sparse_grad=True)``; every other
    parameter is dense. For optimizer groups."""
    sparse = {id(m.weight): m.weight for m in module.modules() if isinstance(m, SharedValues) and m.sparse_grad}
    sparse.update({id(m.tables): m.tables for m in module.modules() if isinstance(m, HashMemory) and m.sparse_grad})
    dense = [p for p in module.parameters() if id(p) not in sparse]
    return dense, list(sparse.values())
