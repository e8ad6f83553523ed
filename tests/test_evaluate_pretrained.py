"""Loading a pretraining checkpoint for evaluation (contrastive/evaluate/pretrained.py)."""

import dataclasses

import pytest
import torch

from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import out_features
from contrastive.evaluate.pretrained import check_compatible, load_pretrained
from contrastive.heads import simclr_head
from contrastive.image.backbones import small_cnn
from contrastive.modality import Reader
from helpers import CHANNELS, SIZE, assert_same_state, make_splits, pretrained_checkpoint


# What pretraining on tiny_data records: its options resolve to the data's 16 px and, at 64 px or less, the CIFAR stem.
PRETRAINED_READER = Reader("image", {"channels": CHANNELS, "image_size": SIZE, "cifar_stem": True})


# --- loading checkpoints -------------------------------------------------------------------------

def test_load_pretrained_simclr_gives_encoder_and_first_head_layer(tmp_path, tiny_data):
    path = pretrained_checkpoint(tmp_path, tiny_data, "simclr")
    ckpt = torch.load(path, weights_only=True)
    pre = load_pretrained(path)
    assert pre.feat_dim == 128 and pre.config["method"] == "simclr"
    assert pre.reader == PRETRAINED_READER and pre.data == {"name": "tiny", "num_classes": 4,
                                                            "classes": ["0", "1", "2", "3"]}
    assert pre.record["neck"] == {"prefix": "projector.", "keep": 1,
                                  "mlp": dict(in_dim=128, hidden_dim=32, out_dim=128, num_layers=3, batch_norm=True,
                                              last_bn=True)}
    encoder_state = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    assert_same_state(pre.encoder.state_dict(), encoder_state)
    reference = simclr_head(128, 32, 128, 3)[:1]
    assert str(pre.head) == str(reference)  # Linear(128, 32) -> BN -> ReLU
    assert pre.head[0][0].weight.shape == (32, 128) and out_features(pre.head) == 32
    head_state = {k[len("projector."):]: v for k, v in ckpt["model"].items() if k.startswith("projector.0.")}
    assert_same_state(pre.head.state_dict(), head_state)


def test_load_pretrained_byol_has_no_head(tmp_path, tiny_data):
    pre = load_pretrained(pretrained_checkpoint(tmp_path, tiny_data, "byol"))
    assert pre.head is None and pre.feat_dim == 128 and pre.record["neck"] is None


def test_load_pretrained_errors_are_one_line(tmp_path, tiny_data):
    with pytest.raises(ContrastiveError, match="does not exist") as missing:
        load_pretrained(tmp_path / "nope.pt")
    path = pretrained_checkpoint(tmp_path, tiny_data, "simclr")
    ckpt = torch.load(path, weights_only=True)
    narrower, _ = small_cnn(CHANNELS, width=16)  # the config still says small_cnn (width 32)
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("encoder.")}
    ckpt["model"].update({f"encoder.{k}": v for k, v in narrower.state_dict().items()})
    torch.save(ckpt, tmp_path / "tampered.pt")
    with pytest.raises(ContrastiveError, match="does not match backbone small_cnn") as tampered:
        load_pretrained(tmp_path / "tampered.pt")
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "config": {}}, tmp_path / "other.pt")
    with pytest.raises(ContrastiveError, match="not a pretraining checkpoint") as other:
        load_pretrained(tmp_path / "other.pt")
    for err in (missing, tampered, other):
        assert "\n" not in str(err.value)
    assert "tampered.pt" in str(tampered.value) and "other.pt" in str(other.value)


def test_check_compatible_rejects_other_channel_counts(tmp_path, tiny_data):
    pre = load_pretrained(pretrained_checkpoint(tmp_path, tiny_data, "simclr"))
    check_compatible(pre, tiny_data)
    colour = dataclasses.replace(make_splits(channels=3), name="cifar10:/data")
    with pytest.raises(ContrastiveError, match="1-channel images.*has 3") as err:
        check_compatible(pre, colour)
    assert "\n" not in str(err.value) and "cifar10:/data" in str(err.value)
