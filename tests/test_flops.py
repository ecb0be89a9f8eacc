"""memlab.flops against MemoryFormer Table 1 (one block, s = 2048, multiply-adds, G = 1e9)."""
from __future__ import annotations

import pytest

from memlab import flops

PRINTED = {  # model: (d, K, w/o attention G, total G) as printed in Table 1
    "Pythia-70M": (512, None, 6.4, 10.7),
    "MemoryFormer-tiny": (512, 64, 0.4, 4.7),
    "Pythia-160M": (768, None, 14.5, 20.9),
    "MemoryFormer-small": (768, 96, 1.0, 7.4),
    "Pythia-410M": (1024, None, 25.8, 34.4),
    "MemoryFormer-base": (1024, 128, 1.6, 10.2),
}


def test_table1_constants_are_the_printed_ones():
    assert {r.model: (r.d_model, r.num_tables, r.printed_without_attention_g, r.printed_total_g)
            for r in flops.TABLE1} == PRINTED


@pytest.mark.parametrize("model", [m for m in PRINTED if m != "MemoryFormer-small"])
def test_table1_rows_match_print(model):
    d, k, without, total = PRINTED[model]
    s = 2048
    got_total = (flops.transformer_block_flops(s, d) if k is None else flops.memoryformer_block_flops(s, d, k)) / 1e9
    got_without = got_total - flops.attention_flops(s, d) / 1e9
    assert round(got_without, 1) == without
    assert round(got_total, 1) == total
    row = next(r for r in flops.table1() if r["model"] == model)
    assert row["matches_print"] is True
    assert row["without_attention_g"] == pytest.approx(got_without, rel=1e-15)
    assert row["total_g"] == pytest.approx(got_total, rel=1e-15)


def test_memoryformer_small_is_the_papers_inconsistency():
    """The formula 2s²d + 6Ksd gives 0.906 / 7.348 G for d=768, K=96; the paper prints 1.0 / 7.4."""
    row = next(r for r in flops.table1() if r["model"] == "MemoryFormer-small")
    assert round(row["without_attention_g"], 3) == 0.906
    assert round(row["total_g"], 3) == 7.348
    assert (row["printed_without_attention_g"], row["printed_total_g"]) == (1.0, 7.4)
    assert row["matches_print"] is False
    assert [r["model"] for r in flops.table1() if not r["matches_print"]] == ["MemoryFormer-small"]


def test_formulas_exact():
    assert flops.attention_flops(2048, 512) == 2 * 2048**2 * 512
    assert flops.transformer_block_flops(2048, 512) == 2 * 2048**2 * 512 + 12 * 2048 * 512**2
    assert flops.memoryformer_block_flops(2048, 512, 64) == 2 * 2048**2 * 512 + 6 * 64 * 2048 * 512
    assert flops.linear_flops_per_token(512, 768) == 512 * 768
    assert flops.memoryformer_block_flops(1024, 512, 64) < flops.transformer_block_flops(1024, 512)


def test_table1_row_flops_default_seq_len():
    row = flops.TABLE1[0]
    assert row.flops() == row.flops(2048)
    without, total = row.flops(1024)
    assert total == flops.transformer_block_flops(1024, 512) / 1e9
    assert without == pytest.approx(12 * 1024 * 512**2 / 1e9, rel=1e-12)
