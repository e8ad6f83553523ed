"""torchrun end to end on the CPU (gloo, 2 processes): a pretraining run whose checkpoint
`contrastive knn` reads, and a run that loses a process and is brought back by
`--max-restarts` to the same weights as a run that never failed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastive.checkpoint import list_checkpoints, load_checkpoint
from contrastive.cli import main

pytestmark = pytest.mark.slow  # each test starts torchrun: two processes, tens of seconds

DRIVER = Path(__file__).parent / "fault_driver.py"


def torchrun(*args: str, restarts: int = 0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", str(restarts), *args]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def test_two_process_pretraining_writes_a_checkpoint_that_knn_reads(tmp_path, capsys):
    out = tmp_path / "run"
    done = torchrun("-m", "contrastive", "pretrain", "--epochs", "1", "--batch-size", "64", "--train-limit", "512",
                    "--knn-every", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch 64 (2 x 32)" in done.stdout and "2 processes" in done.stdout
    assert done.stdout.count("run folder:") == 2  # rank 0 only: one line from the loop, one from the command
    ckpt = load_checkpoint(out / "checkpoint-epoch0001.pt")
    assert ckpt["step"] == 512 // 64 and ckpt["config"]["batch_size"] == 64
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert round(epoch["items_per_s"] * epoch["epoch_seconds"]) == 512  # the rate counts both processes' items
    assert main(["knn", "--checkpoint", str(out / "checkpoint-epoch0001.pt")]) == 0
    assert "kNN top-1" in capsys.readouterr().out


def test_the_pipeline_pretrains_on_both_processes_and_finishes_on_rank_0_alone(tmp_path):
    out = tmp_path / "run"
    done = torchrun("-m", "contrastive", "pipeline", "--quick", "--fractions", "0.1", "--draws", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch" in done.stdout and "2 processes" in done.stdout  # pretraining shared the batch
    ends = [line for line in done.stdout.splitlines() if line.startswith("wall time of the whole pipeline")]
    assert done.stdout.count("| labels |") == 1 and len(ends) == 1  # the table and the end: once, from rank 0
    assert done.stdout.count("stage fraction 0.1") == 1  # not fitted twice
    assert (out / "results.json").is_file() and (out / "classifiers" / "distill-0.1.pt").is_file()


@pytest.mark.parametrize("method", ["moco"])
def test_a_killed_rank_is_restarted_and_resumes_to_the_same_weights(tmp_path, method):
    straight = torchrun(str(DRIVER), str(tmp_path / "straight"), method, "2")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = torchrun(str(DRIVER), str(tmp_path / "killed"), method, "2", "--kill-at-step", "6", "--kill-rank", "1",
                      restarts=1)
    assert killed.returncode == 0, killed.stderr[-3000:]
    a = load_checkpoint(list_checkpoints(tmp_path / "straight")[0])
    b = load_checkpoint(list_checkpoints(tmp_path / "killed")[0])
    assert a["step"] == b["step"] == 2 * (64 // 16)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
