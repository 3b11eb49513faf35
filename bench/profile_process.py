"""One process of the decode-step profiler seen from the driver: started early so that it imports vLLM while the
previous process still runs, told to go (a file appears) once that process has exited, then collected into the
record's entry. Only imports overlap: a process builds its LLM, captures and measures alone on the device (a
capture's graph memory is read from the device's free memory, which another process's start or exit would move).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from bench.gpu_serve import CAPTURE_LINE, OUR_CAPTURE_LINE, _env
from bench.profile_plan import Job

CHILD = Path(__file__).resolve().with_name("profile_child.py")


def capture_lines(log_text: str) -> dict[str, list[dict[str, float]]]:
    """vLLM's "Graph capturing finished" lines (whole seconds, GiB) and ascend_graph's capture lines."""
    vllm_lines = [{"seconds": float(s), "gib": float(g)} for s, g in CAPTURE_LINE.findall(log_text)]
    ours = [
        {"sizes": int(sizes), "seconds": float(seconds), "pool_gib": float(gib)}
        for sizes, _kind, _set, seconds, gib in OUR_CAPTURE_LINE.findall(log_text)
    ]
    return {"capture_logged": vllm_lines, "ascend_graph_capture_logged": ours}


def check_plugin(job: Job, result: dict[str, Any]) -> str | None:
    """Why this process is no valid figure of its configuration (ascend_graph's platform active where it must not
    be, or the reverse), or None."""
    expected = job.config.plugin_expected()
    active = str(result.get("platform", "")).startswith("AscendGraph")
    if expected is not None and active != expected:
        return f"ascend_graph platform active: {active}, expected {expected} for {job.config.name}"
    return None


@dataclasses.dataclass
class ChildProcess:
    job: Job
    index: int
    process: subprocess.Popen
    log: IO[str]
    log_path: Path
    result_path: Path
    go_path: Path
    went_at: float | None = None

    @classmethod
    def launch(cls, job: Job, index: int, settings: dict[str, Any], log_dir: Path) -> ChildProcess:
        """Start the process; it imports vLLM, then waits for its go file."""
        work = Path(settings["work"])
        tag = f"{index:02d}-{job.model}-{job.config.name}-r{job.repeat}"
        tag = "".join(char if char.isalnum() or char in "-_." else "_" for char in tag)
        paths = {"result_path": work / f"result-{index}.json", "go_path": work / f"go-{index}"}
        job_path = work / f"job-{index}.json"
        child = {**settings, "model": job.model, "model_dir": settings["model_dirs"][job.model]}
        child.update({"config": job.config.as_dict(), **{key: str(path) for key, path in paths.items()}})
        job_path.write_text(json.dumps(child))
        env = _env(job.config.with_ag)
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        log_path = log_dir / f"{tag}.log"
        log = open(log_path, "w")  # noqa: SIM115 - open for the process's whole life, closed in collect()
        # cwd outside the checkout: nothing of it may be found as an installed distribution
        command = [sys.executable, str(CHILD), str(job_path)]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        return cls(job, index, process, log, log_path, **paths)

    def go(self) -> None:
        self.went_at = time.time()
        self.go_path.touch()

    def stop(self) -> None:
        """A process that will not run (the deadline came first): end it and close its log."""
        self.process.kill()
        self.process.wait()
        self.log.close()

    def collect(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the process; its record entry: figures (those it finished, if it failed part way) or the error.
        `wall_s` counts from its go: the part of its life no other process's measuring overlaps."""
        try:
            self.process.wait(timeout=timeout_s)
            failure = f"exit status {self.process.returncode}" if self.process.returncode else None
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            failure = f"timed out after {timeout_s:.0f} s"
        self.log.close()
        job = self.job
        entry: dict[str, Any] = {"model": job.model, "config": job.config.name, "repeat": job.repeat}
        entry.update(index=self.index, wall_s=round(time.time() - (self.went_at or time.time()), 1))
        log_text = self.log_path.read_text(errors="replace")
        entry.update(capture_lines(log_text))
        if self.result_path.exists():
            entry.update(json.loads(self.result_path.read_text()))
        failure = failure or check_plugin(job, entry)
        if failure:
            entry["error"] = f"{failure}; log {self.log_path}:\n{log_text[-2500:]}"
        return entry
