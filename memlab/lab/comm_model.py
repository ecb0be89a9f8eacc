"""How many bytes memory parallelism sends, per token — the model that the bench and notebook 10 check measurements
against, and its cost on the paper's hardware.

Memory Layers at Scale (arXiv 2412.09764, §3, "parallel memory") shards the values along the embedding dimension over
P ranks (``memlab.reading.sharded_bag``). For one read of B = heads · top-k rows of d numbers, per token:

    forward   all-gather of indices and weights    (P−1) · B · (s_idx + s_w)     each token's bags go to P−1 ranks
              outputs back to the owner             (P−1)/P · d · e               P−1 of the P column blocks come in
    backward  output gradient out again            (P−1)/P · d · e
              weight gradients summed at the owner  (P−1) · B · s_w               P−1 partial dot products come in

Bytes are summed over all ranks ("network bytes per token"); by symmetry each rank sends its own tokens' share, so a
rank holding N tokens sends N times these numbers per read. s_idx = 4 (memlab sends int32 indices), s_w the weight
dtype, e the activation dtype. Padding for uneven token counts and the per-read all-gather of the P token counts are
not in the model (``memlab.reading.sharded_bag.exchange_counter`` counts both separately).

The comparison notebook 10 works: a Megatron-style tensor-parallel FFN (column-parallel W1, row-parallel W2) all-reduces
the (N, d) output in the forward and the input gradient in the backward; a ring all-reduce sends 2(P−1)/P · d · e per
token from each of P ranks, 2 (P−1) · d · e in all.

Hardware figures (cited, not measured here): H100 SXM NVLink 4 moves 900 GB/s per GPU counting both directions,
450 GB/s each way (NVIDIA H100 Tensor Core GPU datasheet); HBM3 3.35 TB/s, the peak Memory Layers at Scale quotes for
its EmbeddingBag kernels.
"""
from __future__ import annotations

#: NVLink 4 on an H100 SXM: 900 GB/s per GPU, both directions together (NVIDIA H100 datasheet) → 450 GB/s each way.
NVLINK_H100_GBPS_PER_DIRECTION = 450.0
#: H100 SXM HBM3 peak bandwidth, as quoted by Memory Layers at Scale for its EmbeddingBag kernels.
HBM_H100_GBPS = 3350.0


def memory_parallel_bytes_per_token(heads: int, topk: int, dim: int, ranks: int, index_bytes: int = 4,
                                    weight_bytes: int = 4, activation_bytes: int = 4) -> dict[str, float]:
    """Network bytes per token of one column-sharded read (all ranks together): each part, ``forward``,
    ``backward`` and ``total``. ``ranks=1`` gives zeros."""
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    bag, p = heads * topk, ranks
    parts = {
        "indices all-gather": (p - 1) * bag * index_bytes,
        "weights all-gather": (p - 1) * bag * weight_bytes,
        "outputs all-to-all": (p - 1) / p * dim * activation_bytes,
        "output grads all-to-all": (p - 1) / p * dim * activation_bytes,
        "weight grads reduce": (p - 1) * bag * weight_bytes,
    }
    parts["forward"] = parts["indices all-gather"] + parts["weights all-gather"] + parts["outputs all-to-all"]
    parts["backward"] = parts["output grads all-to-all"] + parts["weight grads reduce"]
    parts["total"] = parts["forward"] + parts["backward"]
    return parts


def row_sharded_bytes_per_token(heads: int, topk: int, dim: int, ranks: int, index_bytes: int = 4,
                                weight_bytes: int = 4, activation_bytes: int = 4, routed: bool = False) -> dict[str, float]:
    """The alternative the paper did not take (notebook 10, exercise 1): values sharded by ROWS, n/P rows per rank.

    ``routed=False`` — ``memlab.lab.row_sharding`` (the exercise's answer): indices and weights all-gathered as in the
    column design, (P−1)·B·(s_idx + s_w); every rank sends a full-width partial sum for every other rank's token back,
    (P−1)·d·e. Backward: the output gradient is all-gathered, (P−1)·d·e, and the weight gradients reduced,
    (P−1)·B·s_w.

    ``routed=True`` — only the entries whose row lives elsewhere travel, (P−1)/P·B·(s_idx + s_w) with uniform rows; the
    ranks that hold at least one of a token's rows send a partial sum back: (P−1)·(1 − (1 − 1/P)^B)·d·e, which is
    (P−1)·d·e as soon as B ≫ P. Uniform rows are the best case: a hot row puts its traffic and its reads on one rank.
    """
    bag, p = heads * topk, ranks
    hit = 1 - (1 - 1 / p) ** bag if routed else 1.0  # a given other rank holds at least one of the token's rows
    spread = (p - 1) / p if routed else (p - 1)       # how many copies of the token's entries travel
    parts = {
        "indices and weights out": spread * bag * (index_bytes + weight_bytes),
        "partial sums back": (p - 1) * hit * dim * activation_bytes,
        "output grads out": (p - 1) * hit * dim * activation_bytes,
        "weight grads back": spread * bag * weight_bytes,
    }
    parts["forward"] = parts["indices and weights out"] + parts["partial sums back"]
    parts["backward"] = parts["output grads out"] + parts["weight grads back"]
    parts["total"] = parts["forward"] + parts["backward"]
    return parts


