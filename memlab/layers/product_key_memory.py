"""Product-key memory layer (Lample et al. 2019) as used by Memory Layers at Scale (arXiv 2412.09764).

    q = W_q x  (per head)     (scores, rows) = exact top-k over n² product keys     w = softmax(scores)
    y = Σ_heads Σ_topk w · V[rows]                                                  (one weighted EmbeddingBag)

On fp32 CPU tensors ``lookup`` runs a fast path with the same numbers (up to fp32 rounding): all 2·H half-score
matrices in one ``bmm`` against the half-keys, prepared once (qk-norm's RMS-normalised and scaled keys are cached
between calls while no gradient flows to them, keyed on the parameter's version and storage; an optimizer step or
``load_state_dict`` changes the version and so rebuilds them), then the two-level top-k and the softmax in one C call
(``kernels.cpu.product_topk``). Without a gradient ``forward`` reads the values with the C bag as well. At one token
this replaces ~20 small torch ops; kernels/bench.py reports what is left as a multiple of the layer's bytes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import DEFAULT_MAX_MEMORY_BYTES, check_float_input, check_memory, check_positive_int
from ..addressing.product_keys import half_scores, product_topk
from ..reading.bag import check_bag_shapes
from ..reading.kernels import cpu as cpu_kernel
from .shared_values import SharedValues

QUERY_NORMS = (None, "batch", "layer", "qk")


class ProductKeyMemory(nn.Module):
    """Lample's product-key memory: per-head queries, two half-key sets, exact top-k, softmax, heads summed.

    Args:
        d_model: input (and output) width.
        n_keys: n half-keys per half and head; the memory holds n² values (1024 → ~1M in the paper).
        heads: H query heads, each with its own query projection and half-keys, all reading the same values.
        topk: k values read per head.
        k_dim: full query/key width (split in two halves); default d_model // 2 ("½ the value dim").
        v_dim: value width; default d_model. When it differs, a linear map v_dim → d_model follows.
        query_norm: None (released code), "batch" (BatchNorm on queries, Lample 2019), "layer" (LayerNorm on queries),
            or "qk" (qk-norm: RMSNorm on each query half, RMS-normalised half-keys, scores scaled by 1/√(k_dim/2)).
            "batch" needs at least 2 tokens per call in training mode (BatchNorm's batch statistics); one token
            raises a ValueError naming the fixes (.eval(), more tokens, or "layer"/"qk").
        values: a ``SharedValues`` to read instead of owning a table; it must hold n_keys² rows. Its ``sparse_grad``
            decides whether the value gradient is dense or row-sparse (``memlab.lab.row_sparse``).
        output_projection: add the v_dim → d_model map (default: only when v_dim != d_model).
        backend: passed to ``memlab.embedding_bag``.
        max_memory_bytes: refuse to build values larger than this (fp32 estimate); None disables the check.

    Dtypes: any floating input is accepted and cast to the dtype of the layer's parameters, and the output comes back in
    that dtype, as for ``HashMemory`` (an fp16/bf16/fp64 ``x`` into an fp32 layer gives fp32). To compute in another
    precision, convert the layer (``layer.half()``, ``layer.double()``, ``layer.to(x.dtype)``) or use
    ``torch.autocast``.
    """

    def __init__(
        self,
        d_model: int,
        n_keys: int = 1024,
        heads: int = 4,
        topk: int = 32,
        k_dim: int | None = None,
        v_dim: int | None = None,
        query_norm: str | None = None,
        values: SharedValues | None = None,
        output_projection: bool | None = None,
        backend: str = "auto",
        max_memory_bytes: float | None = DEFAULT_MAX_MEMORY_BYTES,
    ):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_keys", n_keys), ("heads", heads), ("topk", topk)):
            check_positive_int(value, name)
        if values is not None and not isinstance(values, SharedValues):
            raise TypeError(f"values must be a memlab.SharedValues, got {type(values).__name__}")
        k_dim = k_dim if k_dim is not None else 2 * max(1, d_model // 4)  # ½ d_model, rounded to even
        v_dim = v_dim if v_dim is not None else (values.dim if values is not None else d_model)
        check_positive_int(k_dim, "k_dim")
        check_positive_int(v_dim, "v_dim")
        if k_dim % 2:
            raise ValueError(f"k_dim={k_dim} must be even: a query is split into two halves; try k_dim={k_dim + 1}")
        if topk > n_keys:
            raise ValueError(f"topk={topk} is larger than n_keys={n_keys}; choose topk <= {n_keys} or more keys")
        if query_norm not in QUERY_NORMS:
            raise ValueError(f"query_norm={query_norm!r} is not one of {QUERY_NORMS}")
        if values is not None:
            if values.n_values != n_keys**2 or values.dim != v_dim:
                raise ValueError(
                    f"shared values hold {values.n_values} × {values.dim} but this layer addresses n_keys²={n_keys**2} "
                    f"rows of v_dim={v_dim}; build SharedValues({n_keys**2}, {v_dim}) or set n_keys={math.isqrt(values.n_values)}"
                )
        self.d_model, self.n_keys, self.heads, self.topk = d_model, n_keys, heads, topk
        self.k_dim, self.v_dim, self.query_norm, self.backend = k_dim, v_dim, query_norm, backend
        half = k_dim // 2

        self.query = nn.Linear(d_model, heads * k_dim, bias=False)
        nn.init.xavier_uniform_(self.query.weight)
        bound = 1 / math.sqrt(k_dim)
        self.keys = nn.Parameter(torch.empty(heads, 2, n_keys, half).uniform_(-bound, bound))
        if query_norm == "batch":
            self.query_norm_layer = nn.BatchNorm1d(heads * k_dim)
        elif query_norm == "layer":
            self.query_norm_layer = nn.LayerNorm(k_dim)
        elif query_norm == "qk":
            self.query_norm_layer = nn.RMSNorm(half)
        else:
            self.query_norm_layer = None
        self.values = values if values is not None else SharedValues(n_keys**2, v_dim, max_memory_bytes)
        if output_projection is None:
            output_projection = v_dim != d_model
        self.out_proj = nn.Linear(v_dim, d_model, bias=False) if output_projection else None

    @property
    def n_values(self) -> int:
        return self.n_keys**2

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head queries (..., H, 2, k_dim/2): the two halves q1, q2 of each head's query.

        ``x`` is cast to the query projection's dtype (see the class docstring).
        """
        check_float_input(x, self.d_model, type(self).__name__)
        if self.query_norm == "batch" and self.query_norm_layer.training and math.prod(x.shape[:-1]) == 1:
            raise ValueError(
                "query_norm='batch' needs more than one token per batch in training mode (BatchNorm normalises "
                "each query feature over the batch), got 1 token; pass at least 2 tokens, call .eval() for "
                "inference, or use query_norm='layer' or 'qk'"
            )
        return self._shape_queries(self.query(x.to(self.query.weight.dtype)))

    def _shape_queries(self, q: torch.Tensor) -> torch.Tensor:
        """W_q x (..., H·k_dim) → per-head query halves (..., H, 2, k_dim/2), with the query norm applied."""
        if self.query_norm == "batch":
            q = self.query_norm_layer(q.reshape(-1, q.shape[-1])).reshape(q.shape)
        q = q.unflatten(-1, (self.heads, self.k_dim))
        if self.query_norm == "layer":
            q = self.query_norm_layer(q)
        q = q.unflatten(-1, (2, self.k_dim // 2))
        if self.query_norm == "qk":
            q = self.query_norm_layer(q)
        return q

    def half_keys(self) -> torch.Tensor:
        """(H, 2, n, k_dim/2): the half-key sets K1, K2 of every head (RMS-normalised under qk-norm)."""
        if self.query_norm == "qk":
            return F.rms_norm(self.keys, (self.keys.shape[-1],))
        return self.keys

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Half scores (q1·K1, q2·K2), each (..., H, n)."""
        q, keys = self.queries(x), self.half_keys()
        s1, s2 = half_scores(q[..., 0, :], keys[:, 0]), half_scores(q[..., 1, :], keys[:, 1])
        if self.query_norm == "qk":
            scale = (self.k_dim // 2) ** -0.5
            s1, s2 = s1 * scale, s2 * scale
        return s1, s2

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Addressing: (indices (..., H, topk) into the n² values, softmax weights (..., H, topk))."""
        if self._fast_path(x):
            return self._lookup_queries(self.queries(x))
        s1, s2 = self.scores(x)
        top_scores, indices = product_topk(s1, s2, self.topk)
        return indices, torch.softmax(top_scores, dim=-1)

    # ------------------------------------------------------------------ the CPU fast path (same numbers)
    def _fast_path(self, x: torch.Tensor) -> bool:
        """fp32 CPU layer and input, and memlab's C kernel built: ``lookup`` takes ``_lookup_queries``."""
        return (x.is_cpu and self.keys.is_cpu and self.keys.dtype == torch.float32
                and self.query.weight.dtype == torch.float32 and cpu_kernel.available())

    def _scoring_keys(self) -> torch.Tensor:
        """(2·H, k_dim/2, n): half-keys as ``bmm`` wants them (head h's K1 at 2h, K2 at 2h+1), RMS-normalised and
        scaled by 1/√(k_dim/2) under qk-norm. Cached while no gradient flows to the keys: the cache is keyed on the
        keys' ``_version`` (bumped by every in-place change: optimizer steps, ``load_state_dict``), storage pointer,
        dtype and device, so any change to the parameter rebuilds it."""
        keys = self.keys
        if torch.is_grad_enabled() and keys.requires_grad:
            return self._prepare_keys(keys)
        tag = (keys._version, keys.data_ptr(), keys.dtype, keys.device, self.query_norm)
        cache = self.__dict__.get("_keys_cache")
        if cache is None or cache[0] != tag:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable outside inference mode
                cache = (tag, self._prepare_keys(keys.detach()).contiguous())
            self.__dict__["_keys_cache"] = cache
        return cache[1]

    def _prepare_keys(self, keys: torch.Tensor) -> torch.Tensor:
        half = self.k_dim // 2
        if self.query_norm == "qk":
            keys = F.rms_norm(keys, (half,)) * half**-0.5  # the score scale folded into the keys
        return keys.reshape(2 * self.heads, self.n_keys, half).transpose(1, 2)

    def _lookup_queries(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``lookup`` from per-head query halves (..., H, 2, k_dim/2): one ``bmm`` for every half score, then the
        two-level top-k (and, without a gradient, the softmax) in one C call. With a gradient, the C call only picks
        the indices (a selection has no gradient) and the scores are gathered from the ``bmm`` output and
        softmaxed in torch, so gradients reach the queries and the keys exactly as through ``scores``."""
        lead, h, n, k = q.shape[:-3], self.heads, self.n_keys, self.topk
        tokens = math.prod(lead)
        qh = q.reshape(tokens, 2 * h, self.k_dim // 2).transpose(0, 1)  # (2H, N, k_dim/2)
        s = torch.bmm(qh, self._scoring_keys())  # (2H, N, n): head h's q1·K1 at 2h, q2·K2 at 2h+1
        grad = torch.is_grad_enabled() and s.requires_grad
        s4 = s.view(h, 2, tokens, n)
        top, indices = cpu_kernel.product_topk(s4[:, 0].transpose(0, 1), s4[:, 1].transpose(0, 1), k,
                                               softmax=not grad)  # (N, H, k)
        if grad:
            s1 = s4[:, 0].transpose(0, 1).gather(-1, torch.div(indices, n, rounding_mode="floor"))
            s2 = s4[:, 1].transpose(0, 1).gather(-1, indices % n)
            top = torch.softmax(s1 + s2, dim=-1)
        return indices.reshape(*lead, h, k), top.reshape(*lead, h, k)

    def read(self, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Reading: Σ over heads and top-k of w · V[index] — heads × topk form one bag. (..., v_dim).

        ``indices`` and ``weights`` are (..., H, topk), as ``lookup`` returns them. Types, shapes and devices are
        checked on every call without a device sync (weights of another shape are refused even when the element
        count matches, e.g. transposed; so are bags not shaped (heads, topk)). The index range is not checked up
        front, which would cost a device sync: ``lookup`` builds indices in range. An index outside [0, n_keys²) from
        elsewhere still fails loudly, never crashing the process: torch's RuntimeError on the torch backend, memlab's
        ValueError on the Triton backend on CPU, a device-side assert on CUDA (see ``memlab.embedding_bag``'s
        ``check``).
        """
        check_bag_shapes(self.values.weight, indices, weights)
        if indices.shape[-2:] != (self.heads, self.topk):
            raise ValueError(
                f"{type(self).__name__}.read expects indices and weights of shape (..., heads={self.heads}, "
                f"topk={self.topk}), as lookup() returns them, got {tuple(indices.shape)}; to read bags of another "
                "shape call memlab.embedding_bag(layer.values.weight, indices, weights)"
            )
        # SharedValues.read: one embedding_bag; ShardedValues.read: the same read with the columns on several processes
        return self.values.read(indices.flatten(-2), weights.flatten(-2).to(self.values.weight.dtype), self.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._read_fast(*self.lookup(x))
        return y if self.out_proj is None else self.out_proj(y)

    def _read_fast(self, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``read``, with the C bag when no gradient is needed on fp32 CPU values (one C call, no F.embedding_bag
        bookkeeping); otherwise ``read`` itself (torch's backward, or the values' own sharded read)."""
        table = self.values.weight
        if (torch.is_grad_enabled() and (table.requires_grad or weights.requires_grad)) \
                or type(self.values) is not SharedValues or self.backend not in ("auto", "c") \
                or not (cpu_kernel.supports_bag(table, indices, weights) and cpu_kernel.available()):
            return self.read(indices, weights)
        return cpu_kernel.bag_forward(table, indices.flatten(-2).reshape(-1, self.heads * self.topk),
                                      weights.flatten(-2).reshape(-1, self.heads * self.topk)
                                      ).reshape(*indices.shape[:-2], table.shape[1])

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the value table in ``dtype`` (shared values are counted by every layer that reads them)."""
        return self.values.memory_bytes(dtype)

    def flops_per_token(self) -> int:
        """Counted multiply-adds per token: query projection, 2·n half-key scores per head, the k² candidate sums,
        the weighted read of H·k value rows, and the output projection if any."""
        flops = self.d_model * self.heads * self.k_dim          # queries
        flops += self.heads * self.n_keys * self.k_dim          # q1·K1 and q2·K2 (n keys of k_dim/2, twice)
        flops += self.heads * self.topk**2                      # candidate sums
        flops += self.heads * self.topk * self.v_dim            # weighted gather-sum
        if self.out_proj is not None:
            flops += self.v_dim * self.d_model
        return flops

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_keys={self.n_keys} (values={self.n_values}), heads={self.heads}, "
            f"topk={self.topk}, k_dim={self.k_dim}, v_dim={self.v_dim}, query_norm={self.query_norm!r}"
        )
