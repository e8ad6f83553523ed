"""The `profile` job: where one training step of ours (and of lightly) spends its time (torch.profiler), method
by method, as ranges (data, forward, backward, optimizer, target update, and the forward of each top-level
submodule) and the top ops by self CPU time; then, unless --no-layout-check, our encoder alone in NCHW against
channels_last."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from contrastive.config import KnnConfig, PretrainConfig
from contrastive.image import backbones as our_backbones

from .common import OURS_BACKBONE, fmt, say
from .data import class_subset, ensure_cifar, load_ours
from .lightly_models import build_lightly, lightly_transform


class ModuleRanges:
    """Profiler ranges around the forward of each top-level submodule (encoder, projector, ...)."""

    def __init__(self, model: nn.Module):
        self.handles, self.open = [], []
        for name, child in model.named_children():
            if any(True for _ in child.parameters()):
                self.handles.append(child.register_forward_pre_hook(self._enter(f"fwd {name}")))
                self.handles.append(child.register_forward_hook(self._exit))

    def _enter(self, label):
        def hook(module, inputs):
            r = torch.profiler.record_function(label)
            r.__enter__()
            self.open.append(r)
        return hook

    def _exit(self, module, inputs, output):
        self.open.pop().__exit__(None, None, None)

    def remove(self):
        for h in self.handles:
            h.remove()


def profile_steps(model, next_views, loss_of, optimizer, after_step, steps, bf16):
    from torch.profiler import ProfilerActivity, profile, record_function

    ranges = ModuleRanges(model)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(steps):
            with record_function("step"):
                with record_function("data: load + augment"):
                    views = next_views()
                with record_function("forward (model + loss)"), \
                        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = loss_of(views)
                with record_function("backward"):
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                with record_function("optimizer step"):
                    optimizer.step()
                with record_function("momentum / target update"):
                    after_step(s)
                loss.item()
    ranges.remove()
    events = prof.key_averages()
    by_name = {e.key: e for e in events}
    labels = ["step", "data: load + augment", "forward (model + loss)", "backward", "optimizer step",
              "momentum / target update"] + sorted(k for k in by_name if k.startswith("fwd "))
    ms = {k: by_name[k].cpu_time_total / 1e3 / steps for k in labels if k in by_name}
    top = sorted((e for e in events if not e.key.startswith(("step", "data:", "forward", "backward", "optimizer",
                                                             "momentum", "fwd ", "ProfilerStep"))),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return ms, [(e.key, e.self_cpu_time_total / 1e3 / steps, e.count // steps) for e in top]


def layout_check(batch: int, reps: int = 3) -> dict:
    """Images/s of one forward + backward of our default encoder (torchvision ResNet-18, CIFAR stem) on
    `batch` images, NCHW (what pretrain runs today) against channels_last, in bf16 autocast and fp32."""
    out = {}
    for precision in ("bf16", "fp32"):
        for layout in ("nchw", "channels_last"):
            torch.manual_seed(0)
            enc, _ = our_backbones.build_backbone("resnet18", 3, cifar_stem=True)
            x = torch.randn(batch, 3, 32, 32)
            if layout == "channels_last":
                enc, x = enc.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            best = math.inf
            for i in range(reps + 1):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = enc(x).float().square().mean()
                loss.backward()
                if i:  # the first pass is a warm-up
                    best = min(best, time.perf_counter() - t)
            out[f"{precision} {layout}"] = batch / best
    return out


def profile_ours(method: str, data, args) -> tuple[str, dict, list]:
    """Our step from library functions, in pretrain's order: setup (resolved config, model in its memory
    layout, optimizer, views), epoch_batches (the fast path), the method's forward with its loss, backward,
    SGD step, update_target."""
    from contrastive.train import epoch_batches, setup

    out = Path(tempfile.mkdtemp(prefix=f"profile-{method}-", dir=os.environ.get("BENCH_TMP", "/tmp")))
    cfg = PretrainConfig(method=method, data=data.name, batch_size=args.batch, precision=args.ours_precision,
                         backbone=OURS_BACKBONE, device="cpu", knn=KnnConfig(every=0), out=str(out / "run"))
    try:
        run = setup(cfg, data, log=lambda *a, **k: None)  # claims the run folder; nothing is written to it here
        model = run.model.train()
        batches = epoch_batches(run, 0)
        total = args.steps + 1

        def steps_of(steps):
            return profile_steps(model, lambda: next(batches)[0], lambda v: run.forward(v)[0], run.optimizer,
                                 lambda s: model.update_target(s / total), steps, run.cfg.precision == "bf16")

        steps_of(1)  # one untimed step first (allocator, oneDNN kernels)
        return run.cfg.precision, *steps_of(args.steps)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def profile_lightly(method: str, train_dir: Path, args) -> tuple[dict, list]:
    from lightly.data import LightlyDataset

    model = build_lightly(method, args.lightly_arch).train()
    optimizer = torch.optim.SGD(model.trainable(), lr=0.06 * args.batch / 128, momentum=0.9, weight_decay=5e-4)
    loader = iter(torch.utils.data.DataLoader(
        LightlyDataset(input_dir=str(train_dir), transform=lightly_transform(method)),
        batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.lightly_workers))

    def run(steps):
        return profile_steps(model, lambda: next(loader)[0], lambda v: model.training_loss(*v), optimizer,
                             lambda s: None, steps, args.lightly_precision == "bf16")

    run(1)
    return run(args.steps)


def cmd_profile(args, results):
    """Per-step time split of our loop and of the lightly loop, method by method."""
    root = ensure_cifar(Path(args.data_root), args.archive)
    train_root = class_subset(root, args.per_class) if args.per_class else root
    data = load_ours(f"folder:{train_root / 'train'}")[0]
    for method in args.methods.split(","):
        precision, ours, ours_top = profile_ours(method, data, args)
        theirs, theirs_top = profile_lightly(method, train_root / "train", args)
        results.add(part="profile", method=method, batch=args.batch, steps=args.steps,
                    ours_precision=precision, lightly_precision=args.lightly_precision,
                    lightly_workers=args.lightly_workers, ours_ms=ours, lightly_ms=theirs,
                    ours_top_ops=ours_top, lightly_top_ops=theirs_top)
        say(f"\n{method}: ms per step (batch {args.batch}, mean of {args.steps} profiled steps; ranges nest: "
            f"'fwd <module>' lie inside 'forward', the EMA update of lightly lies inside its forward)")
        say(f"| range | ours ({precision}) | lightly ({args.lightly_precision}, {args.lightly_workers} workers) |")
        say("| --- | --- | --- |")
        for k in dict.fromkeys(list(ours) + list(theirs)):
            say(f"| {k} | {fmt(ours.get(k), 0)} | {fmt(theirs.get(k), 0)} |")
        for title, top in (("ours", ours_top), ("lightly", theirs_top)):
            say(f"\n{title}: top ops by self CPU time, ms per step (calls per step)")
            say("| op | ms | calls |\n| --- | --- | --- |")
            for name, t, c in top:
                say(f"| {name} | {t:.0f} | {c} |")
    if args.layout_check:
        rates = layout_check(2 * args.batch)
        results.add(part="layout_check", images=2 * args.batch, images_per_s=rates)
        say(f"\nour encoder alone, forward + backward of {2 * args.batch} images (SimCLR's concatenated views), "
            "best of 3, images/s")
        say("| precision | NCHW (today) | channels_last | gain |\n| --- | --- | --- | --- |")
        for precision in ("bf16", "fp32"):
            a, b = rates[f"{precision} nchw"], rates[f"{precision} channels_last"]
            say(f"| {precision} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
