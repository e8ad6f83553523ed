"""Feature extraction on in-memory images: the tensor path of the batch producer against the per-image
DataLoader path it replaced (issue "one core for every modality"), side by side in one run.

    python benchmarks/feature_extraction.py [--repeats 5] [--out benchmarks/results/feature_extraction.jsonl]

Both paths encode the 4,000 + 1,000 embedded digits with a random-init small_cnn in eval mode (what the
kNN monitor does every epoch, and the linear probe, the report's t-SNE and `contrastive embed` once) and
must give the same features; the record holds seconds per pass (best of --repeats) and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from contrastive.evaluate.features import extract_features
from contrastive.image.backbones import build_backbone
from contrastive.modality import Reader, load_data


@dataclasses.dataclass(frozen=True)
class PerItemReader(Reader):
    """The same reader with the whole-batch function taken away: every item goes through a DataLoader."""

    def eval_views(self, dataset):
        return dataclasses.replace(super().eval_views(dataset), batched=None)


def best_seconds(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/feature_extraction.jsonl")
    args = parser.parse_args()
    data = load_data(None)
    torch.manual_seed(0)
    encoder, _ = build_backbone("small_cnn", 1, False)
    inputs = {"channels": 1, "image_size": 28, "cifar_stem": False}
    record = {"part": "feature_extraction", "images": len(data.train) + len(data.test),
              "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "load_average": os.getloadavg()[0],
              "git_head": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                         text=True).stdout.strip()}
    for name, reader in (("tensor", Reader("image", inputs)), ("per_image_loader", PerItemReader("image", inputs))):
        seconds, feats = best_seconds(lambda: torch.cat([extract_features(encoder, s, reader)[0]
                                                        for s in (data.train, data.test)]), args.repeats)
        record[f"{name}_seconds"] = seconds
        record[f"{name}_features"] = feats
    same = torch.equal(record.pop("tensor_features"), record.pop("per_image_loader_features"))
    record.update(same_features=same, speedup=record["per_image_loader_seconds"] / record["tensor_seconds"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
