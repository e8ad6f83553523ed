"""Functions out of source files: read (UTF-8 text only), parse, normalise each function_definition.

A file that is binary (holds a NUL byte) or is not UTF-8 yields no function and a reason. Where tree-sitter
reports an ERROR or MISSING node (an unknown macro, say: `FASTCALL_ATTR void f(...)`), the functions whose own
parse is clean are kept and the file is counted as parsing in part; a file with no clean function yields
none. The loaders count the reasons and print one summary line.
"""

from __future__ import annotations

from dataclasses import dataclass

from contrastive.code.normalise import normalise
from contrastive.code.parse import LANGUAGE_OF_SUFFIX, function_name, function_nodes, has_error, parse

SKIP_REASONS = ("binary", "not UTF-8", "does not parse", "unreadable")
# Not a skip: the file's clean functions are read, the ones a parse error touches are left out. In a real C
# project (ujson 5.10.0) 5 of 14 files hold an error somewhere; read in part they give 83 more functions.
PARTIAL = "parses in part"


@dataclass(frozen=True)
class Function:
    name: str  # as declared in the source (never shown to a model)
    text: str  # normalised: no comments, placeholders for names, no words in strings
    tokens: tuple[str, ...]
    language: str  # "c" or "cpp": the grammar that parses `text`
    path: str = ""
    line: int = 0  # 1-based line of the definition's first line (its specifiers) in `path`; 0 when unknown


def language_of(path: str) -> str | None:
    lower = path.lower()
    for suffix, language in LANGUAGE_OF_SUFFIX.items():
        if lower.endswith(suffix):
            return language
    return None


def check_source(data: bytes) -> str | None:
    """Why `data` is not source text we read (binary, not UTF-8), or None."""
    if b"\0" in data:
        return "binary"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    return None


def functions_of(source: bytes, language: str, path: str = "") -> tuple[list[Function], str | None]:
    """(the file's functions, normalised, in source order; why it was skipped, PARTIAL, or None)."""
    reason = check_source(source)
    if reason:
        return [], reason
    root = parse(source, language).root_node
    nodes, broken = function_nodes(root), has_error(root)
    if broken:
        nodes = [node for node in nodes if not has_error(node)]
        if not nodes:
            return [], "does not parse"
    found = []
    for node in nodes:
        text, tokens = normalise(node, source)
        found.append(Function(function_name(node), text, tuple(tokens), language, path, node.start_point[0] + 1))
    return found, PARTIAL if broken else None


def read_functions(path: str) -> tuple[list[Function], str | None]:
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError:
        return [], "unreadable"
    return functions_of(source, language_of(path) or "c", path)


def snippet_function(code: str, path: str = "") -> tuple[Function | None, str | None]:
    """One record's code as one sample (the code of a record is one function, as in the common
    vulnerability datasets): C first, C++ when C does not parse; None and a reason when neither does."""
    source = code.encode("utf-8", "surrogatepass")
    reason = check_source(source)
    if reason:
        return None, reason
    for language in ("c", "cpp"):
        root = parse(source, language).root_node
        if not has_error(root):
            nodes = function_nodes(root)
            name = function_name(nodes[0]) if nodes else ""
            line = nodes[0].start_point[0] + 1 if nodes else 1
            text, tokens = normalise(root, source)
            return Function(name, text, tuple(tokens), language, path, line), None
    return None, "does not parse"
