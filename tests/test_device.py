"""Devices and precision (contrastive/device.py)."""

import torch


def test_precision_auto_follows_the_hardware(monkeypatch):
    from contrastive import device as dev

    cpu = torch.device("cpu")
    assert dev.resolve_precision("fp32", cpu) == "fp32" and dev.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)
    assert dev.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    assert dev.resolve_precision("auto", cpu) == "bf16"
