"""Code datasets: functions as fixed-length int64 token tensors in memory, split by flaw variant.

`load_code(spec, ...)` reads
  juliet:DIR        the Juliet C/C++ suite (DIR = the unpacked juliet-c folder), labelled by `task`
  code:DIR          any C/C++ tree: every function, unlabelled, no test split
  code:FILE.jsonl   records {"code": str, "label": int | str}, one function each

An item is int64 (V, L): row 0 the normalised function, rows 1.. V-1 semantics-preserving
variants of it (contrastive.code.transforms, drawn once at load time with a fixed seed), each
L = max_tokens long, padded with 0. Labels are int64 or None. A variant's seed is a hash of the
function's text (not its place in the list), so a function gets the same variants in every subset.

Parsing and drawing variants are the slow part of a load (minutes for the whole Juliet suite); both are
kept in a cache keyed by content (contrastive.code.cache), so a second load reads them back.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat

import torch

from contrastive.code.cache import SourceCache
from contrastive.code.extract import PARTIAL, snippet_function
from contrastive.code.juliet import VULNERABLE, case_of, label_of_name, source_files, variant_of
from contrastive.code.transforms import RESERVED, source_variant, tokens_of
from contrastive.errors import ContrastiveError

PAD, UNK, MASK = 0, 1, 2
SPECIALS = ("<pad>", "<unk>", "<mask>")
TASKS = ("vulnerable", "cwe")
SPLIT_SEED = 0  # the train/test split of flaw variants: fixed for every run, whatever the subset drawn
SUBSET_SEED = 0  # which test cases a capped Juliet run reads
TEST_FRACTION = 0.2  # of flaw variants (code:FILE.jsonl: of records) in the test split
MAX_TOKENS = 512  # the default length of a function (contrastive.code.Options.max_tokens says why)
MIN_COUNT = 2  # a token seen once in training is <unk> (the usual cut for code vocabularies)
ACCEPTED_SPECS = "juliet:DIR, code:DIR, code:FILE.jsonl"


@dataclass(frozen=True)
class Sample:
    text: str  # normalised source
    tokens: tuple[str, ...]
    language: str
    group: str  # the unit of the split: a Juliet flaw variant, a file, a record
    label: str | None  # the task's label name
    cwe: int = -1
    source: str = ""  # file:function, for item ids (the raw name never reaches the model)
    line: int = 0  # 1-based first line of the function in its file (of its record for jsonl); 0 unknown


class CodeSet(torch.utils.data.Dataset):
    """Token tensors int64 (N, V, L) with optional int64 labels (N,); items are ((V, L), label or -1).
    Beside them, per item: ids (file:function), groups, CWEs, normalised texts and first lines (0: unknown)."""

    def __init__(self, tokens: torch.Tensor, labels=None, ids=None, groups=None, cwes=None, texts=None,
                 lines=None):
        if tokens.dtype != torch.int64 or tokens.dim() != 3:
            raise ValueError(f"tokens must be int64 (N, V, L), got {tokens.dtype} {tuple(tokens.shape)}")
        n = len(tokens)
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        self.tokens, self.labels = tokens, labels
        self.ids = list(ids) if ids is not None else [f"item:{i}" for i in range(n)]
        self.groups = list(groups) if groups is not None else list(self.ids)
        self.cwes = torch.as_tensor(cwes if cwes is not None else [-1] * n, dtype=torch.int64)
        self.texts = list(texts) if texts is not None else [""] * n
        self.lines = [int(x) for x in lines] if lines is not None else [0] * n

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i):
        return self.tokens[i], int(self.labels[i]) if self.labels is not None else -1

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def in_memory(self) -> bool:
        return True

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """int64 (len(indices), V, L)."""
        return self.tokens[indices]

    def with_labels(self, labels) -> CodeSet:
        return CodeSet(self.tokens, labels, self.ids, self.groups, self.cwes, self.texts, self.lines)

    def subset(self, indices) -> CodeSet:
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        pick = idx.tolist()
        return CodeSet(self.tokens[idx].clone(), self.labels[idx] if self.labels is not None else None,
                       [self.ids[i] for i in pick], [self.groups[i] for i in pick], self.cwes[idx],
                       [self.texts[i] for i in pick], [self.lines[i] for i in pick])


@dataclass
class CodeSplits:
    modality = "code"  # class attribute: the modality that reads these splits (contrastive.modality)

    name: str
    train: CodeSet
    test: CodeSet | None
    num_classes: int
    classes: list[str]
    positive_class: int | None  # the index of "vulnerable" (F1 and PR-AUC are of it), else None
    vocab: list[str]
    max_tokens: int
    task: str
    stats: dict = field(default_factory=dict)


# --- labels, duplicates, split --------------------------------------------------------------

def drop_duplicates(samples: list[Sample]) -> tuple[list[Sample], int, int]:
    """(the first sample of every normalised body, duplicates removed, samples dropped because their
    body occurs with two labels). Juliet's flawed and fixed sinks are often the same code."""
    labels: dict[str, set] = {}
    for s in samples:
        labels.setdefault(s.text, set()).add(s.label)
    seen, kept, duplicates, conflicting = set(), [], 0, 0
    for s in samples:
        if len(labels[s.text]) > 1:
            conflicting += 1
        elif s.text in seen:
            duplicates += 1
        else:
            seen.add(s.text)
            kept.append(s)
    return kept, duplicates, conflicting


