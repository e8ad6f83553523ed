"""Normalising one function so that nothing in it can announce a label (issue: no label leaks).

Juliet names its labels everywhere: function names (bad, goodG2B, ...), the CWE and test-case
names, comments (POTENTIAL FLAW, FIX), strings ("Benign, fixed string"). A normalised function
keeps the code's tokens in order, with:

- comments dropped;
- the storage class of the function itself dropped (`static`, `inline`, `extern` before its
  name): Juliet declares its top-level flawed function public and its fixed variants static, so
  `static` alone would announce "fixed" (static locals inside the body are kept);
- every identifier renamed to a placeholder (FUNC_n for what is declared or called as a function,
  TYPE_n, FIELD_n, NS_n, LABEL_n, VAR_n for the rest), consistently within the function and
  numbered in order of first use, except the library and API names of contrastive.code.names;
- every string literal that holds words replaced by "STR" (format strings such as "%s\\n" stay:
  they decide format-string flaws, and hold no words);
- as a last guard, any token still carrying a label word renamed like an identifier.

The result is text (tokens joined by spaces, line breaks kept where the source had them, so
preprocessor lines stay lines) and its token list.
"""

from __future__ import annotations

import re

from contrastive.code.names import KEPT_NAMES
from contrastive.code.parse import leaves

# Words that announce a Juliet label or test case: tests check no normalised token holds one, in any case.
LABEL_WORDS = ("bad", "good", "g2b", "b2g", "cwe", "flaw", "fix")

PLACEHOLDER_KINDS = ("VAR", "FUNC", "TYPE", "FIELD", "NS", "LABEL")
PLACEHOLDER = re.compile(r"\b(VAR|FUNC|TYPE|FIELD|NS|LABEL)_(\d+)\b")

_KIND_OF_NODE = {"identifier": "VAR", "field_identifier": "FIELD", "type_identifier": "TYPE",
                 "namespace_identifier": "NS", "statement_identifier": "LABEL"}
_STRINGS = frozenset({"string_literal", "raw_string_literal"})
# String content without words: conversions (%-5.2ls), escapes (\n, \0) and ASCII non-letters.
_WORDLESS = re.compile(r'(?:%[-+ #0-9.*]*(?:hh|h|ll|l|L|z|j|t)?[A-Za-z%]|\\.|[ -$&-@\[\]-`{-~])*')
_WORD = re.compile(r"[A-Za-z_]\w*")


def carries_label(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in LABEL_WORDS)


class Renamer:
    """Text -> placeholder, the same placeholder for every use of a name within one function."""

    def __init__(self):
        self.names: dict[str, str] = {}
        self.counts = dict.fromkeys(PLACEHOLDER_KINDS, 0)

    def __call__(self, text: str, kind: str = "VAR") -> str:
        if text in KEPT_NAMES and not carries_label(text):
            return text
        if text not in self.names:
            self.counts[kind] += 1
            self.names[text] = f"{kind}_{self.counts[kind]}"
        return self.names[text]


def normalise_string(text: str) -> str:
    """A string literal with its prefix and quotes; its content kept only when it holds no words."""
    first, last = text.find('"'), text.rfind('"')
    if first < 0 or last <= first:
        return '"STR"'
    prefix, content = text[:first], text[first + 1:last]
    if prefix.upper().startswith(("R", "LR", "UR", "U8R")) or not _WORDLESS.fullmatch(content):
        return f'{prefix.rstrip("R")}"STR"'
    return text


def _function_role(node) -> bool:
    """Whether an identifier names a function: the declarator of a function, or the callee of a call."""
    child, parent = node, node.parent
    while parent is not None and parent.type in ("qualified_identifier", "template_function", "destructor_name"):
        child, parent = parent, parent.parent
    if parent is None:
        return False
    field = {"function_declarator": "declarator", "call_expression": "function"}.get(parent.type)
    held = parent.child_by_field_name(field) if field else None
    return held is not None and held.start_byte == child.start_byte and held.end_byte == child.end_byte


def normalise_leaf(leaf, text: str, rename: Renamer) -> str:
    kind = leaf.type
    if kind in _KIND_OF_NODE:
        out = rename(text, "FUNC" if kind == "identifier" and _function_role(leaf) else _KIND_OF_NODE[kind])
    elif kind in _STRINGS:
        out = normalise_string(text)
    elif kind == "preproc_arg":  # a macro body inside a function: its words renamed, its strings emptied
        out = _WORD.sub(lambda m: rename(m.group()), re.sub(r'"(?:[^"\\]|\\.)*"', '"STR"', text)).strip()
    else:
        out = text
    if carries_label(out):
        out = rename(text) if _WORD.fullmatch(text) else "UNK_LITERAL"
    return out


def _head_specifiers(node) -> set[tuple[int, int]]:
    """Byte spans of a function definition's own storage-class specifiers (none for other nodes)."""
    if node.type != "function_definition":
        return set()
    return {(c.start_byte, c.end_byte) for c in node.children if c.type == "storage_class_specifier"}


def normalise(node, source: bytes) -> tuple[str, list[str]]:
    """(normalised text, tokens) of a parsed node (a function) of `source`."""
    rename, tokens, parts, end = Renamer(), [], [], None
    dropped = _head_specifiers(node)
    for leaf in leaves(node):
        if leaf.type == "comment" or any(a <= leaf.start_byte and leaf.end_byte <= b for a, b in dropped):
            continue
        text = source[leaf.start_byte:leaf.end_byte].decode("utf-8", "replace")
        token = normalise_leaf(leaf, text, rename)
        if not token:
            continue
        if end is not None:
            parts.append("\n" if b"\n" in source[end:leaf.start_byte] else " ")
        parts.append(token)
        tokens.append(token)
        end = leaf.end_byte
    return "".join(parts), tokens
