"""benchmarks/juliet_slices.py's scaffolding check: the markers it counts in normalised text, the slices they
define, and a rule on them that learns a label the scaffolding gives away (and no more than chance otherwise)."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from sklearn.metrics import average_precision_score

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from juliet_slices import MARKERS, marker_counts, scaffold_masks, scaffolding_rule  # noqa: E402

FIXED = 'void FUNC_1 ( ) { if ( globalReturnsFalse ( ) ) { printLine ( "STR" ) ; } else { VAR_1 = 5 ; } }'
FLAWED = "void FUNC_1 ( ) { if ( globalReturnsTrue ( ) ) { VAR_1 [ 10 ] = 0 ; } }"
PLAIN = "int FUNC_2 ( int VAR_1 ) { return VAR_1 + 1 ; }"


def items(texts: list[str], labels: list[int]):
    return SimpleNamespace(texts=texts, labels=torch.tensor(labels))


def test_the_markers_are_counted_as_the_normaliser_writes_them():
    counts = marker_counts([FIXED, FLAWED, "if ( 0 ) { }\nif ( 0 ) { } else { }  x != 5"])
    named = dict(zip(MARKERS, counts[0]))
    assert named["globalReturnsFalse ( )"] == 1 and named['printLine ( "STR" )'] == 1 and named["else"] == 1
    assert counts[1][:len(MARKERS)].sum() == 0  # the flawed twin's taken guard is no marker
    assert dict(zip(MARKERS, counts[2]))["if ( 0 )"] == 2 and dict(zip(MARKERS, counts[2]))["!= 5"] == 1
    masks = scaffold_masks(items([FIXED, FLAWED, PLAIN, "while ( 1 ) { } else"], [0, 1, 0, 1]))
    assert masks["marked"].tolist() == [True, False, False, False]  # else alone does not mark a function
    assert masks["plain"].tolist() == [False, True, True, True] and masks["all"].all()


def test_the_rule_reads_a_label_the_scaffolding_gives_away_and_nothing_else():
    rng = random.Random(0)
    twins = [(FIXED, 0), (FLAWED, 1), (PLAIN, 0), (PLAIN.replace("+ 1", "- 1"), 1)]
    train, val, test = ([twins[rng.randrange(4)] for _ in range(n)] for n in (200, 100, 400))
    rule = scaffolding_rule(items(*zip(*train)), items(*zip(*val)), 2, 0, 1)
    texts, labels = zip(*test)
    probs = rule(items(list(texts), list(labels)))[:, 1]
    marked = [t in (FIXED, FLAWED) for t in texts]
    on = [i for i, m in enumerate(marked) if m]
    off = [i for i, m in enumerate(marked) if not m]
    assert average_precision_score([labels[i] for i in on], probs[on]) == 1.0  # the guard tells fixed from flawed
    plain_pr_auc = average_precision_score([labels[i] for i in off], probs[off])
    share = sum(labels[i] for i in off) / len(off)
    assert abs(plain_pr_auc - share) < 0.1  # PLAIN and its twin share every marker: chance there
