from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from contrastive.fields import add_fields, build, given, opt

# A registry filled after the dataclass is defined: choices must be read when the parser is built.
REGISTRY: list[str] = ["simclr"]


@dataclass(frozen=True)
class Budget:
    epochs: int = opt(10, "fine-tune epochs")
    lr: float = opt(0.1, "fine-tune learning rate")


@dataclass(frozen=True)
class Cfg:
    method: str = opt("simclr", "pretraining method", choices=lambda: tuple(REGISTRY))
    epochs: int = opt(30, "passes over the data", short="-e")
    lr: float | None = opt(None, "base learning rate")
    warmup: float | None = opt(None, "warmup epochs, 10% of the run")
    symmetric: bool = opt(False, "symmetric loss")
    channels_last: bool = opt(True, "channels-last layout")
    crop_scale: tuple[float, ...] = opt((0.08, 1.0), "crop area range")
    sizes: tuple[int, ...] = opt((32,), "image sizes")
    knn_k: int = opt(200, "kNN neighbours", flag="--k")
    out: str | None = opt(None, "run folder")
    lr_scaled: float | None = opt(None, "derived", cli=False)
    options: dict = opt(default_factory=dict, cli=False)
    finetune: Budget = opt(default_factory=lambda: Budget(epochs=5), help="fine-tuning budget")


@dataclass
class WithDict:
    options: dict = opt(default_factory=dict, help="per-method options")


REGISTRY.append("moco")  # after Cfg: a choice list frozen at class definition would miss it