def tensor_parallel_ffn_bytes_per_token(dim: int, ranks: int, activation_bytes: int = 4) -> dict[str, float]:
    """Network bytes per token of a Megatron-style tensor-parallel FFN (all ranks together): one ring all-reduce of
    d numbers per token forward (the output) and one backward (the input gradient), each 2 (P−1) · d · e."""
    allreduce = 2 * (ranks - 1) * dim * activation_bytes
    return {"forward": allreduce, "backward": allreduce, "total": 2 * allreduce}


def hash_block_bytes_per_token(dim: int, ranks: int, tau: int = 8, expand_bits: int = 2, index_bytes: int = 4,
                               weight_bytes: int = 4, activation_bytes: int = 4) -> dict[str, float]:
    """Forward network bytes per token if one MemoryFormer block's tables were sharded by columns (they are not in
    memlab: ``memlab.layers.sharded_values.WHY_NOT_HASH_TABLES``).

    Q, K and V share one hash: one all-gather of K = d/τ indices and weights and three output exchanges of d columns.
    The Memory Block's first layer (d → (τ+e)·K) and second layer ((τ+e)·K → d, K chunks of τ+e bits) each gather
    K indices and weights and send back their output columns.
    """
    k = dim // tau
    p = ranks
    gather = (p - 1) * k * (index_bytes + weight_bytes)
    back = lambda width: (p - 1) / p * width * activation_bytes  # noqa: E731
    parts = {
        "qkv": gather + 3 * back(dim),
        "memory block layer 1": gather + back((tau + expand_bits) * k),
        "memory block layer 2": gather + back(dim),
    }
    parts["forward"] = sum(parts.values())
    parts["pipeline boundary"] = dim * activation_bytes  # what splitting the model by layers sends per token
    return parts


def exchange_seconds_per_token(bytes_per_token: float, ranks: int,
                               link_gbps: float = NVLINK_H100_GBPS_PER_DIRECTION) -> float:
    """Bandwidth-bound time per token of an exchange whose network bytes (all ranks together) are
    ``bytes_per_token``: each of the P ranks sends its share over its own link at ``link_gbps`` GB/s. Latency per
    collective is not modelled (it matters at small batches; measure it)."""
    return bytes_per_token / (ranks * link_gbps * 1e9)


def bag_read_seconds_per_token(heads: int, topk: int, dim: int, ranks: int, value_bytes: int = 2,
                               hbm_gbps: float = HBM_H100_GBPS) -> float:
    """Bandwidth-bound time per token of the forward EmbeddingBag itself: B rows of d numbers read from HBM, spread
    over the P ranks' memories (each reads its d/P columns)."""
    return heads * topk * dim * value_bytes / (ranks * hbm_gbps * 1e9)


def paper_setting(ranks: int = 8, heads: int = 4, topk: int = 32, dim: int = 1024) -> dict:
    """The paper's memory parallelism modelled on ``ranks`` H100s over NVLink, bf16 values and weights, int32 indices.

    Defaults: Memory Layers at Scale's product-key defaults (4 heads, top-32, values of 1024, the 1M × 1024 memory of its
    ablations) on one 8-GPU NVLink node. Returns bytes per token (forward, backward) and the bandwidth-bound times per
    token of the exchange and of the bag read it serves, and the tensor-parallel FFN at the same width for scale.
    """
    mp = memory_parallel_bytes_per_token(heads, topk, dim, ranks, index_bytes=4, weight_bytes=2, activation_bytes=2)
    tp = tensor_parallel_ffn_bytes_per_token(dim, ranks, activation_bytes=2)
    fwd_s = exchange_seconds_per_token(mp["forward"], ranks)
    bag_s = bag_read_seconds_per_token(heads, topk, dim, ranks)
    return {
        "ranks": ranks, "heads": heads, "topk": topk, "dim": dim, "dtype": "bf16 values/weights/activations, "
        "int32 indices", "link_GBps_per_direction": NVLINK_H100_GBPS_PER_DIRECTION, "hbm_GBps": HBM_H100_GBPS,
        "bytes_per_token": mp, "tensor_parallel_ffn_bytes_per_token": tp,
        "exchange_forward_ns_per_token": fwd_s * 1e9,
        "exchange_backward_ns_per_token": exchange_seconds_per_token(mp["backward"], ranks) * 1e9,
        "bag_read_forward_ns_per_token": bag_s * 1e9,
        "exchange_over_bag_read_forward": fwd_s / bag_s,
        "tensor_parallel_ffn_forward_ns_per_token": exchange_seconds_per_token(tp["forward"], ranks) * 1e9,
    }
