"""`python -m memlab compare` runs end to end at a small size and writes its JSON."""
import json

from memlab.__main__ import main


def test_compare_small(tmp_path, capsys):
    out = tmp_path / "compare.json"
    code = main(["compare", "--d-model", "64", "--n-keys", "16", "--topk", "4", "--tokens", "1", "8",
                 "--rounds", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "FAIL" not in printed
    result = json.loads(out.read_text())
    names = [m["name"] for m in result["modules"]]
    assert names == ["nn.Linear", "HashMemory", "MemoryBlock", "ProductKeyMemory", "MemoryPlus"]
    for m in result["modules"]:
        assert set(m["ratio_to_linear"]) == {"1", "8"}
        assert m["flops_per_token"] > 0
    assert result["modules"][0]["ratio_to_linear"]["1"] == 1.0
    assert all(c["passed"] is not False for c in result["checks"])
