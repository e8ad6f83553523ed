"""The pipeline's report: the results table, report.md and the matplotlib plots beside it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from contrastive.modality import modality_of  # noqa: E402

PRETRAINED_COLUMNS = ("linear", "encoder_spreading", "finetune", "distill")  # what the pretrained encoder gives; the rest are baselines
COLUMNS = ("supervised", "linear", "finetune", "distill")  # the columns of every row (older results: only these)
COLORS = {"supervised": "tab:gray", "linear": "tab:blue", "encoder_spreading": "tab:purple", "finetune": "tab:orange",
          "distill": "tab:green"}


def columns_of(results: dict) -> list[str]:
    """The row's columns in table order: the baselines (supervised first), then the pretrained ones."""
    first = next(iter(results["label_fractions"].values()), {})
    present = first.get("values", first)
    extra = [c for c in present if c in first and c not in COLUMNS and c not in PRETRAINED_COLUMNS
             and isinstance(first[c], float)]
    return ["supervised", *extra, *(c for c in PRETRAINED_COLUMNS if c in first)]


def cell(row: dict, column: str) -> str:
    sd = row.get("sd", {}).get(column)
    if sd is None or row.get("draws", 1) == 1:
        return f"{row[column]:.4f}"
    return f"{row[column]:.4f} ± {sd:.4f}"


def format_table(results: dict) -> str:
    """The results as a Markdown table (printed at the end of the run and put in the report): test
    accuracy, mean ± sd over label draws; gain = best pretrained column minus the best baseline."""
    columns = columns_of(results)
    head = "| labels | n | draws | " + " | ".join(columns) + " | gain over the best baseline |"
    lines = [head, "|" + " --- |" * (len(columns) + 4)]
    for key, row in results["label_fractions"].items():
        baseline = row.get("best_baseline", "supervised")
        gain = row.get("gain", max(row[c] for c in PRETRAINED_COLUMNS if c in row) - row[baseline])
        lines.append(f"| {float(key):.0%} | {row['n_labels']} | {row.get('draws', 1)} | "
                     + " | ".join(cell(row, c) for c in columns) + f" | {gain:+.4f} ({baseline}) |")
    if any("f1" in row for row in results["label_fractions"].values()):
        lines += ["", "| labels | metric | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 2)]
        for key, row in results["label_fractions"].items():
            for metric in ("f1", "pr_auc"):
                lines.append(f"| {float(key):.0%} | {metric} | "
                             + " | ".join(f"{row[metric][c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)


def plot_fractions(results: dict, path: Path) -> None:
    """Test accuracy against label fraction, one line per column (error bars: sd over draws)."""
    fractions = sorted(results["label_fractions"], key=float)
    rows = results["label_fractions"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for column in columns_of(results):
        ax.errorbar([float(f) for f in fractions], [rows[f][column] for f in fractions],
                    yerr=[rows[f].get("sd", {}).get(column, 0.0) for f in fractions], marker="o", capsize=3,
                    color=COLORS.get(column), linestyle="-" if column in PRETRAINED_COLUMNS else "--", label=column)
    ax.set_xscale("log")
    ax.set_xticks([float(f) for f in fractions], [f"{float(f):.0%}" for f in fractions])
    ax.set_xlabel("fraction of training labels used")
    ax.set_ylabel("test top-1 accuracy (mean ± sd over draws)")
    ax.set_title(f"{results['method']} / {results['backbone']} on {results['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
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
    fig.savefig(path, dpi=120)
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
    fig.savefig(path, dpi=120)
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


def write_report(out: Path, results: dict, pretrain_dir: Path, encoder, data, reader, device, timings: dict,
                 knn_random_init: float | None = None, knn_k: int = 200, knn_temperature: float = 0.1) -> Path:
    """OUT/report.md and its plots; with an encoder also maps of its test embeddings (t-SNE, and UMAP when
    umap-learn is installed: else one line in the report says how to get it)."""
    plot_fractions(results, out / "accuracy_vs_labels.png")
    plot_training(pretrain_dir / "metrics.jsonl", out / "pretraining.png")
    images, note = ["accuracy_vs_labels.png", "pretraining.png"], None
    if encoder is not None:
        from contrastive.evaluate.features import extract_features

        feats, labels = extract_features(encoder, data.test, reader, device)
        # a modality's extra colourings of the map (code: CWE and vulnerable/fixed); images have none
        colourings = getattr(modality_of(data), "colourings", None) if hasattr(data, "modality") else None
        images += plot_tsne(feats, labels, data.classes, out / "tsne.png",
                            extra=colourings(data.test) if colourings else None)
        if plot_umap(feats, labels, data.classes, out / "umap.png"):
            images.append("umap.png")
        else:
            note = "UMAP: install contrastive[umap] to draw it"
    knn0 = f" (random-init encoder, on validation: {knn_random_init:.4f})" if knn_random_init is not None else ""
    raw = (results.get("knn") or {}).get("raw")
    raw_line = f"; raw inputs: {raw:.4f}" if raw is not None else ""
    protocol = results.get("protocol", {})
    lines = [
        f"# {results['method']} few-label report: {results['dataset']}",
        "",
        f"Backbone `{results['backbone']}`, student `{results['student']}`. Accuracies are test top-1 fractions, "
        "mean ± sd over label draws (per-draw values in results.json).",
        f"kNN top-1 of the pretrained encoder on the test split (k={knn_k}, T={knn_temperature}): "
        f"**{results['knn_top1']:.4f}**{raw_line}{knn0}.",
        "",
        f"Protocol: {protocol.get('n_train', '?')} training items, {protocol.get('n_validation', '?')} held out as the "
        f"validation split on which every choice was made, {protocol.get('n_test', '?')} test items read once at the end.",
        "",
        "- supervised: the same architecture from random init, trained on the labelled subset only (lr chosen on "
        "validation)",
        "- the other baseline columns: the modality's non-deep baselines on the raw inputs (kNN and label spreading on "
        "images, TF-IDF on code), same draws",
        "- linear: a linear classifier on frozen pretrained features (labelled subset)",
        "- encoder_spreading: label spreading (the raw-input baseline's algorithm) on the pretrained features, over "
        "the labelled, the unlabelled training and the query items",
        "- finetune: the whole pretrained network fine-tuned on the labelled subset (SimCLRv2: from the first head "
        "layer; lr chosen on validation)",
        "- distill: a student trained on the fine-tuned teacher's predictions on all training items (plus the labelled "
        "term, SimCLRv2 eq. 3)",
        "- gain: the best pretrained column minus the best baseline",
        "",
        format_table(results),
        "",
        "Choices made on validation: " + "; ".join(
            f"{float(k):.0%}: supervised lr {row['choices'].get('supervised_lr')}, finetune lr "
            f"{row['choices'].get('finetune_lr')}, distillation teacher {row['choices'].get('distill_teacher')} "
            f"at T {row['choices'].get('distill_temperature')}, lr x{row['choices'].get('distill_lr_factor')}"
            for k, row in results["label_fractions"].items() if "choices" in row),
        "",
        "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
        "",
    ] + [f"![{name}]({name})" for name in images] + (["", note] if note else [])
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
