"""`--help` tells the truth: for every subcommand, every "(default: X)" it prints is the default of the
dataclass field the flag comes from (or of the named constant beside a hand-written flag), and the
defaults shown are the defaults a command run with no flags uses."""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from types import SimpleNamespace

import pytest

from contrastive.cli import apply as apply_commands
from contrastive.cli import build_parser
from contrastive.cli import evaluate as evaluate_commands
from contrastive.cli import export as export_commands
from contrastive.cli.pipeline import pipeline_config
from contrastive.commands import method_option_classes, pretrain_config
from contrastive.config import KnnConfig, PretrainConfig
from contrastive.evaluate.fit import DISTILL, FINETUNE, SUPERVISED
from contrastive.fields import build
from contrastive.modality import MODALITIES, option_classes
from contrastive.pipeline import PipelineConfig

PARSER = build_parser()
COMMANDS: dict[str, argparse.ArgumentParser] = PARSER._subparsers._group_actions[0].choices
DEFAULT = re.compile(r"\(default: ([^()]*)\)")

# Where the generated flags of each subcommand take their defaults; the first source that has a flag wins
# (a training budget's --batch-size before PretrainConfig's).
SOURCES = {
    "pretrain": [PretrainConfig()],
    "knn": [KnnConfig(), PretrainConfig()],
    "linear": [PretrainConfig()],
    "finetune": [FINETUNE, PretrainConfig()],
    "supervised": [SUPERVISED, PretrainConfig()],
    "distill": [DISTILL, PretrainConfig()],
    "embed": [PretrainConfig()],
    "predict": [PretrainConfig()],
    "similar": [PretrainConfig()],
    "export": [],
    "pipeline": [PipelineConfig().pretrain, PipelineConfig()],  # the pipeline's own pretraining preset
}
# Flags shared by several owners ("simclr: ... (default: 0.5); moco: ... (default: 0.2)"): the methods' options
# where a command pretrains, the modalities' everywhere (all of them, or those that reading data takes).
SHARED = {command: [method_option_classes(), option_classes()] if command in ("pretrain", "pipeline")
          else [option_classes()] for command in SOURCES}
# The hand-written flags that show a default, and the constant it is written in.
HAND_WRITTEN = {
    ("linear", "--label-fraction"): evaluate_commands.LINEAR_FRACTION,
    ("distill", "--temperature"): evaluate_commands.DISTILL_TEMPERATURE,
    ("distill", "--alpha"): evaluate_commands.DISTILL_ALPHA,
    ("embed", "--split"): evaluate_commands.EMBED_SPLIT,
    ("predict", "--split"): apply_commands.PREDICT_SPLIT,
    ("predict", "--batch-size"): apply_commands.PREDICT_BATCH,
    ("similar", "-k"): apply_commands.NEIGHBOURS,
    ("similar", "--sheet"): apply_commands.SHEET,
    ("export", "--tolerance"): export_commands.TOLERANCE,
}


