"""kernels/bench.py --quick runs end to end and writes its JSON result file (to a temp dir)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_writes_json(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "0"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "kernels" / "bench.py"), "--quick", "--threads", "1", "--runs", "2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    data = json.loads(files[0].read_text())
    for key in ("device", "device_type", "date", "versions", "peak_GBps", "bags", "hash_vs_linear", "timing"):
        assert key in data, key
    assert data["quick"] is True and data["peak_GBps"] > 0
    row = data["bags"][0]
    for key in ("regime", "dtype", "direction", "kernel", "bytes", "time_s", "GBps", "pct_peak",
                "speedup_vs_F.embedding_bag"):
        assert key in row, key
    assert {r["regime"] for r in data["bags"]} == {"memoryformer", "pkm"}
    assert {r["direction"] for r in data["bags"]} == {"fwd", "bwd"}
    assert data["hash_vs_linear"][0]["ratio_linear_over"]["nn.Linear"] == 1.0
    assert "HashMemory, row-sparse grad" in data["hash_vs_linear"][0]["fwd_bwd_ratio_linear_over"]
    assert len(data["load_average"]["before"]) == 3
    one = {r["layer"]: r for r in data["product_keys"]["one_token"]}
    assert set(one) == {"nn.Linear", "ProductKeyMemory", "MemoryPlus"} and one["nn.Linear"]["ratio_to_linear"] == 1.0
    assert one["MemoryPlus"]["bytes"] > one["ProductKeyMemory"]["bytes"] > one["nn.Linear"]["bytes"]
    assert "gate projections" in one["MemoryPlus"]["bytes_parts"]
    dram = {r["layer"]: r for r in data["product_keys"]["one_token_dram"]}
    assert set(dram) == set(one) and dram["nn.Linear"]["ratio_to_linear"] == 1.0
    assert all(r["layers_in_stack"] >= 1 and r["time_s"] > 0 for r in dram.values())
    # --runs 2: the first run's rows, and every headline ratio's spread over both runs
    assert data["runs"] == 2 and len(data["peak_GBps_all_runs"]) == 2 and "--- run 2 of 2" in proc.stdout
    key = "product keys, one token dram | ProductKeyMemory | time / Linear time"
    assert data["spread"][key]["recorded"] == dram["ProductKeyMemory"]["ratio_to_linear"]
    assert all(len(v["values"]) == 2 and v["min"] <= v["recorded"] <= v["max"] for v in data["spread"].values())
    assert any(k.startswith("HashMemory vs Linear, forward+backward | ") for k in data["spread"])
    assert "GB/s" in proc.stdout
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file
