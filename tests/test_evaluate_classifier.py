"""Classifier files (contrastive/evaluate/classifier.py): round trips and files from before the kind tag."""

import pytest
import torch

from contrastive import files
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import load_classifier, random_classifier, save_classifier
from helpers import READER, assert_same_state


# --- classifier files ------------------------------------------------------------------------

def saved_classifier(path):
    model = random_classifier(READER, "small_cnn", 4, seed=0)
    save_classifier(model, path, data={"name": "tiny", "num_classes": 4, "classes": ["0", "1", "2", "3"]},
                    label_fraction=0.5, indices=torch.arange(4))
    return model


def test_a_classifier_round_trips_as_its_own_kind(tmp_path):
    model = saved_classifier(tmp_path / "clf" / "classifier.pt")  # the folder is made
    assert torch.load(tmp_path / "clf" / "classifier.pt", weights_only=True)["kind"] == files.CLASSIFIER
    loaded, meta = load_classifier(tmp_path / "clf" / "classifier.pt")
    assert_same_state(loaded.state_dict(), model.state_dict())
    assert meta["label_fraction"] == 0.5 and meta["indices"] == [0, 1, 2, 3] and meta["data"]["name"] == "tiny"
    files.save(tmp_path / "ckpt.pt", files.CHECKPOINT, {"model": {}, "config": {}})
    with pytest.raises(ContrastiveError, match="is not a classifier \\(it is a pretraining checkpoint\\)"):
        load_classifier(tmp_path / "ckpt.pt")


def test_classifier_files_written_before_the_kind_tag_still_load(tmp_path):
    path = tmp_path / "classifier.pt"
    model = saved_classifier(path)
    contents = torch.load(path, weights_only=True)
    del contents[files.TAG]
    torch.save(dict(contents, config={"kind": "classifier"}), path)  # as save_classifier wrote it then
    loaded, _ = load_classifier(path)
    assert_same_state(loaded.state_dict(), model.state_dict())
    older = {"model": contents["model"], "config": {"kind": "classifier", "backbone": "small_cnn"}}
    torch.save(older, path)  # before classifiers carried their encoder record
    with pytest.raises(ContrastiveError, match="is a classifier written by an older version of contrastive"):
        load_classifier(path)