def in_test(group: str) -> bool:
    """Whether a group (a Juliet flaw variant) is in the test split: a fixed hash of its name and SPLIT_SEED."""
    digest = hashlib.sha1(f"{SPLIT_SEED}/{group}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32 < TEST_FRACTION


def build_vocab(token_lists, size: int) -> list[str]:
    """Specials, the reserved placeholders, then tokens seen MIN_COUNT times or more, most frequent first."""
    reserved = [f"{kind}_{i}" for kind, n in RESERVED.items() for i in range(1, n + 1)]
    counts = Counter()
    for tokens in token_lists:
        counts.update(tokens)  # counted in C row by row, not by one Python generator over every token
    fixed = list(SPECIALS) + reserved
    taken = set(fixed)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    frequent = [t for t, c in ranked if c >= MIN_COUNT and t not in taken]
    return fixed + frequent[:max(0, size - len(fixed))]


def encode(token_rows: list[list[str]], index: dict[str, int], length: int) -> torch.Tensor:
    """int64 (V, L): each row's ids, cut or padded to `length`. One tensor is made from all the ids, not
    one per row: encoding the whole suite's ~300,000 rows then takes seconds (2.7 s for its training split)."""
    ids, kept = [], []
    for tokens in token_rows:
        cut = tokens[:length]
        ids += map(index.get, cut, repeat(UNK, len(cut)))
        kept.append(len(cut))
    out = torch.zeros(len(token_rows), length, dtype=torch.int64)
    out[torch.arange(length) < torch.tensor(kept, dtype=torch.int64)[:, None]] = torch.tensor(ids, dtype=torch.int64)
    return out


def variant_rows(sample: Sample, variants: int, seed: int) -> list[list[str]]:
    """The sample's tokens, then variants - 1 source-level variants (fixed by `seed`)."""
    rng = random.Random(seed)
    rows = [list(sample.tokens)]
    for _ in range(variants - 1):
        rows.append(tokens_of(source_variant(sample.text, sample.language, rng), sample.language))
    return rows


def cached_rows(sample: Sample, variants: int, cache: SourceCache) -> list[list[str]]:
    """variant_rows seeded by a hash of the sample's text (cache.text_seed), read from `cache` when drawn before."""
    drawn = cache.variant_rows(sample.text, sample.language, variants,
                               lambda seed: variant_rows(sample, variants, seed)[1:])
    return [list(sample.tokens)] + drawn


def to_set(samples: list[Sample], rows: list[list[list[str]]], index, length, classes) -> CodeSet:
    """The samples encoded, each with its V rows: int64 (N, V, L)."""
    variants = len(rows[0]) if rows else 1
    tokens = encode([row for r in rows for row in r], index, length).view(len(rows), variants, length)
    labels = None if classes is None else [classes.index(s.label) for s in samples]
    return CodeSet(tokens, labels, [s.source for s in samples], [s.group for s in samples], [s.cwe for s in samples],
                   [s.text for s in samples], [s.line for s in samples])


def assemble(name: str, samples: list[Sample], *, task: str, max_tokens: int, variants: int, vocab_size: int,
             vocab: list[str] | None, labelled: bool, split: bool, stats: dict, log,
             cache: SourceCache) -> CodeSplits:
    """Deduplicate, split by group, draw variants, build the vocabulary from the training split, encode."""
    samples, stats["duplicates"], stats["conflicting"] = drop_duplicates(samples)
    if not samples:
        raise ContrastiveError(f"no functions left in {name} after reading and deduplication; check the path")
    train = [s for s in samples if not (split and in_test(s.group))]
    test = [s for s in samples if split and in_test(s.group)]
    rows = {id(s): cached_rows(s, variants, cache) for s in samples}
    cache.save(log)
    vocab = vocab or build_vocab((row for s in train for row in rows[id(s)]), vocab_size)
    index = {t: i for i, t in enumerate(vocab)}
    stats["truncated"] = sum(len(s.tokens) > max_tokens for s in samples)
    classes = sorted({s.label for s in samples}, key=_class_order) if labelled else None
    stats["train"], stats["test"] = len(train), len(test)
    log(summary_line(name, stats))
    return CodeSplits(name=name, train=to_set(train, [rows[id(s)] for s in train], index, max_tokens, classes),
                      test=to_set(test, [rows[id(s)] for s in test], index, max_tokens, classes) if split else None,
                      num_classes=len(classes or []), classes=list(classes or []),
                      positive_class=positive_class(classes or []), vocab=vocab, max_tokens=max_tokens, task=task,
                      stats=stats)


def _class_order(label: str):
    digits = label[3:] if label.startswith("CWE") else label
    return (0, int(digits), label) if digits.lstrip("-").isdigit() else (1, 0, label)


def positive_class(classes: list[str]) -> int | None:
    """The class whose F1 and PR-AUC a binary task reports: "vulnerable", or "1" of {0, 1}."""
    if VULNERABLE in classes:
        return classes.index(VULNERABLE)
    return classes.index("1") if sorted(classes) == ["0", "1"] else None


def summary_line(name: str, stats: dict) -> str:
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(stats.get("skipped", {}).items())) or "none"
    partial = f"; {stats['partial']} parse in part, only their clean functions read" if stats.get("partial") else ""
    return (f"{name}: {stats.get('files', 0)} files ({skipped} skipped{partial}), "
            f"{stats.get('functions', 0)} functions, "
            f"{stats.get('unlabelled', 0)} without a label left out, {stats['duplicates']} duplicates and "
            f"{stats['conflicting']} with a body seen under two labels dropped, {stats['truncated']} truncated to "
            f"the maximum length; {stats['train']} train / {stats['test']} test")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


