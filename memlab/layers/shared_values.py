"""A value table that several product-key layers read: Memory Layers at Scale §3.2 shares one pool of values
across all memory layers of a model (Memory+)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import DEFAULT_MAX_MEMORY_BYTES, check_memory, check_positive_int
from ..reading import embedding_bag
from ..reading.hash_bag import read_backend


class SharedValues(nn.Module):
    """A value table that several product-key layers read (Memory+ shares one pool across layers).

    ``weight`` is (n_values, dim), initialised N(0, 1/dim) as in the released code. Each layer keeps its own keys.

    ``sparse_grad=True``: layers read the table with ``embedding_bag(..., sparse=True)``, so ``weight.grad`` is a
    row-sparse COO tensor holding only the rows read this step — a 1M-row table is not zero-filled and written densely
    every step. Step it with ``memlab.RowSparseAdam`` (torch's Adam/AdamW reject sparse gradients) and clip it with
    ``memlab.clip_sparse_grad_norm_`` (see ``memlab.lab.row_sparse``). Torch backend only. A plain attribute: it can be
    switched on an existing table.
    """

    def __init__(
        self,
        n_values: int,
        dim: int,
        max_memory_bytes: float | None = DEFAULT_MAX_MEMORY_BYTES,
        sparse_grad: bool = False,
    ):
        super().__init__()
        if not isinstance(sparse_grad, bool):
            raise TypeError(f"sparse_grad must be True or False, got {sparse_grad!r}")
        self.sparse_grad = sparse_grad
        check_positive_int(n_values, "n_values")
        check_positive_int(dim, "dim")
        check_memory(n_values * dim * 4, f"values ({n_values} × {dim}, fp32)", max_memory_bytes,
                     "lower the number of values (n_keys) or their dim")
        self.weight = nn.Parameter(torch.randn(n_values, dim) * dim**-0.5)

    @property
    def n_values(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def read(self, indices: torch.Tensor, weights: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """Σ_j weights[..., j] · weight[indices[..., j]], (..., dim): the read every product-key layer ends in.
        ``memlab.ShardedValues`` runs the same read with the columns spread over processes."""
        if self.sparse_grad and backend == "auto" and type(self) is SharedValues:
            backend = read_backend("auto", self.weight, sparse=True)  # C on fp32 CPU: a coalesced row-sparse gradient
        return embedding_bag(self.weight, indices, weights, backend=backend, check=False, sparse=self.sparse_grad)

    def row_dots(self, indices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """⟨weight[indices[..., j]], x⟩ for every j, (..., B): PEER's down-rows uᵀx (x (..., dim) is cast to the
        table's dtype)."""
        rows = F.embedding(indices, self.weight, sparse=self.sparse_grad)  # (..., B, dim)
        return torch.einsum("...bd,...d->...b", rows, x.to(rows.dtype))

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        return self.weight.numel() * torch.empty((), dtype=dtype).element_size()

    def extra_repr(self) -> str:
        return f"n_values={self.n_values}, dim={self.dim}" + (", sparse_grad=True" if self.sparse_grad else "")
