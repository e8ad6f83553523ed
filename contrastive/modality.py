"""The modality seam: what a kind of data provides, so methods, the loop and evaluation need not know it.

A modality (images today; token sequences of source code next) is an object with:

    name                          "image"
    noun                          what one item is called in messages ("images")
    specs                         the --data specs it reads, for messages
    specs_help, backbones_help    the same, and its encoders, for --help
    load_options                  names of its Options that reading data takes (every command that reads data)
    Options                       a frozen dataclass of its flags (sizes, view strength, ...)
    claims(spec) -> bool          whether a --data spec is its own
    load(spec, given, inputs)     the data (given: the options typed, e.g. skip unreadable files; inputs: an
                                  encoder's record, to read the data as that encoder reads it, or None): .train / .test sets of items (len, labels, subset,
                                  in_memory / take for the batched path), .name, .num_classes, .classes
    resolve(given, data) -> dict  its options for this data, defaults filled in
    default_backbone(data, device_type)  the encoder to use when --backbone is not given
    encoder_inputs(data, options) what rebuilding the encoder and reading its inputs needs (a dict
                                  saved in every checkpoint, opaque to everyone else)
    build_encoder(backbone, inputs) -> (module, feature width)
    check_inputs(inputs, data, path)  refuses data the encoder cannot read (one-line error)
    pretrain_views(recipe, dataset, inputs, options) -> Views   # recipe: the method's VIEWS name
    classifier_views(dataset, inputs, augment) -> Views   # augment: False, True (light) or "strong"
    eval_views(dataset, inputs) -> Views
    prepare_model(model, options) -> model     # e.g. a memory layout
    read_item(path, inputs)       a query file as a raw item (contrastive similar)
    item_set(raw)                 a dataset of one raw item
    item_ids(dataset, split)      a name for every item (file paths, or split:index)
    export_module(module, inputs) the module behind its own input preprocessing (exported files)
    example_input(inputs, n)      a batch of what an exported module takes
    describe_input(inputs)        the same, in words, for messages
    contact_sheet(items, captions, path)   a picture of raw items, where the modality has one
    baselines                     name -> fn(labeled, pool, queries, num_classes, seed) -> class probabilities
                                  (len(queries), C): the non-deep baselines on raw inputs the pipeline runs on
                                  every label draw (images: pixel_knn, label_spreading; code: tfidf)
    raw_vectors(dataset)          optional: items as vectors (N, D) for the raw-input kNN, or None

This module keeps the registry: one line per modality.
"""

from __future__ import annotations

from dataclasses import dataclass

from contrastive.batches import Views
from contrastive.code import CODE
from contrastive.errors import ContrastiveError
from contrastive.image import IMAGE

MODALITIES = {
    IMAGE.name: IMAGE,
    CODE.name: CODE,
}


def modality_named(name: str):
    if name not in MODALITIES:
        raise ContrastiveError(f"unknown data modality '{name}'; this version knows: {', '.join(MODALITIES)}")
    return MODALITIES[name]


def modality_for(spec: str | None):
    """The modality whose data spec this is (`None`: the embedded default data)."""
    for modality in MODALITIES.values():
        if modality.claims(spec):
            return modality
    accepted = "; ".join(m.specs for m in MODALITIES.values())
    raise ContrastiveError(f"unknown data spec {spec!r}; use one of: {accepted}")


def modality_of(data):
    return modality_named(data.modality)


def load_data(spec: str | None, options: dict | None = None, inputs: dict | None = None):
    """The data named by `spec`, read by the modality that claims it; `options`: that modality's; `inputs`:
    an encoder's inputs record, to read the data the way that encoder reads (predict, similar)."""
    return modality_for(spec).load(spec, options or {}, inputs)


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
    def handler(self):
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


def reader_for(data, data_options: dict) -> Reader:
    """How an encoder trained on `data` with these resolved modality options reads its items."""
    modality = modality_of(data)
    return Reader(modality.name, modality.encoder_inputs(data, data_options))