# --- the three sources -----------------------------------------------------------------------

def juliet_samples(root: str, task: str, cases: int | None, stats: dict, cache: SourceCache) -> list[Sample]:
    """Labelled functions of the Juliet tree, grouped by flaw variant; with `cases`, of that many test cases
    drawn with SUBSET_SEED."""
    files = [(p, case_of(p)) for p in source_files(root)]
    files = [(p, c) for p, c in files if c is not None]
    if not files:
        raise ContrastiveError(f"no Juliet test-case files (CWE<id>_..._<nn>.c) under {root}; pass the unpacked "
                               f"juliet-c folder as juliet:DIR")
    names = sorted({case for _, (case, _cwe) in files})
    if cases:
        names = random.Random(SUBSET_SEED).sample(names, min(cases, len(names)))
    names = set(names)  # looked up once per file: a list made the whole suite's lookups quadratic
    samples = []
    for path, (case, cwe) in files:
        if case not in names:
            continue
        rel = os.path.relpath(path, root)
        for f in _read_counted(path, stats, cache):
            kind = label_of_name(f.name)
            if kind is None:
                stats["unlabelled"] = stats.get("unlabelled", 0) + 1
                continue
            label = kind if task == "vulnerable" else f"CWE{cwe}"
            samples.append(Sample(f.text, f.tokens, f.language, variant_of(case), label, cwe,
                                  f"{rel}:{f.name}", f.line))
    return samples


