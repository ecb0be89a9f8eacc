"""What a MemoryFormer layer hashes: its input as is (the paper), or a fixed rotation of it, or its input centred.

memlab's own experiment, not the paper's. MemoryFormer (§2.1) hashes the coordinates of x directly: bit i of a chunk
is [z_i ≥ 0]. Random-hyperplane LSH (notebook 01) hashes projections on random directions instead, and buckets are
used evenly only when the bits are fair and independent. Notebook 08 measures trained layers whose bits are neither:
each coordinate keeps a sign bias (its mean over tokens is far from 0) and the activations have an effective rank of
~10 of 128 dimensions. Two fixed maps before hashing address one cause each:

    "identity"  h(x): the paper's layer                                           (no parameters, no extra FLOPs)
    "rotate"    h(R x): R a fixed random orthogonal d × d matrix, drawn at build time  (a buffer; d² FLOPs/token)
    "center"    h(x − μ): μ a running mean of x over training batches (exponential, momentum 0.05), updated in
                training mode and used unchanged in eval mode; 0 at initialisation    (a buffer; d FLOPs/token)

The weight p(z) is computed on the same mapped chunks, so the layer is exactly HashMemory applied to the mapped x;
gradients flow through R (a fixed linear map) and past μ (a constant). The study ``mf-hash-input``
(``python -m memlab sweep --study mf-hash-input``) trains all three.
"""
from __future__ import annotations

import torch
from torch import nn

HASH_INPUTS = ("identity", "rotate", "center")
CENTER_MOMENTUM = 0.05


def random_rotation(dim: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """A random orthogonal (dim × dim) matrix, uniform over the orthogonal group (QR of a Gaussian, signs fixed)."""
    g = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    return (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).to(dtype)


class HashInput(nn.Module):
    """The map a HashMemory applies to x before cutting it into chunks (module docstring). ``mode="identity"`` is
    never built: HashMemory then skips the call, so the paper's layer is unchanged bit for bit."""

    def __init__(self, dim: int, mode: str, momentum: float = CENTER_MOMENTUM):
        super().__init__()
        if mode not in HASH_INPUTS[1:]:
            raise ValueError(f"hash_input={mode!r} is not one of {HASH_INPUTS}")
        self.dim, self.mode, self.momentum = dim, mode, momentum
        if mode == "rotate":
            self.register_buffer("rotation", random_rotation(dim))  # from the global RNG: part of the model's seed
        else:
            self.register_buffer("running_mean", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mapped x: R x, or x − μ."""
        if self.mode == "rotate":
            return x @ self.rotation.T.to(x.dtype)
        return x - self.running_mean.to(x.dtype)

    @torch.no_grad()
    def update_(self, x: torch.Tensor) -> None:
        """Training step: move the running mean towards this batch's mean (HashMemory calls it after mapping x)."""
        if self.mode == "center":
            batch_mean = x.detach().reshape(-1, self.dim).mean(0).to(self.running_mean.dtype)
            self.running_mean.lerp_(batch_mean, self.momentum)

    def flops_per_token(self) -> int:
        return self.dim * self.dim if self.mode == "rotate" else self.dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mode={self.mode!r}" + (f", momentum={self.momentum}" if self.mode == "center" else "")
