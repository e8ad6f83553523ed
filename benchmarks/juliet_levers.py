"""The levers of issue 24 on the whole Juliet suite, measured on the validation split only: a SimCLR bag pretrained
under one setting, then a tuned logistic probe on its frozen features and a fine-tuned bag + linear head, each on
the pipeline's 1% label draws (the choices of the probe's C read the capped validation items, as the pipeline's do).

The pretraining here is a short loop of its own (the library's bag, views, grouped order and NT-Xent), so the
optimizer of the table can be set apart from the rest: `--embed-lr`, `--embed-wd`, `--init`. Fine-tuning is
`--ft-steps` steps of batch 178 at `--ft-lr` with the light view (5% masking), cosine schedule, no warm-up.

    python benchmarks/juliet_levers.py --data juliet:DIR --name NAME [--opt adamw --lr 1e-3 --wd 1e-4
        --embed-wd 0 --init 0.0156] [--group case|variant|none] [--temperature T] [--epochs 8]
        [--ft-opt adamw --ft-lr 0.001 --ft-steps 300] [--max-tokens 256] [--skip-pretrain: fine-tune from random init]

appends one JSON line (the settings, the command, PR-AUC of "vulnerable" on all 5,944 validation functions and
on the capped validation items, mean and sd over 3 draws) to benchmarks/results/juliet_levers.jsonl. --test also
reads the test split (for a note's ablation, never for a choice).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch import nn

from contrastive.code.baselines import chosen_logistic, class_probs
from contrastive.code.encoders import TokenBag
from contrastive.code.views import TokenRecipe, placeholder_blocks, token_view, trimmed
from contrastive.grouped import grouped_order
from contrastive.losses import nt_xent
from contrastive.modality import load_data, modality_of
from contrastive.optim import adamw
from contrastive.protocol import capped_validation, label_draws, validation_split

OUT = Path(__file__).parent / "results" / "juliet_levers.jsonl"
DATA_OPTIONS = {"task": "vulnerable", "juliet_cases": 0, "max_tokens": 256, "variants": 4, "vocab_size": 8000}


def arguments(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--group", default="variant", choices=("variant", "case", "none"))
    p.add_argument("--opt", default="sgd", choices=("sgd", "adamw"))
    p.add_argument("--lr", type=float, default=0.06)
    p.add_argument("--embed-lr", type=float, default=None, help="the table's lr (default: --lr)")
    p.add_argument("--embed-wd", type=float, default=5e-4)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--init", type=float, default=0.0, help="0: PyTorch's N(0, 1); else uniform(+-init)")
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--max-tokens", type=int, default=256, help="tokens per function (the code data's --max-tokens)")
    p.add_argument("--skip-pretrain", action="store_true")
    p.add_argument("--ft-opt", default="adamw", choices=("sgd", "adamw"))
    p.add_argument("--ft-lr", type=float, default=0.001)
    p.add_argument("--ft-steps", type=int, default=300)
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--test", action="store_true")
    p.add_argument("--out", type=Path, default=OUT, help="the JSON-lines file a row is appended to")
    return p.parse_args(argv)


def groups_for(kind: str, data, train, tr):
    if kind == "variant":
        return [modality_of(data).groups(data.train)[i] for i in tr.tolist()]
    return modality_of(data).batch_families(train)


def optimizer(kind: str, params_embed, params_rest, lr, embed_lr, wd, embed_wd):
    groups = [dict(params=params_embed, weight_decay=embed_wd, lr=embed_lr, base=embed_lr),
              dict(params=[q for q in params_rest if q.ndim > 1], weight_decay=wd, lr=lr, base=lr),
              dict(params=[q for q in params_rest if q.ndim <= 1], weight_decay=0.0, lr=lr, base=lr)]
    return torch.optim.SGD(groups, momentum=0.9) if kind == "sgd" else adamw(groups, 1e-3)


def set_lr(opt, multiplier: float) -> None:
    for group in opt.param_groups:
        group["lr"] = group["base"] * multiplier


def pretrain(a, enc, train, families, blocks) -> None:
    proj = nn.Sequential(nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 128))
    rest = [q for q in list(enc.parameters()) + list(proj.parameters()) if q is not enc.embed.weight]
    opt = optimizer(a.opt, [enc.embed.weight], rest, a.lr, a.embed_lr or a.lr, a.wd, a.embed_wd)
    batch, g = 256, torch.Generator().manual_seed(1)
    steps = len(train) // batch
    total, warm, step = steps * a.epochs, max(1, steps * a.epochs // 10), 0
    for epoch in range(a.epochs):
        order = torch.randperm(len(train), generator=g) if families is None else grouped_order(families, g)
        for b in range(steps):
            x = train.tokens[order[b * batch:(b + 1) * batch]]
            v1, v2 = trimmed([token_view(x, TokenRecipe(), g, blocks) for _ in range(2)])
            progress = (step - warm) / max(1, total - warm)
            set_lr(opt, (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * progress)))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                z = proj(enc(torch.cat([v1, v2]))).float()
            loss = nt_xent(z[:len(x)], z[len(x):], a.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        print(f"epoch {epoch + 1} loss {loss.item():.4f}", flush=True)


@torch.no_grad()
def encode(model, items) -> torch.Tensor:
    model.eval()
    return torch.cat([model(items.tokens[i:i + 2048, 0]).float() for i in range(0, len(items), 2048)])


def summary(values: list[float]) -> list[float]:
    return [round(float(np.mean(values)), 4), round(float(np.std(values, ddof=1)), 4)]


def main(argv=None):
    a = arguments(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    t0 = time.time()
    data = load_data(a.data, {**DATA_OPTIONS, "max_tokens": a.max_tokens})
    tr, va = validation_split(data.train.labels, 0.1, seed=0, groups=modality_of(data).groups(data.train))
    train, val, test = data.train.subset(tr), data.train.subset(va), data.test
    blocks = placeholder_blocks(list(data.vocab))
    enc = TokenBag(len(data.vocab))
    if a.init:
        nn.init.uniform_(enc.embed.weight, -a.init, a.init)
    if not a.skip_pretrain:
        pretrain(a, enc, train, None if a.group == "none" else groups_for(a.group, data, train, tr), blocks)
    start = {k: v.clone() for k, v in enc.state_dict().items()}
    draws = label_draws(train.labels, 0.01, a.draws, seed=0)
    keep = capped_validation(val.labels, len(draws[0]), seed=0).numpy()
    yt, yv, ys = (s.labels.numpy() for s in (train, val, test))
    feats = [encode(enc, s).numpy() for s in (train, val, test)]
    mean, sd = feats[0].mean(0), feats[0].std(0) + 1e-6
    feats = [(f - mean) / sd for f in feats]
    out: dict[str, list[float]] = {}
    for d, idx in enumerate(draws):
        idx = idx.numpy()
        if not a.skip_pretrain:
            model, _ = chosen_logistic(feats[0][idx], yt[idx], feats[1][keep], yv[keep], 2, seed=d, positive=1)
            pv = class_probs(model, feats[1], 2)[:, 1]
            out.setdefault("probe_val", []).append(average_precision_score(yv == 1, pv))
            out.setdefault("probe_capped_val", []).append(average_precision_score(yv[keep] == 1, pv[keep]))
            if a.test:
                out.setdefault("probe_test", []).append(
                    average_precision_score(ys == 1, class_probs(model, feats[2], 2)[:, 1]))
        torch.manual_seed(d)
        enc.load_state_dict(start)
        net = nn.Sequential(enc, nn.Linear(256, 2))
        rest = [q for q in net.parameters() if q is not enc.embed.weight]
        opt = optimizer(a.ft_opt, [enc.embed.weight], rest, a.ft_lr, a.ft_lr, 5e-4, 0.0)
        g = torch.Generator().manual_seed(d)
        x, y = train.tokens[idx], train.labels[idx]
        net.train()
        for step in range(a.ft_steps):
            set_lr(opt, 0.5 * (1 + math.cos(math.pi * step / a.ft_steps)))
            b = torch.randint(0, len(idx), (178,), generator=g)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                view = trimmed([token_view(x[b], TokenRecipe(mask_rate=0.05), g, blocks)])[0]
                loss = F.cross_entropy(net(view).float(), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        pv = encode(net, val).softmax(1)[:, 1].numpy()
        out.setdefault("finetune_val", []).append(average_precision_score(yv == 1, pv))
        out.setdefault("finetune_capped_val", []).append(average_precision_score(yv[keep] == 1, pv[keep]))
        if a.test:
            out.setdefault("finetune_test", []).append(
                average_precision_score(ys == 1, encode(net, test).softmax(1)[:, 1].numpy()))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
    command = "python benchmarks/juliet_levers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    row = {"name": a.name, "settings": settings, "command": command, "seconds": round(time.time() - t0),
           **{k: summary(v) for k, v in out.items()}}
    print(json.dumps(row), flush=True)
    with a.out.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
