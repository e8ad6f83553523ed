"""Parsing C and C++ with tree-sitter (its C and C++ grammars from PyPI): function nodes, their
names and their leaves. No regular expression decides what is code."""

from __future__ import annotations

import functools
from typing import Iterator

from contrastive.errors import ContrastiveError

LANGUAGE_OF_SUFFIX = {".c": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp"}

# Nodes read as one token although tree-sitter gives them children (a literal's quotes and content).
ATOMIC = frozenset({"string_literal", "char_literal", "raw_string_literal", "system_lib_string"})

# Where a declarator's own name sits, followed down from a function_definition.
_NAME_HOLDERS = ("function_declarator", "pointer_declarator", "reference_declarator", "parenthesized_declarator",
                 "attributed_declarator")


@functools.lru_cache(maxsize=None)
def parser(language: str):
    """A tree-sitter parser for "c" or "cpp" (one per process and language)."""
    try:
        import tree_sitter
        import tree_sitter_c
        import tree_sitter_cpp
    except ImportError:
        raise ContrastiveError("reading source code needs tree-sitter and its grammars; install them with: "
                               "pip install 'contrastive[code]'") from None
    grammar = {"c": tree_sitter_c, "cpp": tree_sitter_cpp}[language]
    return tree_sitter.Parser(tree_sitter.Language(grammar.language()))


def parse(source: bytes, language: str):
    return parser(language).parse(source)


def has_error(node) -> bool:
    """Whether the parse holds an ERROR or a MISSING node anywhere below `node`."""
    return node.has_error or node.is_missing  # tree-sitter marks every ancestor of an ERROR or MISSING node


def function_nodes(root) -> list:
    """Every function_definition in source order, inside preprocessor guards, namespaces and classes
    too; a function defined inside another is part of that one."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            found.append(node)
            continue
        stack.extend(reversed(node.children))
    return found


def function_name(function) -> str:
    """The declared name of a function_definition ("ns::Class::f", "~Klass", "f"), or "" if none."""
    node = function.child_by_field_name("declarator")
    while node is not None and node.type in _NAME_HOLDERS:
        node = node.child_by_field_name("declarator")
    return node.text.decode("utf-8", "replace") if node is not None else ""


def leaves(node) -> Iterator:
    """The tokens of `node` in order: nodes without children, and literals (ATOMIC) as one token."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.child_count == 0 or n.type in ATOMIC:
            yield n
        else:
            stack.extend(reversed(n.children))


def body(function):
    """The compound statement of a function_definition (None for `= default` and the like)."""
    return function.child_by_field_name("body")
