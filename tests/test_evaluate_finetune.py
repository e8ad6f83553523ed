"""Fine-tuning and the supervised baseline (contrastive/evaluate/finetune.py)."""

import torch

from contrastive.evaluate.classifier import classifier_from, random_classifier
from contrastive.evaluate.finetune import finetune, supervised_baseline
from contrastive.evaluate.fit import Budget
from contrastive.evaluate.pretrained import load_pretrained
from contrastive.image.backbones import small_cnn
from helpers import CHANNELS, READER, SIZE, assert_same_state, pretrained_checkpoint, state


# --- fine-tuning ------------------------------------------------------------------------------

def test_finetune_starts_from_the_head_layer_and_leaves_pretrained_untouched(tmp_path, tiny_data):
    path = pretrained_checkpoint(tmp_path, tiny_data, "simclr")
    ckpt = torch.load(path, weights_only=True)
    pre = load_pretrained(path)
    encoder_before, head_before = state(pre.encoder), state(pre.head)

    model = classifier_from(pre, num_classes=4)
    neck_state = {k[len("projector."):]: v for k, v in ckpt["model"].items() if k.startswith("projector.0.")}
    assert_same_state(model.neck.state_dict(), neck_state)
    assert model.fc.in_features == 32 and model(torch.zeros(2, 1, SIZE, SIZE)).shape == (2, 4)
    assert classifier_from(pre, 4, from_head_layer=False).neck is None

    budget = Budget(epochs=1, min_steps=3, batch_size=16, lr=0.05, augment=False)
    tuned, acc = finetune(pre, tiny_data.train, tiny_data.test, 4, budget=budget)
    assert 0.0 <= acc <= 1.0 and tuned.neck is not None
    assert not torch.equal(tuned.encoder.state_dict()["features.0.weight"], encoder_before["features.0.weight"])  # it trained
    assert_same_state(state(pre.encoder), encoder_before)  # ... a copy
    assert_same_state(state(pre.head), head_before)


def test_finetune_accepts_a_bare_encoder(tiny_data):
    encoder, _ = small_cnn(CHANNELS, width=4)
    before = state(encoder)
    budget = Budget(epochs=1, min_steps=0, batch_size=32, augment=False)
    model, acc = finetune(encoder, tiny_data.train, None, 4, READER, budget=budget)
    assert acc is None and model.fc.in_features == 16
    assert_same_state(state(encoder), before)


# --- supervised baseline ---------------------------------------------------------------------------

def test_supervised_baseline_is_the_same_network_from_random_init(tmp_path, tiny_data):
    pre = load_pretrained(pretrained_checkpoint(tmp_path, tiny_data, "byol"))
    budget = Budget(epochs=1, min_steps=0, batch_size=32, augment=False)
    model, acc = supervised_baseline(pre.reader, "small_cnn", 4, tiny_data.train, tiny_data.test, budget=budget)
    assert 0.0 <= acc <= 1.0
    ours, theirs = model.encoder.state_dict(), pre.encoder.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    assert not torch.allclose(ours["features.0.weight"], theirs["features.0.weight"])
    assert_same_state(state(random_classifier(READER, "small_cnn", 4, seed=0)),
                      state(random_classifier(READER, "small_cnn", 4, seed=0)))
    assert not torch.equal(random_classifier(READER, "small_cnn", 4, seed=1).encoder.features[0].weight,
                           random_classifier(READER, "small_cnn", 4, seed=0).encoder.features[0].weight)
