import json
from pathlib import Path

from bench.runner_tpot import main


def test_runner_benchmark_on_cpu_records_figures_and_equal_tokens(tmp_path: Path) -> None:
    out = tmp_path / "runner.json"
    main(
        [
            "--shapes",
            "tiny",
            "--batches",
            "2,4",
            "--lowering",
            "aten",
            "--rounds",
            "1",
            "--stress-steps",
            "120",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    rows = result["shapes"][0]["rows"]
    assert all("error" not in row for row in rows), rows
    assert {row["mode"] for row in rows} == {"sync", "scheduler-async", "forward-async"}
    for batch in (2, 4):
        digests = {row["tokens_digest"] for row in rows if row["batch"] == batch}
        assert len(digests) == 1, f"modes disagree at batch {batch}"
    assert all(row["tpot_ms"] > 0 and row["device_ms"] > 0 and len(row["step_wall_ms"]) == row["steps"] for row in rows)
    assert result["stress"]["tokens_equal_to_sync"] is True
