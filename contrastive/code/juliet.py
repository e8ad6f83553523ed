"""The Juliet Test Suite for C/C++ 1.3 (NIST SARD; public domain): its layout and its labels.

    juliet-c/testcases/CWE<id>_<name>/[sNN/]CWE<id>_<name>__<variant>_<flow>[a-e|_bad|_goodG2B|...].c|.cpp

A test case is one flaw variant and flow: CWE121_..._CWE129_fgets_22 is held by its files
..._22a.c and ..._22b.c together. Its flaw variant is the id without the flow number,
CWE121_..._CWE129_fgets: the flow variants _01 ... _84 of one flaw differ only in the control
flow around the same source and sink, so the train/test split keeps a flaw variant whole (issue 24).

Labels come from function names, which are then erased: a name holding "bad" is flawed
(vulnerable), one holding "good" is fixed (goodG2B, goodB2GSink, good1, ...). The dispatcher
`..._good()` only calls the good variants and is left out, as are main() and helpers without a
label (static flags such as staticTrue).
"""

from __future__ import annotations

import os
import re

from contrastive.code.extract import language_of

CASE_OF_FILE = re.compile(r"^(CWE(\d+)_.+_\d+)(?:[a-z]|_bad|_good\w*)?$")
FLOW_OF_CASE = re.compile(r"_\d+$")
VULNERABLE, FIXED = "vulnerable", "fixed"


def case_of(path: str) -> tuple[str, int] | None:
    """(test-case id, CWE number) of a Juliet source file, or None for a file that is not one."""
    stem = os.path.splitext(os.path.basename(path))[0]
    match = CASE_OF_FILE.match(stem)
    return (match.group(1), int(match.group(2))) if match else None


def variant_of(case: str) -> str:
    """The flaw variant of a test-case id: CWE121_..__CWE129_fgets_22 -> CWE121_..__CWE129_fgets."""
    return FLOW_OF_CASE.sub("", case)


def label_of_name(name: str) -> str | None:
    """vulnerable, fixed, or None (main, helpers, the good() dispatcher)."""
    last = name.split("::")[-1].lstrip("~").lower()
    if last == "good" or last.endswith("_good"):
        return None  # the dispatcher: good1(); good2(); ... (a fixed label no flawed function could share)
    if "bad" in last:
        return VULNERABLE
    if "good" in last:
        return FIXED
    return None


def source_files(root: str) -> list[str]:
    """The .c/.cpp files under DIR/testcases (or DIR itself), sorted; testcasesupport is left out."""
    top = os.path.join(root, "testcases") if os.path.isdir(os.path.join(root, "testcases")) else root
    found = []
    for parent, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "testcasesupport")
        found += [os.path.join(parent, f) for f in sorted(files) if language_of(f)]
    return found


TOP_CWES = 9  # CWEs coloured one by one in the report's map; the rest share "other" (ten colours in all)


def colourings(dataset) -> dict:
    """{name: (int64 (N,) colour per item, -1 for none; colour names)}: what the report's t-SNE of a
    dataset's items is coloured by beside its labels. Juliet items give their test case's CWE (the
    TOP_CWES most frequent here, the rest "other") and vulnerable / fixed, read from the function's
    name in its id (ids never reach the model). Items of other sources have neither and give {}."""
    import torch

    out = {}
    cwes = dataset.cwes.tolist()
    known = sorted({c for c in cwes if c >= 0}, key=lambda c: (-cwes.count(c), c))
    if known:
        top = known[:TOP_CWES]
        rest = len(known) > len(top)
        names = [f"CWE{c}" for c in top] + (["other"] if rest else [])
        out["cwe"] = (torch.tensor([top.index(c) if c in top else (len(top) if c >= 0 else -1) for c in cwes],
                                   dtype=torch.int64), names)
    kinds = [label_of_name(i.rsplit(":", 1)[-1]) if ":" in i else None for i in dataset.ids]
    if any(k is not None for k in kinds):
        names = [FIXED, VULNERABLE]  # the order (and so the colours) of the vulnerable task's classes
        out["vulnerable"] = (torch.tensor([names.index(k) if k else -1 for k in kinds], dtype=torch.int64), names)
    return out
