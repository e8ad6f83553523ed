"""The README's tables that mirror the code say what the code does: the subcommands, the methods, the
backbones, every flag and its choices, and the defaults the tables state."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from contrastive.cli import apply as apply_commands
from contrastive.cli import build_parser
from contrastive.code.encoders import ENCODERS
from contrastive.config import LARGEST_DEFAULT_BATCH, SMALLEST_DEFAULT_BATCH, KnnConfig, PretrainConfig
from contrastive.image import Options as ImageOptions
from contrastive.image.augment import MULTICROP_LOCAL
from contrastive.image.backbones import BACKBONES
from contrastive.methods import METHODS
from contrastive.modality import MODALITIES
from contrastive.optim import LR_PER_SGD
from contrastive.pipeline import PipelineConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
COMMANDS: dict[str, argparse.ArgumentParser] = build_parser()._subparsers._group_actions[0].choices
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*[a-z0-9])(?![\w*-])")  # --supervised-* is a family, not a flag


def section(heading: str) -> str:
    """The README's text under `heading` (e.g. "## Command line"), up to the next heading of its level or above."""
    level = heading.split(" ", 1)[0]
    text = README.split(f"\n{heading}\n", 1)[1]
    return re.split(rf"\n#{{1,{len(level)}}} ", text, maxsplit=1)[0]


def rows(text: str) -> list[list[str]]:
    """The cells of every row of the markdown tables in `text` ("\\|" inside a cell is a literal bar)."""
    out = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"[|\s:-]+", line):
            out.append([cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return out[1:] if out and out[0][0] == "command" else out


def command_rows() -> dict[str, list[str]]:
    table = [r for r in rows(section("## Command line")) if r[0].startswith("`contrastive ")]
    return {re.match(r"`contrastive (\w+)", r[0]).group(1): r for r in table}


def flag_rows() -> dict[str, str]:
    """The pretrain flag table: its first cell -> its second."""
    return {r[0]: r[1] for r in rows(section("### `contrastive pretrain`")) if r[0] != "flag"}


def options(command: str) -> dict[str, argparse.Action]:
    return {o: a for a in COMMANDS[command]._actions for o in a.option_strings}


def test_the_command_table_lists_every_subcommand_once():
    table = [r[0] for r in rows(section("## Command line")) if r[0].startswith("`contrastive ")]
    assert sorted(command_rows()) == sorted(COMMANDS) and len(table) == len(COMMANDS)


def test_the_readme_names_every_method():
    pretrain = re.search(r"--method \{([\w,]+)\}", command_rows()["pretrain"][0]).group(1)
    assert pretrain.split(",") == list(METHODS)
    method_row = flag_rows()["`--method NAME`"]
    assert re.findall(r"`(\w+)` \(", method_row) == list(METHODS)
    introduction = README.split("\n## ", 1)[0]
    assert len(re.findall(r"\*\*[^*]+\*\*", introduction)) == len(METHODS)


def test_every_flag_in_the_tables_is_a_flag_of_its_command():
    for command, row in command_rows().items():
        missing = [f for f in FLAG.findall(" ".join(row)) if f not in options(command)]
        assert not missing, (command, missing)
    missing = [f for row in flag_rows().items() for f in FLAG.findall(" ".join(row)) if f not in options("pretrain")]
    assert not missing


def listed_choices() -> list[tuple[str, str, list[str]]]:
    """(command, flag, choices) for every `--flag {a,b}` or `--flag a|b` the tables write."""
    cells = [(c, cell) for c, row in command_rows().items() for cell in row]
    cells += [("pretrain", cell) for row in flag_rows().items() for cell in row]
    out = []
    for command, cell in cells:
        for flag, braced, barred in re.findall(r"(?<![\w-])(--[a-z-]+) (?:\{([\w,-]+)\}|([\w+-]+(?:\|[\w+-]+)+))(?=[`\s\]])", cell):
            out.append((command, flag, (braced or barred).replace("|", ",").split(",")))
    return out


def test_every_choice_list_in_the_tables_is_the_flags_choices():
    found = listed_choices()
    assert {flag for _, flag, _ in found} >= {"--method", "--views", "--optimizer", "--precision", "--format"}
    for command, flag, choices in found:
        assert list(options(command)[flag].choices) == choices, (command, flag)


def spelled(names: str) -> list[str]:
    """'resnet34/50/101/152' -> resnet34, resnet50, resnet101, resnet152."""
    stem, numbers = re.fullmatch(r"([a-z_]+?)([\d/]+)", names).groups()
    return [stem + n for n in numbers.split("/")]


def test_the_backbone_row_names_every_backbone_and_marks_the_defaults():
    described = dict(re.findall(r"`([^`]+)`(?: \(([^)]*)\))?", flag_rows()["`--backbone NAME`"]))
    named = {n for name in described if name != "timm:<name>" for n in (spelled(name) if "/" in name else [name])}
    assert named == set(BACKBONES) | set(ENCODERS)
    digits, photos = SimpleNamespace(image_size=28, channels=1), SimpleNamespace(image_size=224, channels=3)
    defaults = {MODALITIES["image"].default_backbone(data, device) for data in (digits, photos)
                for device in ("cpu", "cuda")}
    defaults |= {MODALITIES["code"].default_backbone(None, device) for device in ("cpu", "cuda")}
    assert {name for name, text in described.items() if "default" in text} == defaults


def test_the_defaults_the_tables_state_are_the_code_defaults():
    knn, pipeline = KnnConfig(), PipelineConfig()
    every = "every epoch" if knn.every == 1 else f"every {knn.every} epochs"
    assert f"weighted kNN top-1 (k={knn.k}, T={knn.temperature}, cosine)" in command_rows()["knn"][1]
    assert f"(k={knn.k}, T={knn.temperature}, {every}; every {pipeline.pretrain.knn.every} in the pipeline)" in README
    assert f"[-k {apply_commands.NEIGHBOURS}] [--sheet {apply_commands.SHEET}]" in command_rows()["similar"][0]
    assert f"default {MULTICROP_LOCAL}, none with handwriting views" in flag_rows()["`--local-crops N`"]
    assert f"(default {PretrainConfig.checkpoint_minutes:g} minutes)" in README
    batch = flag_rows()["`--epochs N`, `--batch-size B`"]
    assert f"default {LARGEST_DEFAULT_BATCH}, halved down to {SMALLEST_DEFAULT_BATCH}" in batch
    assert "SGD with momentum (default)" in flag_rows()["`--optimizer {sgd,lars,adamw}`"]
    assert "AdamW (the default for the code `bag`" in flag_rows()["`--optimizer {sgd,lars,adamw}`"]
    assert PretrainConfig.optimizer is None and ImageOptions().channels_last is True
    assert LR_PER_SGD["adamw"] == 0.1 and "at 1/10 of the SGD lr" in flag_rows()["`--optimizer {sgd,lars,adamw}`"]
    assert "(default on:" in flag_rows()["`--channels-last / --no-channels-last`"]


@pytest.mark.parametrize("flag", ["--fractions", "--draws", "--validation", "--distill-temperatures",
                                  "--distill-lr-factors", "--semi-threshold", "--semi-ratio", "--semi-weight"])
def test_the_pipeline_row_states_its_defaults(flag):
    stated = re.search(rf"`{flag} ([\d.,]+)`", command_rows()["pipeline"][1]).group(1)
    value = getattr(PipelineConfig(), flag[2:].replace("-", "_"))
    assert [float(v) for v in stated.split(",")] == [float(v) for v in (value if isinstance(value, tuple) else [value])]
