"""What the pipeline measured, as dataclasses: one `Row` per label fraction, one `Cell` per column.

`Results.to_json()` writes results.json in the format other tools read (each row keeps a column's mean
under the column's own name, its sd under "sd", its per-draw values under "values"; with a positive class,
"f1" and "pr_auc" the same way, as "f1", "f1_sd", "f1_values", ..., the F1 thresholds chosen on validation,
the always-positive floor and the gains over the best baseline by each metric);
`Results.from_json` reads it back, so the report and TensorBoard read one structure whether the
numbers come from a run that just ended or from a results.json on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contrastive.pipeline.guard import Guard
from contrastive.protocol import summary

# What the pretrained encoder gives; every other column is a baseline (the same network from random init, and the
# modality's non-deep baselines on the raw inputs).
PRETRAINED_COLUMNS = ("linear", "encoder_spreading", "finetune", "semi", "distill")
BINARY_METRICS = ("f1", "pr_auc")  # scored where the data names a positive class (detection)


@dataclass(frozen=True)
class Cell:
    """One column of one row: its test accuracy on every draw; with a positive class, F1 (at the threshold
    chosen on validation, per draw) and PR-AUC too."""

    values: tuple[float, ...]
    f1: tuple[float, ...] = ()
    pr_auc: tuple[float, ...] = ()
    thresholds: tuple[float, ...] = ()  # per draw: the positive class's probability from which F1 calls it

    @property
    def mean(self) -> float:
        return summary(list(self.values))["mean"]

    @property
    def sd(self) -> float:
        return summary(list(self.values))["sd"]

    def metric_values(self, metric: str) -> list[float]:
        """The per-draw values of "f1" or "pr_auc"."""
        return list({"f1": self.f1, "pr_auc": self.pr_auc}[metric])

    def metric_mean(self, metric: str) -> float:
        """The mean over draws of "f1" or "pr_auc"."""
        return summary(self.metric_values(metric))["mean"]

    def metric_sd(self, metric: str) -> float:
        """The sample sd over draws of "f1" or "pr_auc"."""
        return summary(self.metric_values(metric))["sd"]


@dataclass(frozen=True)
class Choices:
    """What a label fraction's choices on validation settled (made on its first draw, applied to every draw),
    with every candidate's validation accuracy. distill_teacher_validation is None when the teacher was given,
    not chosen."""

    supervised_lr: float
    supervised_lr_validation: dict[str, float]
    finetune_lr: float
    finetune_lr_validation: dict[str, float]
    distill_teacher: str
    distill_teacher_validation: dict[str, float] | None
    distill_temperature: float
    distill_lr_factor: float
    distill_validation: dict[str, float]

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        if out["distill_teacher_validation"] is None:
            del out["distill_teacher_validation"]
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Choices":
        return cls(**{"distill_teacher_validation": None, **d})


@dataclass(frozen=True)
class Row:
    """One label fraction: how many labels a draw holds, how many labels its numbers used in all (the draw's
    and the validation items its choices read), the choices, the mean validation accuracy of every column,
    the test cells (in table order of insertion: the pipeline's columns, then the baselines), and the guards
    of the columns that train on from a start (semi, distill: per draw, contrastive.pipeline.guard)."""

    fraction: float
    n_labels: int
    draws: int
    choices: Choices | None
    validation: dict[str, float]
    cells: dict[str, Cell]
    labels_used: int | None = None  # None: results.json files older than the validation-size rule
    guards: dict[str, list[Guard]] = field(default_factory=dict)
    positive_share: float | None = None  # the positive class's share of the test split (None: no positive class)

    def kept_start(self, column: str) -> int:
        """On how many draws `column` fell below its start on validation (the start was kept)."""
        return sum(g.kept == "start" for g in self.guards.get(column, []))

    @property
    def baselines(self) -> list[str]:
        return [c for c in self.cells if c not in PRETRAINED_COLUMNS]

    @property
    def pretrained(self) -> list[str]:
        return [c for c in self.cells if c in PRETRAINED_COLUMNS]

    @property
    def best_baseline(self) -> str:
        return max(self.baselines, key=lambda c: self.cells[c].mean)

    @property
    def gain(self) -> float:
        """The best pretrained column's mean minus the best baseline's: a gain over the strongest sceptic."""
        return max(self.cells[c].mean for c in self.pretrained) - self.cells[self.best_baseline].mean

    @property
    def binary(self) -> bool:
        return any(cell.f1 for cell in self.cells.values())

    def best_baseline_by(self, metric: str) -> str:
        return max(self.baselines, key=lambda c: self.cells[c].metric_mean(metric))

    def gain_by(self, metric: str) -> float:
        """The best pretrained column's mean `metric` ("f1", "pr_auc") minus the best baseline's by it."""
        return (max(self.cells[c].metric_mean(metric) for c in self.pretrained)
                - self.cells[self.best_baseline_by(metric)].metric_mean(metric))

    @property
    def floor(self) -> dict[str, float] | None:
        """The rule that calls every item positive, on the test split: F1 2p / (1 + p) (precision p, recall 1)
        and PR-AUC p (one threshold: precision p at recall 1), p the positive share. None without one."""
        p = self.positive_share
        return None if p is None else {"f1": 2 * p / (1 + p), "pr_auc": p}

    def binary_json(self) -> dict:
        """The detection entries of results.json: per metric the columns' means, sds and per-draw values,
        the thresholds, the floor, and the gain over the best baseline by each metric."""
        out = {}
        for metric in BINARY_METRICS:
            out[metric] = {c: cell.metric_mean(metric) for c, cell in self.cells.items()}
            out[f"{metric}_sd"] = {c: cell.metric_sd(metric) for c, cell in self.cells.items()}
            out[f"{metric}_values"] = {c: cell.metric_values(metric) for c, cell in self.cells.items()}
        out["thresholds"] = {c: list(cell.thresholds) for c, cell in self.cells.items() if cell.thresholds}
        if self.floor is not None:
            out["floor"] = self.floor
        for metric in BINARY_METRICS:
            out[f"gain_{metric}"] = {"gain": self.gain_by(metric), "baseline": self.best_baseline_by(metric)}
        return out

    def to_json(self) -> dict:
        out = {"n_labels": self.n_labels, "draws": self.draws}
        if self.labels_used is not None:
            out["labels_used"] = self.labels_used
        if self.choices is not None:
            out["choices"] = self.choices.to_json()
        out["validation"] = dict(self.validation)
        out.update({c: cell.mean for c, cell in self.cells.items()})
        out.update({"sd": {c: cell.sd for c, cell in self.cells.items()},
                    "values": {c: list(cell.values) for c, cell in self.cells.items()},
                    "best_baseline": self.best_baseline, "gain": self.gain})
        if self.binary:
            out.update(self.binary_json())
        if self.guards:
            out["guards"] = {c: [g.to_json() for g in gs] for c, gs in self.guards.items()}
        return out

    @classmethod
    def from_json(cls, key: str, d: dict) -> "Row":
        """A row of results.json; per-draw values where the file has them (older files: the mean alone)."""
        values = d.get("values") or {c: [d[c]] for c in d if c not in ROW_KEYS and isinstance(d[c], float)}
        cells = {c: Cell(tuple(v), *(_metric_values(d, m, c, len(v)) for m in BINARY_METRICS),
                         tuple(d.get("thresholds", {}).get(c, ()))) for c, v in values.items()}
        choices = Choices.from_json(d["choices"]) if "choices" in d else None
        guards = {c: [Guard.from_json(g) for g in gs] for c, gs in d.get("guards", {}).items()}
        return cls(float(key), d["n_labels"], d.get("draws", 1), choices, d.get("validation", {}), cells,
                   d.get("labels_used"), guards, d.get("floor", {}).get("pr_auc"))


ROW_KEYS = {"n_labels", "labels_used", "draws", "choices", "validation", "sd", "values", "best_baseline", "gain",
            "guards", "thresholds", "floor", *BINARY_METRICS, *(f"{m}_{part}" for m in BINARY_METRICS
                                                                for part in ("sd", "values")),
            *(f"gain_{m}" for m in BINARY_METRICS)}


def _metric_values(d: dict, metric: str, column: str, n: int) -> tuple[float, ...]:
    """A column's per-draw `metric` from a results.json row: "<metric>_values" where the file has them, else
    the mean repeated n times (files older than the sd of F1 and PR-AUC)."""
    per_draw = d.get(f"{metric}_values", {}).get(column)
    return tuple(per_draw) if per_draw is not None else _repeat(d.get(metric, {}).get(column), n)


def _repeat(mean: float | None, n: int) -> tuple[float, ...]:
    """A mean read back from results.json as n equal per-draw values (the file keeps the mean only)."""
    return () if mean is None else (mean,) * n


@dataclass(frozen=True)
class KnnScores:
    """The pretrained encoder's weighted kNN top-1 on the test split, beside the raw inputs' (None: no vectors).
    k and temperature are None in results.json files older than the "knn" entry (they kept knn_top1 only)."""

    k: int | None
    temperature: float | None
    encoder: float
    raw: float | None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Protocol:
    """The splits' sizes, the validation kNN numbers, and the wall time of each stage in seconds."""

    validation: float
    n_train: int
    n_validation: int
    n_test: int
    knn_validation: float | None
    raw_knn_validation: float | None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class NetworkCost:
    """A network the pipeline ships: its backbone, its parameter count, and the wall seconds it took to predict
    the test split (the best of a few runs, measured side by side with the other networks)."""

    backbone: str
    parameters: int
    test_seconds: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Results:
    dataset: str
    method: str
    backbone: str
    student: str
    knn: KnnScores | None
    protocol: Protocol | None
    rows: dict[str, Row]  # key: the fraction as written in results.json ("0.01")
    # The first fraction's first draw: "teacher" (the network the distillation teacher is built on) and "student".
    networks: dict[str, NetworkCost] = field(default_factory=dict)

    @property
    def knn_top1(self) -> float | None:
        return None if self.knn is None else self.knn.encoder

    @property
    def columns(self) -> list[str]:
        """Table order: supervised first, the other baselines, then the pretrained columns."""
        first = next(iter(self.rows.values()), None)
        if first is None:
            return []
        rest = [c for c in first.baselines if c != "supervised"]
        return ["supervised", *rest, *(c for c in PRETRAINED_COLUMNS if c in first.cells)]

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "method": self.method, "backbone": self.backbone, "student": self.student,
                "knn_top1": self.knn_top1, "knn": None if self.knn is None else self.knn.to_json(),
                "protocol": None if self.protocol is None else self.protocol.to_json(),
                "label_fractions": {key: row.to_json() for key, row in self.rows.items()},
                **({"networks": {k: v.to_json() for k, v in self.networks.items()}} if self.networks else {})}

    @classmethod
    def from_json(cls, d: dict) -> "Results":
        knn = d.get("knn") or ({"k": None, "temperature": None, "encoder": d["knn_top1"], "raw": None}
                                if d.get("knn_top1") is not None else None)
        return cls(d.get("dataset", "?"), d.get("method", "?"), d.get("backbone", "?"), d.get("student", "?"),
                   KnnScores(**knn) if knn else None,
                   Protocol(**d["protocol"]) if d.get("protocol") else None,
                   {key: Row.from_json(key, row) for key, row in d.get("label_fractions", {}).items()},
                   {k: NetworkCost(**v) for k, v in d.get("networks", {}).items()})
