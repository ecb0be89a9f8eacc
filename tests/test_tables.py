"""memlab.lab.tables: the one text-table formatter (CLI and notebooks) and CSV text."""
from memlab.lab.tables import MISSING, csv_text, format_table


def test_format_table_formats_columns_aligns_and_marks_missing_cells():
    rows = [{"model": "dense", "params": 123456, "recall": 0.05}, {"model": "memoryformer", "params": 7}]
    lines = format_table(rows, ["model", "params", "recall"], formats={"params": ",", "recall": ".1%"},
                         left_aligned=["model"]).splitlines()
    assert lines[0] == "model          params  recall"
    assert lines[2] == "dense         123,456    5.0%"
    assert lines[3] == f"memoryformer        7       {MISSING}"
    assert len({len(line) for line in lines}) == 1


def test_csv_text_takes_every_key_or_the_columns_asked_for():
    rows = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0, "grad_norm": 0.5}]
    assert csv_text(rows).splitlines() == ["step,loss,grad_norm", "1,2.5,", "2,2.0,0.5"]
    assert csv_text(rows, ["loss"]).splitlines() == ["loss", "2.5", "2.0"]
    assert csv_text([]) == ""
