"""Runs a tiny pretraining in a child process and kills it with SIGKILL at a chosen moment.

    python tests/fault_driver.py OUT METHOD EPOCHS [--kill-at-step K | --kill-in-save N] [--resume] [--per-image]

--kill-at-step K: SIGKILL right after the K-th optimizer step (mid-epoch, nothing flushed).
--kill-in-save N: SIGKILL during the N-th checkpoint write, after the temporary file is
written and before it is renamed into place.

Under torchrun (python -m torch.distributed.run ... tests/fault_driver.py ...) the kill
happens only on the first attempt and, with --kill-rank R, only on rank R, so
`--max-restarts` brings the run back.
"""

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_splits, tiny_config  # noqa: E402

import contrastive.files as files  # noqa: E402
import contrastive.train as train  # noqa: E402


def config(out: str, method: str, epochs: int, resume: bool, per_image: bool):
    return tiny_config(out, method, knn_every=0, epochs=epochs, checkpoint_every=1, resume=resume,
                       data_options={"augment": "per-image" if per_image else "auto"})


class KillAfterSteps(train.Callback):
    """SIGKILL right after the k-th step of this process (nothing of that step is saved yet)."""

    def __init__(self, k: int):
        self.k, self.count = k, 0

    def on_step(self, run, loss, finite):
        self.count += 1
        if self.count == self.k:
            os.kill(os.getpid(), signal.SIGKILL)


def kill_in_save(n: int) -> None:
    real, count = os.replace, [0]

    def replace(src, dst):
        if str(dst).endswith(".pt"):  # config.json goes through the same writer
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    files.os.replace = replace


def should_kill(argv: list[str]) -> bool:
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return False
    return "--kill-rank" not in argv or os.environ.get("RANK", "0") == argv[argv.index("--kill-rank") + 1]


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    out, method, epochs = argv[0], argv[1], int(argv[2])
    callbacks = []
    if "--kill-at-step" in argv and should_kill(argv):
        callbacks.append(KillAfterSteps(int(argv[argv.index("--kill-at-step") + 1])))
    if "--kill-in-save" in argv and should_kill(argv):
        kill_in_save(int(argv[argv.index("--kill-in-save") + 1]))
    cfg = config(out, method, epochs, "--resume" in argv, "--per-image" in argv)
    train.pretrain(cfg, data=make_splits(), log=lambda *_: None, callbacks=callbacks)
    # End as the CLI ends a torchrun worker (contrastive/cli/__init__.py main): leave the group, then
    # skip the interpreter's finalization, where gloo's teardown sometimes aborted a finished rank.
    from contrastive import distributed

    distributed.cleanup()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
