"""The modality contract: what a kind of data provides, so methods, the loop and evaluation need not know it.

A modality (images; token sequences of source code) subclasses `Modality` and is registered by one
line in contrastive.modality. Every abstract member below is required: a modality that lacks one
cannot be instantiated, so the package fails at import, not in the middle of a run. The members
with a body are optional and say what a modality without them does.

Options: a frozen dataclass of the modality's flags (sizes, view strength, ...). Reading data takes
it as typed (`options(given)`, None for defaults the data decides); `resolve` fills those in for
the data, and the run holds, logs and saves that instance.
"""

from __future__ import annotations

import abc
import dataclasses

import torch

from contrastive.batches import Views, ViewSpec
from contrastive.errors import ContrastiveError
from contrastive.fields import options_from


class Modality(abc.ABC):
    # --- names and help (plain class attributes in a modality) -----------------------------------

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """"image": the key of the registry, saved with every encoder."""

    @property
    @abc.abstractmethod
    def noun(self) -> str:
        """What the items are called in messages ("images")."""

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """The data in words, for messages about its options ("image data")."""

    @property
    @abc.abstractmethod
    def specs(self) -> str:
        """The --data specs it reads, for messages."""

    @property
    @abc.abstractmethod
    def specs_help(self) -> str:
        """The same, for --help."""

    @property
    @abc.abstractmethod
    def backbones_help(self) -> str:
        """Its encoders, for --help."""

    @property
    @abc.abstractmethod
    def load_options(self) -> tuple[str, ...]:
        """Names of its Options that reading data takes (every command that reads data has them)."""

    @property
    @abc.abstractmethod
    def Options(self) -> type:  # noqa: N802 (a class)
        """The frozen dataclass of its flags."""

    # --- data and options ---------------------------------------------------------------------

    @abc.abstractmethod
    def claims(self, spec: str | None) -> bool:
        """Whether a --data spec is its own."""

    @abc.abstractmethod
    def load(self, spec: str | None, options, inputs: dict | None = None):
        """The data (.train / .test sets of items: len, labels, subset, in_memory / take for the batched
        path; .name, .num_classes, .classes, .positive_class). options: its Options as typed; inputs: an
        encoder's record, to read the data as that encoder reads it, or None."""

    @abc.abstractmethod
    def resolve(self, options, data):
        """Its Options for this data, every default filled in."""

    def options(self, given) -> object:
        """`given` as its Options: an instance as it is, a dict of typed options over the defaults (a key
        that is not one of its options is a one-line error)."""
        if isinstance(given, self.Options):
            return given
        if dataclasses.is_dataclass(given):
            raise ContrastiveError(f"options of another kind of data given to {self.kind}")
        return options_from(self.Options, dict(given or {}), self.kind)

    # --- encoders -----------------------------------------------------------------------------

    @abc.abstractmethod
    def default_backbone(self, data, device_type: str = "cpu") -> str:
        """The encoder to use when --backbone is not given."""

    def default_optimizer(self, backbone: str) -> str:
        """The pretraining optimizer when --optimizer is not given: sgd unless the backbone asks for another."""
        return "sgd"

    @abc.abstractmethod
    def encoder_inputs(self, data, options) -> dict:
        """What rebuilding the encoder and reading its inputs needs (saved in every checkpoint, opaque to
        everyone else); options: resolved."""

    @abc.abstractmethod
    def build_encoder(self, backbone: str, inputs: dict):
        """(module, feature width)."""

    @abc.abstractmethod
    def check_inputs(self, inputs: dict, data, path) -> None:
        """A one-line error for data the encoder cannot read."""

    def prepare_model(self, model: torch.nn.Module, options) -> torch.nn.Module:
        """The model made ready for this data (e.g. a memory layout); unchanged by default."""
        return model

    # --- views --------------------------------------------------------------------------------

    @abc.abstractmethod
    def pretrain_views(self, spec: ViewSpec, dataset, inputs: dict, options) -> Views:
        """The views a method asks for (spec), or a one-line error naming the method and the modality
        (spec.refusal) where it cannot make them."""

    @abc.abstractmethod
    def classifier_views(self, dataset, inputs: dict, augment: bool | str) -> Views:
        """augment: False, True (light) or "strong"."""

    @abc.abstractmethod
    def eval_views(self, dataset, inputs: dict) -> Views:
        """The items themselves, as an encoder reads them."""

    # --- applying what was learned (predict, similar, export) -----------------------------------

    @abc.abstractmethod
    def read_item(self, path: str, inputs: dict):
        """A query as a raw item (contrastive similar): a file, or for code FILE:FUNCTION; an unknown name is
        refused with the names the file has."""

    @abc.abstractmethod
    def item_set(self, raw):
        """A dataset of one raw item."""

    @abc.abstractmethod
    def item_ids(self, dataset, split: str) -> list:
        """Where every item is, one per item: a name (file paths, or split:index) or a dict of columns (code:
        {"file", "function", "line"}); predict writes them as its first columns, similar prints them."""

    @abc.abstractmethod
    def export_module(self, module: torch.nn.Module, inputs: dict) -> torch.nn.Module:
        """The module behind its own input preprocessing (exported files)."""

    @abc.abstractmethod
    def example_input(self, inputs: dict, n: int = 2) -> torch.Tensor:
        """A batch of what an exported module takes."""

    @abc.abstractmethod
    def describe_input(self, inputs: dict) -> str:
        """The same, in words, for messages."""

    # --- optional: what the report and the pipeline add where a modality has it -----------------

    draws = False  # whether contact_sheet draws its items

    def contact_sheet(self, items: list, captions: list[str], path) -> None:
        """A picture of raw items side by side, each under its caption; only where `draws`."""
        raise ContrastiveError(f"{self.noun} cannot be drawn; no sheet is written for {self.kind}")

    # PipelineConfig fields the `pipeline` command starts from on this data, under the typed flags (nested fields as
    # nested dicts, e.g. {"finetune": {"min_steps": 300}}); --quick keeps its own preset. None by default.
    pipeline_defaults: dict = {}

    # Its classifier views offer a "strong" recipe that differs from the light one: consistency training
    # (the pipeline's `semi` column, FixMatch) reads both. False by default.
    strong_views: bool = False

    def groups(self, dataset) -> list[str] | None:
        """Each item's group, where items come in families that must stay on one side of every split (Juliet:
        the flaw variant, whose flow variants differ only in control flow) and that pretraining may pack into
        one batch; None (the default): every item is its own."""
        return None

    def batch_families(self, dataset) -> list[str] | None:
        """Each item's family for --batch-groups: what one batch holds whole; by default its group."""
        return self.groups(dataset)

    @property
    def baselines(self) -> dict:
        """name -> Baseline (contrastive.evaluate.baselines): fit(labeled, pool, val, num_classes, seed,
        positive=None) -> a predictor, items -> class probabilities (len(items), C), fitted once per label
        draw: the non-deep baselines on raw inputs the pipeline runs on every draw; none by default."""
        return {}

    def raw_vectors(self, dataset) -> torch.Tensor | None:
        """Items as vectors (N, D) for the raw-input kNN, or None (the default: no such vectors)."""
        return None

    def colourings(self, dataset) -> dict:
        """The report's extra colourings of its maps: name -> (int64 (N,) colour per item, -1 for none;
        colour names); none by default."""
        return {}