def shown(value, none: str | None = None) -> str | None:
    """How a default is written after its help: switches on/off, lists comma-separated, None not at all."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return none if value is None else str(value)


def field_flags(config, prefix: str = "") -> dict[str, object]:
    """flag -> default of every field of the dataclass instance `config` that has a flag; nested dataclasses
    flattened as the command line flattens them (`finetune: Budget` -> --finetune-epochs)."""
    hints, out = typing.get_type_hints(type(config)), {}
    for f in dataclasses.fields(config):
        if not (f.init and f.metadata.get("cli", True)):
            continue
        value = getattr(config, f.name)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name]):
            out.update(field_flags(value, f"{prefix}{f.name}-".replace("_", "-")))
            continue
        for flag in (f.metadata.get("flag") or "--" + f"{prefix}{f.name}".replace("_", "-"), f.metadata.get("short")):
            if flag:
                out[flag] = value
    return out


def shared_defaults(command: str, name: str) -> list[tuple[str, str]]:
    """(owner, default shown) for every owner of the shared option `name`, in the order the help lists them."""
    out = []
    for owners in SHARED[command]:
        for owner, cls in owners.items():
            for f in dataclasses.fields(cls):
                if f.name == name and f.init and f.metadata.get("cli", True):
                    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                    out.append((owner, shown(default, "derived")))
    return out


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """What --help prints after the flag, %-escapes resolved."""
    return parser._get_formatter()._expand_help(action) if action.help else ""


def shared_shown(text: str, owners: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """The defaults the help shows in each owner's part of a shared flag's help."""
    starts = []
    for owner, _ in owners:
        found = re.compile(rf"(?:^|; ){owner}: ").search(text, starts[-1] if starts else 0)
        assert found, f"{owner} missing from {text!r}"
        starts.append(found.end())
    ends = starts[1:] + [len(text)]
    return [(owner, DEFAULT.findall(text[a:b])) for (owner, _), a, b in zip(owners, starts, ends)]


def data_notes(command: str, dest: str) -> str:
    """"; code data: 300" where a modality's pipeline_defaults change a pipeline flag's default."""
    notes = []
    for modality in MODALITIES.values() if command == "pipeline" else ():
        flat = {f"{name}_{inner}" if inner else name: value
                for name, given in modality.pipeline_defaults.items()
                for inner, value in (given.items() if isinstance(given, dict) else [("", given)])}
        if dest in flat:
            notes.append(f"; {modality.name} data: {flat[dest]}")
    return "".join(notes)


def expected_defaults(command: str, action: argparse.Action) -> list[str]:
    """The "(default: X)" values the help of `action` should show, from its dataclass field or its constant."""
    flag = action.option_strings[0]
    if action.default is not argparse.SUPPRESS:  # hand-written: a constant, or nothing to show
        if (command, flag) in HAND_WRITTEN:
            assert action.default == HAND_WRITTEN[command, flag]
            return [str(HAND_WRITTEN[command, flag])]
        return []
    for source in SOURCES[command]:
        flags = field_flags(source)
        for option in action.option_strings:
            if option in flags:
                value = shown(flags[option])
                return [] if value is None else [value + data_notes(command, action.dest)]
    raise AssertionError(f"{command} {flag}: a generated flag that is no field of {SOURCES[command]}")


def flag_actions():
    for command, parser in COMMANDS.items():
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                yield command, parser, action


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_default_shown_by_help_is_its_fields_or_its_constants(command):
    checked = 0
    for name, parser, action in flag_actions():
        if name != command:
            continue
        text = help_text(parser, action)
        generated = action.default is argparse.SUPPRESS
        field = generated and any(o in field_flags(c) for c in SOURCES[command] for o in action.option_strings)
        owners = shared_defaults(command, action.dest) if generated and not field else []
        if owners:
            assert shared_shown(text, owners) == [(o, [d]) for o, d in owners], action.option_strings
        else:
            assert DEFAULT.findall(text) == expected_defaults(command, action), (action.option_strings, text)
        checked += 1
    assert checked >= 1 or command == "export"


def test_every_hand_written_default_is_a_flag_that_shows_it():
    actions = {(c, a.option_strings[0]): a for c, _, a in flag_actions()}
    for key, value in HAND_WRITTEN.items():
        assert key in actions and actions[key].default == value, key


def test_a_command_run_without_flags_uses_the_defaults_its_help_shows():
    parse = PARSER.parse_args
    assert build(PretrainConfig, None, pretrain_config(parse(["pretrain"]))) == SOURCES["pretrain"][0]
    assert pipeline_config(parse(["pipeline"])) == PipelineConfig()
    assert pipeline_config(parse(["pipeline"])).pretrain == SOURCES["pipeline"][0]
    assert parse(["distill", "--teacher", "t"]).temperature == evaluate_commands.DISTILL_TEMPERATURE


def test_the_shared_defaults_of_the_methods_are_shown_beside_their_names(capsys):
    with pytest.raises(SystemExit):
        PARSER.parse_args(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("simclr: NT-Xent softmax temperature (SimCLR appendix B.9: 0.5 for CIFAR-10; code data: 0.2, chosen on "
            "Juliet's validation split) (default: 0.5)") in text


def test_the_pipeline_help_names_the_code_datas_fit_floor(capsys):
    with pytest.raises(SystemExit):
        PARSER.parse_args(["pipeline", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--finetune-min-steps FINETUNE_MIN_STEPS steps at least" in text
    assert text.count("(default: 100; code data: 300)") == 2  # fine-tuning and the supervised baseline


def test_the_pipeline_summary_names_the_default_label_fractions():
    text = COMMANDS["pipeline"].description
    assert re.findall(r"(\d+(?:\.\d+)?)%", text) == [f"{f * 100:g}" for f in PipelineConfig().fractions]
    assert text in " ".join(PARSER.format_help().split())  # the same line in `contrastive --help`


def expanded(text: str) -> str:
    """'resnet18/34/50' -> 'resnet18, resnet34, resnet50'."""
    def spell(match):
        stem, numbers = match.group(1), match.group(2).split("/")
        return ", ".join(stem + n for n in numbers)
    return re.sub(r"([a-z_]+)(\d+(?:/\d+)+)", spell, text)


def test_the_backbone_help_names_every_backbone_and_the_true_default():
    from contrastive.code.encoders import ENCODERS
    from contrastive.image.backbones import BACKBONES

    text = expanded(next(a.help for a in COMMANDS["pretrain"]._actions if "--backbone" in a.option_strings))
    digits = SimpleNamespace(image_size=28, channels=1)  # the embedded MNIST digits: 28 px, one channel
    registries = {"images": (BACKBONES, MODALITIES["image"].default_backbone(digits, "cpu")),
                  "source code": (ENCODERS, MODALITIES["code"].default_backbone(None, "cpu"))}
    for noun, (registry, default) in registries.items():
        helped = text.split(f"{noun}: ", 1)[1]
        for other in set(registries) - {noun}:
            helped = helped.split(f"{other}: ", 1)[0]
        assert set(registry) <= set(re.findall(r"[a-z][a-z0-9_]*", helped)), (noun, helped)
        assert re.search(r"default (\w+)", helped).group(1) == default, (noun, helped)
