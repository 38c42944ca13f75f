"""bnspec.bench: GB/s, fraction of copy bandwidth and targets from a hand-written pytest-benchmark JSON."""

import json

from bnspec.report import bench


def _b(shape, mode, impl, median, nbytes):
    return {"stats": {"median": median, "rounds": 5},
            "extra_info": {"shape": shape, "mode": mode, "impl": impl, "bytes": nbytes, "device": "cpu"}}


def test_throughput_and_fraction_of_copy(tmp_path):
    big = bench.BIG
    n = 100_000_000  # bytes of the tensor
    doc = {"datetime": "2026-01-01T00:00:00", "machine_info": {"cpu": {"brand_raw": "X", "count": 2}},
           "benchmarks": [
               _b(big, "copy", "copy_numpy", 0.010, 2 * n),          # 20 GB/s
               _b(big, "copy", "stream_tf", 0.008, 2 * n),           # 25 GB/s: the reference
               _b(big, "inference", "fused", 0.010, 2 * n),          # 20 GB/s = 80% of 25
               _b(big, "training", "fused", 0.030, 3 * n),           # 10 GB/s = 40%
               _b(big, "training", "keras_function", 0.020, 3 * n),
               _b(big, "training", "explicit_xla", 0.030, 3 * n),    # 1.5x the Keras layer: missed
               _b(big, "training", "keras_xla", 0.020, 3 * n),
           ]}
    d = tmp_path / "history" / "Linux"
    d.mkdir(parents=True)
    (d / "0001_x.json").write_text(json.dumps(doc))
    text = "\n".join(bench.render(bench.load(bench.latest(tmp_path / "history"))))
    assert "copy bandwidth 25.0 GB/s" in text
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    assert ["inference", "fused", "10.000", "20.00", "80%"] in [c[:5] for c in cells]
    assert "= 80% of copy (target 60%): **met**" in text
    assert "= 60% of copy (target 40%): **met**" in text  # keras_function: 3n / 0.02 s = 15 GB/s
    assert "1.50x the time (target <= 1.25x): **missed**. Why:" in text
