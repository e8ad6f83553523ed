"""The modality registry: one line per modality.

What a modality is, member by member (required and optional, with the defaults), is the
`Modality` base class in contrastive.modality_base; `register` refuses anything else at import.
"""

from __future__ import annotations

from dataclasses import dataclass

from contrastive.batches import Views
from contrastive.code import CODE
from contrastive.errors import ContrastiveError
from contrastive.image import IMAGE
from contrastive.modality_base import Modality


def register(*modalities: Modality) -> dict[str, Modality]:
    """name -> modality; a TypeError for an object that is not a Modality (the contract)."""
    for modality in modalities:
        if not isinstance(modality, Modality):
            raise TypeError(f"{modality!r} is not a Modality (contrastive.modality_base): it cannot be registered")
    return {modality.name: modality for modality in modalities}


MODALITIES = register(IMAGE, CODE)


def modality_named(name: str) -> Modality:
    if name not in MODALITIES:
        raise ContrastiveError(f"unknown data modality '{name}'; this version knows: {', '.join(MODALITIES)}")
    return MODALITIES[name]


def modality_for(spec: str | None) -> Modality:
    """The modality whose data spec this is (`None`: the embedded default data)."""
    for modality in MODALITIES.values():
        if modality.claims(spec):
            return modality
    accepted = "; ".join(m.specs for m in MODALITIES.values())
    raise ContrastiveError(f"unknown data spec {spec!r}; use one of: {accepted}")


def modality_of(data) -> Modality:
    return modality_named(data.modality)


def load_data(spec: str | None, options=None, inputs: dict | None = None):
    """The data named by `spec`, read by the modality that claims it; `options`: that modality's Options (or
    the typed ones as a dict); `inputs`: an encoder's inputs record, to read the data the way that encoder
    reads (predict, similar)."""
    modality = modality_for(spec)
    return modality.load(spec, modality.options(options), inputs)


def data_help() -> str:
    return "the data; " + "; ".join(m.specs_help for m in MODALITIES.values())


def backbone_help() -> str:
    return "the encoder; " + "; ".join(m.backbones_help for m in MODALITIES.values())


def option_classes() -> dict[str, type]:
    return {name: m.Options for name, m in MODALITIES.items()}


@dataclass(frozen=True)
class Reader:
    """How an encoder reads its items: the modality's name and the inputs dict saved with the encoder.

    Evaluation holds one of these instead of sizes or channels, so it never looks inside the data."""

    modality: str
    inputs: dict

    @property
    def handler(self) -> Modality:
        return modality_named(self.modality)

    def eval_views(self, dataset) -> Views:
        return self.handler.eval_views(dataset, self.inputs)

    def classifier_views(self, dataset, augment: bool | str) -> Views:
        return self.handler.classifier_views(dataset, self.inputs, augment)

    def build_encoder(self, backbone: str):
        return self.handler.build_encoder(backbone, self.inputs)

    def check(self, data, path) -> None:
        """One-line error when `data` is not what this encoder reads."""
        if data.modality != self.modality:
            raise ContrastiveError(f"{path} was trained on {self.modality} data, not {data.modality} ({data.name}); "
                                   f"pass the --data it was trained on")
        self.handler.check_inputs(self.inputs, data, path)


def reader_for(data, data_options) -> Reader:
    """How an encoder trained on `data` with these resolved modality Options reads its items."""
    modality = modality_of(data)
    return Reader(modality.name, modality.encoder_inputs(data, data_options))
