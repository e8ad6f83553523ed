"""The pipeline's report: the results table, report.md and the matplotlib plots beside it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from contrastive.files import write_atomic, write_atomic_with  # noqa: E402
from contrastive.modality import modality_of  # noqa: E402
from contrastive.pipeline.results import BINARY_METRICS, PRETRAINED_COLUMNS, Results, Row  # noqa: E402

COLORS = {"supervised": "tab:gray", "linear": "tab:blue", "encoder_spreading": "tab:purple", "finetune": "tab:orange",
          "semi": "tab:red", "distill": "tab:green"}


def cell(row: Row, column: str) -> str:
    c = row.cells[column]
    return f"{c.mean:.4f}" if row.draws == 1 else f"{c.mean:.4f} ± {c.sd:.4f}"


def format_table(results: Results) -> str:
    """The results as a Markdown table (printed at the end of the run and put in the report): test
    accuracy, mean ± sd over label draws; gain = best pretrained column minus the best baseline. With a
    positive class a second table: F1 and PR-AUC the same way, beside the always-positive floor."""
    columns = results.columns
    head = "| labels | n | labels used | draws | " + " | ".join(columns) + " | gain over the best baseline |"
    lines = [head, "|" + " --- |" * (len(columns) + 5)]
    for row in results.rows.values():
        used = "?" if row.labels_used is None else row.labels_used
        lines.append(f"| {row.fraction:.0%} | {row.n_labels} | {used} | {row.draws} | "
                     + " | ".join(cell(row, c) for c in columns) + f" | {row.gain:+.4f} ({row.best_baseline}) |")
    if any(row.binary for row in results.rows.values()):
        lines += ["", *binary_table(results)]
    return "\n".join(lines)


def metric_cell(row: Row, column: str, metric: str) -> str:
    c = row.cells[column]
    mean = c.metric_mean(metric)
    return f"{mean:.4f}" if row.draws == 1 else f"{mean:.4f} ± {c.metric_sd(metric):.4f}"


def binary_table(results: Results) -> list[str]:
    """F1 and PR-AUC of the positive class per column (mean ± sd over draws), the floor of calling every item
    positive, and the best pretrained column's gain over the best baseline by that metric."""
    columns = results.columns
    lines = ["| labels | metric | " + " | ".join(columns) + " | floor: all positive | gain over the best baseline |",
             "|" + " --- |" * (len(columns) + 4)]
    for row in results.rows.values():
        if not row.binary:
            continue
        for metric in BINARY_METRICS:
            floor = "?" if row.floor is None else f"{row.floor[metric]:.4f}"
            cells = " | ".join(metric_cell(row, c, metric) for c in columns)
            lines.append(f"| {row.fraction:.0%} | {metric} | {cells} | {floor} | "
                         f"{row.gain_by(metric):+.4f} ({row.best_baseline_by(metric)}) |")
    return lines + ["", "F1 of the positive class at the probability threshold each column chose on validation "
                    "(per draw; results.json: thresholds); PR-AUC: the area under its precision-recall curve. "
                    "floor: calling every item positive, p its share of the test split (F1 2p/(1+p), PR-AUC p)."]


def plot_fractions(results: Results, path: Path) -> None:
    """Test accuracy against label fraction, one line per column (error bars: sd over draws)."""
    rows = sorted(results.rows.values(), key=lambda row: row.fraction)
    fractions = [row.fraction for row in rows]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for column in results.columns:
        ax.errorbar(fractions, [row.cells[column].mean for row in rows], yerr=[row.cells[column].sd for row in rows],
                    marker="o", capsize=3, color=COLORS.get(column),
                    linestyle="-" if column in PRETRAINED_COLUMNS else "--", label=column)
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
    ax.set_xlabel("fraction of training labels used")
    ax.set_ylabel("test top-1 accuracy (mean ± sd over draws)")
    ax.set_title(f"{results.method} / {results.backbone} on {results.dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic_with(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


def plot_training(metrics_path: Path, path: Path) -> None:
    """Pretraining loss per step and kNN top-1 per epoch, from the run's metrics.jsonl."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = [(r["step"], r["loss"]) for r in records if "loss" in r]
    knn = [(r["epoch"], r["knn_top1"]) for r in records if r.get("knn_top1") is not None]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    if steps:
        a.plot(*zip(*steps), color="tab:red")
    a.set_xlabel("step")
    a.set_ylabel("pretraining loss")
    a.grid(alpha=0.3)
    if knn:
        b.plot(*zip(*knn), marker="o", color="tab:blue")
    b.set_xlabel("epoch (0: random init)")
    b.set_ylabel("kNN top-1 (the run's query split)")
    b.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic_with(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


def sample_indices(n: int, seed: int, max_points: int) -> torch.Tensor:
    """A fixed random draw of at most max_points of n items (int64 indices)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points]


