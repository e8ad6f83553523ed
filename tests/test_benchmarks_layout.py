"""benchmarks/lightly_compare.py and its parts (benchmarks/vs_lightly/, issue 23 item 7): every part loads
without lightly, the command line is the one BENCHMARKS.md uses, no file or function outgrows a sitting, and
the max-pool ResNet-18 of part 2 is built without writing to the package's backbone registry."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastive.image.backbones import BACKBONES, build_backbone

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PARTS = BENCHMARKS / "vs_lightly"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from vs_lightly import backbones, cli, ours  # noqa: E402

SUBCOMMANDS = ("prepare", "peak", "throughput", "quality-epochs", "quality-time", "profile")


@pytest.mark.slow
def test_every_part_and_every_help_loads_without_lightly():
    """lightly is imported only inside the functions that train or build lightly's side."""
    parts = sorted(p.stem for p in PARTS.glob("*.py") if p.stem != "__init__")
    script = textwrap.dedent(f"""
        import importlib, runpy, sys
        class NoLightly:
            def find_spec(self, name, path=None, target=None):
                if name == "lightly" or name.startswith("lightly."):
                    raise ImportError("lightly is blocked in this test")
        sys.meta_path.insert(0, NoLightly())
        sys.path.insert(0, {str(BENCHMARKS)!r})
        for part in {parts!r}:
            importlib.import_module("vs_lightly." + part)
        for command in {list(SUBCOMMANDS)!r} + [None]:
            sys.argv = ["lightly_compare.py"] + ([command] if command else []) + ["--help"]
            try:
                runpy.run_path({str(BENCHMARKS / "lightly_compare.py")!r}, run_name="__main__")
            except SystemExit as e:
                assert e.code == 0, (command, e.code)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_the_documented_commands_still_parse():
    """The commands BENCHMARKS.md gives (and the subcommands' defaults the records depend on)."""
    p = cli.parser()
    assert set(p._subparsers._group_actions[0].choices) == set(SUBCOMMANDS)
    a = p.parse_args("throughput --warmup 3 --steps 20 --workers 0 --methods simclr,moco,byol".split())
    assert (a.command, a.warmup, a.steps, a.workers, a.methods, a.batch) == ("throughput", 3, 20, "0", "simclr,moco,byol", 256)
    a = p.parse_args("quality-epochs --per-class 1000 --epochs 5".split())
    assert (a.per_class, a.epochs, a.lightly_workers, a.results) == (1000, 5, 2, str(cli.DEFAULT_RESULTS))
    assert cli.DEFAULT_RESULTS == BENCHMARKS / "results" / "lightly_compare.jsonl"
    a = p.parse_args("quality-time --per-class 1000 --minutes 10".split())
    assert (a.minutes, a.calibration_steps) == (10.0, 5)
    assert p.parse_args(["profile"]).layout_check is True
    assert set(cli.JOBS) == set(SUBCOMMANDS)


@pytest.mark.parametrize("path", sorted(PARTS.glob("*.py")) + [BENCHMARKS / "lightly_compare.py"], ids=lambda p: p.name)
def test_files_and_functions_stay_short(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 300
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}:{node.lineno} {node.name}"


def test_the_maxpool_variant_leaves_the_package_registry_unchanged():
    before = dict(BACKBONES)
    net, dim = backbones.resnet18_stem3_maxpool()
    assert dim == 512 and isinstance(net.maxpool, nn.MaxPool2d) and net.conv1.kernel_size == (3, 3)
    lightly_side, _ = backbones.lightly_backbone("simclr", "maxpool")  # lightly's part-2 network (no lightly needed)
    assert isinstance(lightly_side.maxpool, nn.MaxPool2d)
    stock, _ = build_backbone("resnet18", 3, cifar_stem=True)
    assert backbones.keep_maxpool(stock) == 1
    assert BACKBONES == before and all(BACKBONES[k] is before[k] for k in before)
    assert backbones.MAXPOOL_BACKBONE not in BACKBONES
    for path in PARTS.glob("*.py"):  # and no part names the registry in its code (docstrings aside)
        names = {n.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Name)}
        attrs = {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}
        assert "BACKBONES" not in names | attrs, path.name


def test_our_resnet18_with_its_maxpool_back_is_the_variant():
    """Same seed, same weights, same features: training our resnet18 + KeepMaxPool is training the variant
    (what the removed registry entry gave pretrain), and the max-pool changes the features."""
    torch.manual_seed(0)
    variant, _ = backbones.resnet18_stem3_maxpool()
    torch.manual_seed(0)
    ours_net, _ = build_backbone("resnet18", 3, cifar_stem=True)
    x = torch.randn(2, 3, 32, 32)
    without = ours_net.eval()(x)
    backbones.keep_maxpool(ours_net)
    a, b = variant.state_dict(), ours_net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(variant.eval()(x), ours_net(x))
        assert not torch.allclose(without, ours_net(x))


def test_keep_maxpool_reaches_the_momentum_copies():
    model = ours.our_model_for_flops("byol", batch=8)  # online encoder + its EMA copy
    assert backbones.keep_maxpool(model) == 2
    resnets = [m for m in model.modules() if isinstance(m, type(model.encoder))]
    assert len(resnets) == 2 and all(isinstance(m.maxpool, nn.MaxPool2d) for m in resnets)


def test_one_step_of_ours_on_the_maxpool_network(monkeypatch, tmp_path):
    """pretrain() with the KeepMaxPool callback: the trained encoder is the variant; the registry untouched."""
    from vs_lightly.data import fake_cifar

    monkeypatch.setenv("BENCH_TMP", str(tmp_path))
    before = dict(BACKBONES)
    r = ours.run_ours("simclr", fake_cifar(8), batch=8, steps=1, maxpool=True, precision="fp32")
    assert r["steps"] == 1 and isinstance(r["model"].encoder.maxpool, nn.MaxPool2d)
    assert BACKBONES == before
