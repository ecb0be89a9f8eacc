"""FLOP accounting: the MemoryFormer paper's per-block formulas (Table 1, Figure 1) and memlab's own counts.

Following the paper, a "FLOP" here is one multiply-add, and G = 10^9.

    transformer block   2·s²·d + 12·s·d²       (attention scores and mixing 2s²d; QKV+O 4sd²; FFN 8sd²)
    MemoryFormer block  2·s²·d + 6·K·s·d       (d = K·τ; the memory layers cost O(K·d) per token)
"""
from __future__ import annotations

from dataclasses import dataclass


def attention_flops(seq_len: int, d_model: int) -> int:
    """Attention's token mixing, 2·s²·d: QKᵀ and the weighted sum of V, each s²·d."""
    return 2 * seq_len**2 * d_model


def transformer_block_flops(seq_len: int, d_model: int) -> int:
    """Standard block, the paper's formula: 2·s²·d + 12·s·d²."""
    return attention_flops(seq_len, d_model) + 12 * seq_len * d_model**2


def memoryformer_block_flops(seq_len: int, d_model: int, num_tables: int) -> int:
    """MemoryFormer block, the paper's formula: 2·s²·d + 6·K·s·d."""
    return attention_flops(seq_len, d_model) + 6 * num_tables * seq_len * d_model


def linear_flops_per_token(in_features: int, out_features: int) -> int:
    """Multiply-adds of y = W x for one token: d_in · d_out."""
    return in_features * out_features


@dataclass(frozen=True)
class Table1Row:
    """One model of MemoryFormer's Table 1 with the paper's printed FLOPs (one block, s = 2048)."""

    model: str
    d_model: int
    num_tables: int | None  # None for the Pythia baselines
    printed_without_attention_g: float
    printed_total_g: float

    def flops(self, seq_len: int = 2048) -> tuple[float, float]:
        """(without attention, total) in GFLOPs from the paper's formulas."""
        attn = attention_flops(seq_len, self.d_model)
        total = (
            transformer_block_flops(seq_len, self.d_model)
            if self.num_tables is None
            else memoryformer_block_flops(seq_len, self.d_model, self.num_tables)
        )
        return (total - attn) / 1e9, total / 1e9


#: MemoryFormer Table 1 (τ = 8, s = 2048): the FLOPs columns as printed in the paper.
TABLE1 = (
    Table1Row("Pythia-70M", 512, None, 6.4, 10.7),
    Table1Row("MemoryFormer-tiny", 512, 64, 0.4, 4.7),
    Table1Row("Pythia-160M", 768, None, 14.5, 20.9),
    Table1Row("MemoryFormer-small", 768, 96, 1.0, 7.4),
    Table1Row("Pythia-410M", 1024, None, 25.8, 34.4),
    Table1Row("MemoryFormer-base", 1024, 128, 1.6, 10.2),
)


def table1(seq_len: int = 2048) -> list[dict]:
    """Table 1 recomputed: each row with the formula's GFLOPs, the printed values, and whether they agree at the
    printed precision (one decimal)."""
    rows = []
    for row in TABLE1:
        without, total = row.flops(seq_len)
        rows.append({
            "model": row.model,
            "d_model": row.d_model,
            "K": row.num_tables,
            "without_attention_g": without,
            "total_g": total,
            "printed_without_attention_g": row.printed_without_attention_g,
            "printed_total_g": row.printed_total_g,
            "matches_print": round(without, 1) == row.printed_without_attention_g
            and round(total, 1) == row.printed_total_g,
        })
    return rows
