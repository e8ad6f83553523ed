"""`contrastive pipeline --quick` on a tiny made-up Juliet tree, and the report's t-SNE colourings of
code (by CWE and by vulnerable / fixed; issue 14)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("tree_sitter_c")

from contrastive.code.data import load_code  # noqa: E402
from contrastive.code.juliet import TOP_CWES, colourings  # noqa: E402

CWES = {121: "Stack_Based_Buffer_Overflow", 190: "Integer_Overflow", 476: "NULL_Pointer_Dereference"}


def case(cwe: int, n: int) -> tuple[str, str]:
    """One test case: a flawed function (a buffer of n too small for its loop) and two fixed ones."""
    name = f"CWE{cwe}_{CWES[cwe]}__loop{n:02d}_01"  # its own flaw variant (flow 01)
    text = f"""#include "std_testcase.h"
#ifndef OMITBAD
void {name}_bad()
{{
    char buffer[{n}];
    int count = {n + 7};
    size_t i;
    for (i = 0; i < count; i++) {{ buffer[i] = 'A'; }}
    printLine(buffer);
}}
#endif
#ifndef OMITGOOD
static void goodG2B()
{{
    char buffer[{n + 50}];
    int count = {n};
    size_t i;
    for (i = 0; i < count && i < sizeof(buffer); i++) {{ buffer[i] = 'B'; }}
    printLine(buffer);
}}
static void goodB2G()
{{
    char buffer[{n + 60}];
    size_t i;
    if ({n} < sizeof(buffer)) {{ for (i = 0; i < {n}; i++) {{ buffer[i] = 'C'; }} }}
    printIntLine({n});
}}
void {name}_good() {{ goodG2B(); goodB2G(); }}
#endif
"""
    return f"testcases/CWE{cwe}_{CWES[cwe]}/{name}.c", text


@pytest.fixture(scope="module")
def tiny_juliet(tmp_path_factory):
    root = tmp_path_factory.mktemp("juliet") / "juliet-c"
    for i in range(36):
        path, text = case(list(CWES)[i % 3], 3 + i)
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_colourings_give_each_item_its_cwe_and_whether_it_is_flawed(tiny_juliet):
    data = load_code(f"juliet:{tiny_juliet}", juliet_cases=None, variants=1, log=lambda *a: None)
    items = data.train
    colours = colourings(items)
    assert set(colours) == {"cwe", "vulnerable"}
    cwe, cwe_names = colours["cwe"]
    assert sorted(cwe_names) == ["CWE121", "CWE190", "CWE476"]
    assert [cwe_names[c] for c in cwe.tolist()] == [f"CWE{c}" for c in items.cwes.tolist()]
    flawed, names = colours["vulnerable"]
    assert names == ["fixed", "vulnerable"] == data.classes  # the colours of the label map
    # task "vulnerable": the labels say the same, read from the names through another path
    assert [names[c] for c in flawed.tolist()] == [data.classes[y] for y in items.labels.tolist()]
    as_cwe = load_code(f"juliet:{tiny_juliet}", task="cwe", juliet_cases=None, variants=1, log=lambda *a: None)
    assert torch.equal(colourings(as_cwe.train)["vulnerable"][0], flawed)  # known under the cwe task too


def test_colourings_keep_the_most_frequent_cwes_and_put_the_rest_in_other():
    from contrastive.code.data import CodeSet

    cwes = [c for c in range(100, 100 + TOP_CWES + 3) for _ in range(c - 98)] + [-1]
    items = CodeSet(torch.zeros(len(cwes), 1, 4, dtype=torch.int64), cwes=cwes, ids=[f"x.c:f{i}" for i in cwes])
    colour, names = colourings(items)["cwe"]
    assert names[-1] == "other" and len(names) == TOP_CWES + 1
    assert names[0] == f"CWE{100 + TOP_CWES + 2}"  # the most frequent first
    rare = (torch.tensor(cwes) >= 0) & (torch.tensor(cwes) < 100 + 3)
    assert (colour[rare] == TOP_CWES).all() and rare.sum() == 2 + 3 + 4  # the three rarest share "other"
    assert colour[-1] == -1  # no CWE: not coloured
    assert "vulnerable" not in colourings(items)  # names without bad/good: no such colouring


@pytest.mark.slow
def test_quick_pipeline_on_a_tiny_juliet_tree(tiny_juliet, tmp_path):
    from contrastive.cli import main

    out = tmp_path / "run"
    assert main(["pipeline", "--quick", "--data", f"juliet:{tiny_juliet}", "--task", "vulnerable", "--variants", "2",
          "--fractions", "0.1", "--batch-size", "32", "--tsne", "--out", str(out)]) in (0, None)
    results = json.loads((out / "results.json").read_text())
    assert results["backbone"] == "bag"  # the CPU default for code
    row = results["label_fractions"]["0.1"]
    columns = {"supervised", "tfidf", "linear", "finetune", "distill"}
    assert columns <= set(row) and row["draws"] == 2
    assert "semi" not in row and set(row["guards"]) == {"distill"}  # code has no strong view: no consistency stage
    assert "semi" not in row["choices"]["distill_teacher_validation"]
    assert all(0.0 <= row[c] <= 1.0 and len(row["values"][c]) == 2 for c in columns)
    for metric in ("f1", "pr_auc"):  # over every column of the row, the baselines' included
        assert set(row[metric]) == set(row["values"]) and columns <= set(row[metric])
        assert all(0.0 <= v <= 1.0 for v in row[metric].values())
    report = (out / "report.md").read_text()
    for name in ("tsne.png", "tsne_cwe.png", "tsne_vulnerable.png"):
        assert (out / name).stat().st_size > 0 and f"]({name})" in report
    assert "| 10% | f1 |" in report and "tfidf" in report


def test_extra_colourings_colour_the_same_points_of_one_map(monkeypatch, tmp_path):
    from contrastive import report

    drawn = {}
    monkeypatch.setattr(report, "plot_scatter", lambda xy, y, classes, title, path: drawn.update({path.name: (xy, y)}))
    features, labels = torch.randn(60, 8), torch.arange(60) % 4
    written = report.plot_tsne(features, labels, list("abcd"), tmp_path / "tsne.png", max_points=25,
                               extra={"parity": (labels % 2, ["even", "odd"])})
    assert written == ["tsne.png", "tsne_parity.png"]
    (xy, y), (xy2, parity) = drawn["tsne.png"], drawn["tsne_parity.png"]
    assert xy is xy2 and len(y) == 25  # one t-SNE fit, the same 25 points
    assert (parity == y % 2).all()  # each point keeps its own item's colour