def parser(**kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t")
    add_fields(p, Cfg, **kwargs)
    return p


def parse(argv, **kwargs) -> argparse.Namespace:
    return parser(**kwargs).parse_args(argv)


def exits_2(argv, capsys, **kwargs) -> str:
    with pytest.raises(SystemExit) as e:
        parse(argv, **kwargs)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_scalar_and_optional_types():
    got = given(parse(["-e", "3", "--lr", "0.5", "--out", "runs/x", "--warmup", "2"]), Cfg)
    assert got == {"epochs": 3, "lr": 0.5, "out": "runs/x", "warmup": 2.0}
    assert type(got["epochs"]) is int and type(got["lr"]) is float and type(got["warmup"]) is float


def test_bools_give_on_and_off_flags():
    assert given(parse(["--symmetric", "--no-channels-last"]), Cfg) == {"symmetric": True, "channels_last": False}
    assert given(parse(["--no-symmetric"]), Cfg) == {"symmetric": False}


def test_tuples_parse_from_comma_lists():
    got = given(parse(["--crop-scale", "0.2, 1", "--sizes", "28,32"]), Cfg)
    assert got == {"crop_scale": (0.2, 1.0), "sizes": (28, 32)}
    assert all(type(v) is float for v in got["crop_scale"]) and all(type(v) is int for v in got["sizes"])
    assert given(parse(["--sizes", ""]), Cfg) == {"sizes": ()}


def test_bad_tuple_exits_2_and_names_the_flag(capsys):
    err = exits_2(["--sizes", "28,big"], capsys)
    assert "--sizes" in err and "comma-separated int" in err and "'28,big'" in err


def test_help_shows_defaults_and_escapes_percent():
    text = " ".join(parser(help_defaults={"lr": "BASE_LR of the method"}).format_help().split())
    assert "passes over the data (default: 30)" in text
    assert "symmetric loss (default: off)" in text and "channels-last layout (default: on)" in text
    assert "crop area range (default: 0.08,1.0)" in text
    assert "base learning rate (default: BASE_LR of the method)" in text
    assert "run folder --finetune-epochs" in text  # a None default with no phrase: nothing shown
    assert "10% of the run" in text and "10%%" not in text
    assert "fine-tune epochs (default: 5)" in text  # the outer field's default_factory, not Budget's 10


def test_choices_from_a_callable_are_enforced(capsys):
    assert given(parse(["--method", "moco"]), Cfg) == {"method": "moco"}
    err = exits_2(["--method", "swav"], capsys)
    assert "invalid choice" in err and "'swav'" in err


def test_only_typed_flags_are_given():
    assert given(parse([]), Cfg) == {}
    args = parse(["--epochs", "30"])  # typing the default value still counts as typed
    assert given(args, Cfg) == {"epochs": 30}
    assert not hasattr(args, "lr")


def test_nested_dataclass_is_flattened():
    args = parse(["--finetune-lr", "0.5"])
    assert args.finetune_lr == 0.5
    assert given(args, Cfg) == {"finetune": {"lr": 0.5}}
    cfg = build(Cfg, None, given(args, Cfg))
    assert cfg.finetune == Budget(epochs=5, lr=0.5)  # epochs kept from the default, not reset to Budget()


def test_explicit_flags_win_over_a_preset():
    quick = Cfg(epochs=2, lr=0.3, crop_scale=(0.5, 1.0), finetune=Budget(epochs=1, lr=0.01))
    args = parse(["--epochs", "30", "--finetune-lr", "0.9", "--no-channels-last"])
    cfg = build(Cfg, quick, given(args, Cfg))
    assert cfg.epochs == 30 and cfg.finetune.lr == 0.9 and cfg.channels_last is False
    assert cfg.lr == 0.3 and cfg.crop_scale == (0.5, 1.0) and cfg.finetune.epochs == 1
    assert quick.epochs == 2 and quick.finetune.lr == 0.01  # the preset itself is untouched


def test_flag_name_override(capsys):
    args = parse(["--k", "5"])
    assert args.knn_k == 5 and given(args, Cfg) == {"knn_k": 5}
    assert "--knn-k" in exits_2(["--knn-k", "5"], capsys)


def test_cli_false_fields_are_left_off(capsys):
    assert "lr-scaled" not in parser().format_help() and "--options" not in parser().format_help()
    exits_2(["--lr-scaled", "1"], capsys)
    assert given(argparse.Namespace(lr_scaled=1.0, options={}), Cfg) == {}


def test_exclude_skips_the_flag_and_given(capsys):
    exits_2(["--out", "x"], capsys, exclude=("out",))
    p = parser(exclude=("out",))
    p.add_argument("--out", default="elsewhere")  # the CLI's own flag with the same dest
    args = p.parse_args(["--out", "y", "--lr", "1"])
    assert given(args, Cfg, exclude=("out",)) == {"lr": 1.0}


def test_prefix_and_argument_group():
    p = argparse.ArgumentParser()
    add_fields(p.add_argument_group("fine-tuning"), Budget, prefix="ft-")
    args = p.parse_args(["--ft-epochs", "4"])
    assert args.ft_epochs == 4
    assert given(args, Budget, prefix="ft-") == {"epochs": 4}
    assert given(args, Budget) == {}


def test_build_applies_overrides_to_frozen_dataclasses():
    base = Cfg()
    cfg = build(Cfg, base, {"epochs": 7, "finetune": {"epochs": 2}})
    assert (cfg.epochs, cfg.finetune.epochs, cfg.finetune.lr) == (7, 2, 0.1)
    assert base.epochs == 30 and base.finetune.epochs == 5
    assert build(Cfg) == Cfg() and dataclasses.is_dataclass(build(Cfg, overrides={}))
    assert build(Cfg, overrides={"options": {"simclr": {"t": 0.5}}}).options == {"simclr": {"t": 0.5}}


def test_build_rejects_unknown_fields():
    with pytest.raises(ValueError, match="'epoch'"):
        build(Cfg, None, {"epoch": 3})
    with pytest.raises(ValueError, match="Budget has no field 'momentum'"):
        build(Cfg, None, {"finetune": {"momentum": 0.9}})


def test_unsupported_annotation_needs_cli_false():
    with pytest.raises(TypeError, match="'options'"):
        add_fields(argparse.ArgumentParser(), WithDict)