def sample_embeddings(features: torch.Tensor, labels: torch.Tensor, seed: int, max_points: int):
    """(L2-normalised features (n, D), labels (n,)) as numpy: a fixed random draw of at most max_points."""
    keep = sample_indices(len(features), seed, max_points)
    return torch.nn.functional.normalize(features[keep], dim=1).numpy(), labels[keep].numpy()


def plot_scatter(xy, y, classes: list[str], title: str, path: Path) -> None:
    """A 2-D map of embeddings (n, 2), one colour per class: what the t-SNE and the UMAP plots share."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c in range(int(y.max()) + 1 if len(y) else 0):  # colour -1: an item without one, not drawn
        sel = y == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, label=classes[c] if c < len(classes) else str(c))
    ax.legend(markerscale=3, fontsize=7, loc="best", ncol=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    write_atomic_with(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


def plot_tsne(features: torch.Tensor, labels: torch.Tensor, classes: list[str], path: Path, seed: int = 0,
              max_points: int = 2000, extra: dict | None = None) -> list[str]:
    """2-D t-SNE (scikit-learn) of test embeddings, coloured by class; with `extra` ({name: (int64 (N,)
    colour per item, -1 for none; colour names)}, a modality's `colourings`), the same map once more per
    colouring, in tsne_<name>.png beside `path`. Returns the names of the files written."""
    from sklearn.manifold import TSNE

    x, y = sample_embeddings(features, labels, seed, max_points)
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(x) - 1)).fit_transform(x)
    plot_scatter(xy, y, classes, "t-SNE of test embeddings (pretrained encoder)", path)
    written, keep = [path.name], sample_indices(len(features), seed, max_points)
    for name, (colours, names) in (extra or {}).items():
        extra_path = path.with_name(f"{path.stem}_{name}{path.suffix}")
        plot_scatter(xy, colours[keep].numpy(), names, f"t-SNE of test embeddings, coloured by {name}", extra_path)
        written.append(extra_path.name)
    return written


def plot_umap(features: torch.Tensor, labels: torch.Tensor, classes: list[str], path: Path, seed: int = 0,
              max_points: int = 2000) -> bool:
    """2-D UMAP (umap-learn, the `umap` extra) of the same embeddings as plot_tsne; False when umap is absent."""
    try:
        import umap
    except ImportError:
        return False
    x, y = sample_embeddings(features, labels, seed, max_points)
    with warnings.catch_warnings():  # a fixed random_state makes umap warn that it runs on one thread
        warnings.simplefilter("ignore", UserWarning)
        xy = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed).fit_transform(x)
    plot_scatter(xy, y, classes, "UMAP of test embeddings (pretrained encoder)", path)
    return True


def write_report(out: Path, results: Results, pretrain_dir: Path, encoder, data, reader, device,
                 knn_random_init: float | None = None) -> Path:
    """OUT/report.md and its plots; with an encoder also maps of its test embeddings (t-SNE, and UMAP when
    umap-learn is installed: else one line in the report says how to get it)."""
    plot_fractions(results, out / "accuracy_vs_labels.png")
    plot_training(pretrain_dir / "metrics.jsonl", out / "pretraining.png")
    images, note = ["accuracy_vs_labels.png", "pretraining.png"], None
    if encoder is not None:
        maps, note = embedding_maps(out, encoder, data, reader, device)
        images += maps
    lines = [f"# {results.method} few-label report: {results.dataset}", "",
             f"Backbone `{results.backbone}`, student `{results.student}`. Accuracies are test top-1 fractions, "
             "mean ± sd over label draws (per-draw values in results.json).",
             knn_line(results, knn_random_init), "", protocol_line(results), "", *COLUMN_NOTES, "",
             format_table(results), "", choices_line(results), "", *guard_lines(results), *networks_line(results),
             "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds_of(results).items()), ""]
    lines += [f"![{name}]({name})" for name in images] + (["", note] if note else [])
    path = out / "report.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


COLUMN_NOTES = (
    "- supervised: the same architecture from random init, trained on the labelled subset only (lr chosen on "
    "validation)",
    "- the other baseline columns: the modality's non-deep baselines on the raw inputs, same draws (kNN and label "
    "spreading on images; on code TF-IDF with class-weighted logistic regression, C chosen on validation, and the "
    "same model self-trained on the unlabelled training functions)",
    "- linear: a linear classifier on frozen pretrained features (labelled subset)",
    "- encoder_spreading: label spreading (the raw-input baseline's algorithm) on the pretrained features, over "
    "the labelled, the unlabelled training and the query items",
    "- finetune: the whole pretrained network fine-tuned on the labelled subset (SimCLRv2: from the first head "
    "layer; lr chosen on validation)",
    "- semi: FixMatch consistency training (Sohn et al. 2020) from the fine-tuned network over every training item: "
    "confident predictions on a weak view train a strong view, beside the labelled term",
    "- distill: a student trained on the chosen teacher's predictions on all training items (plus the labelled "
    "term, SimCLRv2 eq. 3)",
    "- labels used: a draw's labels plus the validation items its fraction's choices read (at most as many as the "
    "draw holds; Oliver et al. 2018)",
    "- gain: the best pretrained column minus the best baseline",
)


def embedding_maps(out: Path, encoder, data, reader, device) -> tuple[list[str], str | None]:
    """(the map files written, a note for the report): the t-SNE of the test embeddings, one more per colouring
    the modality offers (code: CWE and vulnerable/fixed), and the UMAP where umap-learn is installed."""
    from contrastive.evaluate.features import extract_features

    feats, labels = extract_features(encoder, data.test, reader, device)
    images = plot_tsne(feats, labels, data.classes, out / "tsne.png",
                       extra=modality_of(data).colourings(data.test))
    if plot_umap(feats, labels, data.classes, out / "umap.png"):
        return images + ["umap.png"], None
    return images, "UMAP: install contrastive[umap] to draw it"


def knn_line(results: Results, knn_random_init: float | None) -> str:
    knn = results.knn
    if knn is None:
        return ""
    knn0 = f" (random-init encoder, on validation: {knn_random_init:.4f})" if knn_random_init is not None else ""
    raw = f"; raw inputs: {knn.raw:.4f}" if knn.raw is not None else ""
    return (f"kNN top-1 of the pretrained encoder on the test split (k={knn.k}, T={knn.temperature}): "
            f"**{knn.encoder:.4f}**{raw}{knn0}.")


def protocol_line(results: Results) -> str:
    p = results.protocol
    if p is None:
        return "Protocol: not recorded in these results."
    return (f"Protocol: {p.n_train} training items, {p.n_validation} held out as the validation split on which every "
            f"choice was made, {p.n_test} test items read once at the end.")


def choices_line(results: Results) -> str:
    return "Choices made on validation: " + "; ".join(
        f"{row.fraction:.0%}: supervised lr {c.supervised_lr}, finetune lr {c.finetune_lr}, distillation teacher "
        f"{c.distill_teacher} at T {c.distill_temperature}, lr x{c.distill_lr_factor}"
        for row in results.rows.values() if (c := row.choices) is not None)


def networks_line(results: Results) -> list[str]:
    """The student beside its teacher: parameters and the time to predict the test split, as fractions."""
    teacher, student = results.networks.get("teacher"), results.networks.get("student")
    if teacher is None or student is None:
        return []
    return [f"Shipped networks (first draw of the first fraction): student `{student.backbone}` {student.parameters:,} "
            f"parameters, {student.parameters / teacher.parameters:.0%} of teacher `{teacher.backbone}`'s "
            f"{teacher.parameters:,}; it predicts the test split in {student.test_seconds:.2f} s, "
            f"{student.test_seconds / teacher.test_seconds:.0%} of the teacher's {teacher.test_seconds:.2f} s.", ""]


def guard_lines(results: Results) -> list[str]:
    """One line per fraction: on how many draws semi and distill fell below their start on validation (the
    start was kept: the column reports it), with every draw's two numbers and what went wrong."""
    lines = []
    for row in results.rows.values():
        for column, guards in row.guards.items():
            fell = row.kept_start(column)
            detail = "; ".join(f"{g.start:.4f} -> {g.result:.4f}"
                               + (f" ({', '.join(g.problems)})" if g.problems else "") for g in guards)
            lines.append(f"- {row.fraction:.0%} {column}: below its start on validation on {fell} of {len(guards)} "
                         f"draws{' (the start is kept and reported there)' if fell else ''}; start -> result per "
                         f"draw: {detail}")
    return (["Guards (a network trained on from a start is kept only where validation says it is not worse):",
             *lines, ""] if lines else [])


def seconds_of(results: Results) -> dict[str, float]:
    return {} if results.protocol is None else results.protocol.seconds
