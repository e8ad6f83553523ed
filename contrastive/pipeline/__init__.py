"""The few-label pipeline of SimCLRv2 (Chen et al. 2020, arXiv:2006.10029), end to end, measured honestly.

pretrain without labels -> for each label fraction, several label draws: the baselines (the same
network from random init, and the modality's non-deep ones on the raw inputs), linear probe,
label spreading on the pretrained features (the raw-input baseline's algorithm on what pretraining
learned), fine-tune, consistency training on every training item from the fine-tuned network (`semi`,
FixMatch; where the modality has weak and strong views), distilled student -> results.json, report.md
with plots, the table printed.

The protocol (contrastive.protocol): a validation split is carved out of the training data first.
Pretraining and its kNN monitor see the training split and the whole validation split; each label
fraction's choices (learning rates of the baseline and of fine-tuning, the distillation teacher,
temperature and lr, made on the first draw of each fraction: `choose`) read at most as many validation
items as a draw holds labels (Oliver et al. 2018; results.json: "labels_used"). The semi network and the
student are kept only where they are not below their start on validation (contrastive.pipeline.guard).
The test split is read once, at the end (`test_stage`). Every column is reported as mean ± sd over the
draws, with the per-draw values kept; "gain" is the best pretrained column minus the best baseline. The
fine-tuned, semi and distilled networks of the first draw are kept in OUT/classifiers/ for
`contrastive predict` and `contrastive export`.

The stages and their hand-offs (contrastive.pipeline.stages):

    split_data      -> Splits         the training, validation and sealed test items, the run folder
    pretrain_stage  -> Pretrained     the encoder and what every fit shares (fits.Stage)
    fraction_stage  -> FractionFits   per fraction: Choices on its validation, then every draw's columns and guards
    test_stage      -> Results        the test split read once (results.Results, one Row per fraction), the
                                      shipped teacher's and student's size and test-split time
    write_outputs                     results.json, report.md and its plots, TensorBoard, the table
"""

from __future__ import annotations

import dataclasses
import time

from contrastive.distributed import continue_on_main, main_first
from contrastive.modality import load_data
from contrastive.pipeline.config import DISTILL_TEACHERS, QUICK, PipelineConfig, matched_baseline
from contrastive.pipeline.results import Results
from contrastive.pipeline.stages import Splits, fraction_stage, pretrain_stage, split_data, test_stage


class Clock:
    """Runs a stage, keeps its wall time under a name (results.json: protocol.seconds) and logs it."""

    def __init__(self, log=print):
        self.seconds: dict[str, float] = {}
        self.log = log

    def __call__(self, name: str, stage, *args):
        t = time.time()
        out = stage(*args)
        self.seconds[name] = time.time() - t
        self.log(f"stage {name}: {self.seconds[name] / 60:.1f} min")
        return out


def run_pipeline(cfg: PipelineConfig, data=None, log=print) -> dict:
    """Run every stage; returns the results dict that is also written to OUT/results.json.

    Under torchrun the processes load the data (rank 0 first, so a parse cache is filled once) and pretrain
    together; the label fractions, the test split and the outputs then run on rank 0 alone, with every core
    (the other ranks return {})."""
    started, clock = time.time(), Clock(log)
    data = data or clock("load", main_first, lambda: load_data(cfg.pretrain.data, cfg.pretrain.data_options))
    splits = split_data(cfg, data, log, started)
    pre = clock("pretrain", pretrain_stage, cfg, splits, log)
    if not continue_on_main():
        return {}
    fractions = [clock(f"fraction {f}", fraction_stage, cfg, pre, i, f, splits, log)
                 for i, f in enumerate(cfg.fractions)]
    results = clock("test", test_stage, cfg, pre, fractions, splits)
    results = dataclasses.replace(results, protocol=dataclasses.replace(results.protocol, seconds=clock.seconds))
    write_outputs(cfg, results, pre, splits, log)
    return results.to_json()


def write_outputs(cfg: PipelineConfig, results: Results, pre, splits: Splits, log) -> None:
    """OUT/results.json, OUT/pipeline.json (the settings), OUT/report.md with its plots, the TensorBoard table (--tensorboard), the table printed."""
    from contrastive.files import write_json
    from contrastive.report import format_table, write_report

    write_json(splits.out / "results.json", results.to_json())
    write_json(splits.out / "pipeline.json", dataclasses.asdict(cfg))  # every setting, to read a run back
    write_report(splits.out, results, pre.result.run_dir, pre.stage.pretrained.encoder if cfg.tsne else None,
                 dataclasses.replace(splits.data, test=splits.test), pre.stage.reader, splits.device,
                 knn_random_init=pre.result.knn_random_init)
    if cfg.pretrain.tensorboard:
        from contrastive.tensorboard import log_results

        log_results(splits.out / "tensorboard", results)
    log(format_table(results))
    log(f"results: {splits.out / 'results.json'}  report: {splits.out / 'report.md'}")
    took = time.time() - splits.started
    forecast = ("" if pre.forecast_seconds is None
                else f" (forecast after the first epoch: {pre.forecast_seconds / 60:.1f} min)")
    log(f"wall time of the whole pipeline: {took / 60:.1f} min{forecast}")


__all__ = ["DISTILL_TEACHERS", "QUICK", "PipelineConfig", "Results", "matched_baseline", "run_pipeline"]