def _read_counted(path: str, stats: dict, cache: SourceCache):
    functions, reason = cache.functions(path)
    stats["files"] = stats.get("files", 0) + 1
    if reason == PARTIAL:
        stats["partial"] = stats.get("partial", 0) + 1
    elif reason:
        _count_skip(stats, reason)
    stats["functions"] = stats.get("functions", 0) + len(functions)
    return functions


def _count_skip(stats: dict, reason: str) -> None:
    skipped = stats.setdefault("skipped", {})
    skipped[reason] = skipped.get(reason, 0) + 1


def tree_samples(root: str, stats: dict, cache: SourceCache) -> list[Sample]:
    """Every function of every C/C++ file under `root`, unlabelled; grouped by file."""
    samples = []
    for path in source_files(root):
        rel = os.path.relpath(path, root)
        for f in _read_counted(path, stats, cache):
            samples.append(Sample(f.text, f.tokens, f.language, rel, None, -1, f"{rel}:{f.name}", f.line))
    return samples


def jsonl_samples(path: str, stats: dict) -> list[Sample]:
    """One sample per record {"code": str, "label": int | str}; a record is its own group."""
    samples = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                code, label = record["code"], record["label"]
            except (ValueError, KeyError, TypeError):
                raise ContrastiveError(f"{path}:{number} is not a record {{\"code\": str, \"label\": int|str}}; "
                                       f"fix that line") from None
            stats["files"] = stats.get("files", 0) + 1
            function, reason = snippet_function(str(code), f"{path}:{number}")
            if function is None:
                _count_skip(stats, reason)
                continue
            stats["functions"] = stats.get("functions", 0) + 1
            samples.append(Sample(function.text, function.tokens, function.language, f"record{number}", str(label),
                                  -1, f"line {number}", function.line))
    return samples


def load_code(spec: str, *, task: str = "vulnerable", max_tokens: int = MAX_TOKENS, variants: int = 4,
              vocab_size: int = 8000, juliet_cases: int | None = None, vocab: list[str] | None = None,
              log=_stderr, cache: SourceCache | None = None) -> CodeSplits:
    """The data named by `spec` (see the module docstring); `vocab`: an encoder's, instead of building one;
    `cache`: where parsed files and drawn variants are kept (default: the folder contrastive.code.cache names)."""
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in ("juliet", "code") or not path:
        raise ContrastiveError(f"unknown code data spec {spec!r}; use one of: {ACCEPTED_SPECS}")
    if task not in TASKS:
        raise ContrastiveError(f"unknown task '{task}'; choose one of: {', '.join(TASKS)}")
    if max_tokens < 8 or variants < 1:
        raise ContrastiveError(f"--max-tokens must be at least 8 and --variants at least 1; got {max_tokens}, "
                               f"{variants}")
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(root):
        raise ContrastiveError(f"{root} does not exist (from --data {spec}); check the path")
    stats: dict = {}
    cache = cache or SourceCache()
    common = dict(task=task, max_tokens=max_tokens, variants=variants, vocab_size=vocab_size, vocab=vocab,
                  stats=stats, log=log, cache=cache)
    if kind == "juliet":
        samples = juliet_samples(root, task, juliet_cases, stats, cache)
        cache.save(log)  # the parses kept even if drawing the variants is cut short
        return assemble(f"juliet:{root}", samples, labelled=True, split=True, **common)
    if os.path.isfile(root):
        return assemble(f"code:{root}", jsonl_samples(root, stats), labelled=True, split=True, **common)
    samples = tree_samples(root, stats, cache)
    cache.save(log)
    return assemble(f"code:{root}", samples, labelled=False, split=False, **common)
