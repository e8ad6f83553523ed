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

from conftest import make_splits  # noqa: E402

import contrastive.checkpoint as checkpoint  # noqa: E402
import contrastive.train as train  # noqa: E402
from contrastive.config import PretrainConfig  # noqa: E402


def config(out: str, method: str, epochs: int, resume: bool, per_image: bool) -> PretrainConfig:
    return PretrainConfig(method=method, backbone="small_cnn", epochs=epochs, batch_size=16, lr=0.1, proj_hidden=32,
                          pred_hidden=32, queue_size=64, out=out, knn_k=10, knn_every=0, checkpoint_every=1,
                          resume=resume, augment="per-image" if per_image else "auto")


def kill_after_steps(k: int) -> None:
    real = train.build_optimizer

    def build(*args, **kwargs):
        opt, count = real(*args, **kwargs), [0]

        def after_step(*_):
            count[0] += 1
            if count[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)

        opt.register_step_post_hook(after_step)
        return opt

    train.build_optimizer = build


def kill_in_save(n: int) -> None:
    real, count = os.replace, [0]

    def replace(src, dst):
        count[0] += 1
        if count[0] == n and str(dst).endswith(".pt"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    checkpoint.os.replace = replace


def should_kill(argv: list[str]) -> bool:
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return False
    return "--kill-rank" not in argv or os.environ.get("RANK", "0") == argv[argv.index("--kill-rank") + 1]


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    out, method, epochs = argv[0], argv[1], int(argv[2])
    if "--kill-at-step" in argv and should_kill(argv):
        kill_after_steps(int(argv[argv.index("--kill-at-step") + 1]))
    if "--kill-in-save" in argv and should_kill(argv):
        kill_in_save(int(argv[argv.index("--kill-in-save") + 1]))
    cfg = config(out, method, epochs, "--resume" in argv, "--per-image" in argv)
    train.pretrain(cfg, data=make_splits(), log=lambda *_: None)
    # End as the CLI ends a torchrun worker (contrastive/cli.py main): leave the group, then
    # skip the interpreter's finalization, where gloo's teardown sometimes aborted a finished rank.
    from contrastive import distributed

    distributed.cleanup()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
