"""Source-level views: transformations of a normalised function that keep its meaning and its
parse. Each takes the text and a random.Random and returns new text that tree-sitter parses
without an ERROR node whenever the input did (tests check every one).

All three are semantics-preserving program transformations from ContraCode (Jain et al. 2021,
"Contrastive Code Representation Learning", sec. 3.1: identifier modification, dead-code
insertion, statement reordering), written here for C/C++ parse trees:

- rename_placeholders: alpha-renaming, a one-to-one map of the function's own names (the
  VAR_n / FUNC_n / ... placeholders) onto other placeholders of the same kind. Library names
  are never touched: renaming strcpy would change what the program calls.
- insert_dead_code: `if (0) { <a copy of one of the function's statements> }` after the leading
  declarations; the branch is never taken.
- reorder_declarations: a random order of adjacent declarations that do not refer to one
  another's names and have no side effects (no call, assignment or increment in an initialiser).

Parsing costs time, so these run once per function at load time (contrastive.code.data keeps a
few variants per function) and a training step only picks among the variants.
"""

from __future__ import annotations

import random

from contrastive.code.normalise import PLACEHOLDER
from contrastive.code.parse import body, function_nodes, leaves, parse

# How many placeholders of each kind the vocabulary always holds, so renamed code stays known.
RESERVED = {"VAR": 64, "FUNC": 16, "TYPE": 16, "FIELD": 16, "NS": 4, "LABEL": 4}
MAX_DEAD_STATEMENT = 200  # characters: a longer statement is not copied as dead code
_SIDE_EFFECTS = frozenset({"call_expression", "assignment_expression", "update_expression", "new_expression",
                           "delete_expression", "compound_statement", "lambda_expression"})


def rename_placeholders(text: str, rng: random.Random) -> str:
    """Every placeholder of a kind mapped one-to-one onto a random other one of that kind."""
    used: dict[str, list[int]] = {}
    for kind, number in PLACEHOLDER.findall(text):
        if int(number) not in used.setdefault(kind, []):
            used[kind].append(int(number))
    mapping = {}
    for kind, numbers in used.items():
        span = max(RESERVED[kind], max(numbers))
        for old, new in zip(numbers, rng.sample(range(1, span + 1), len(numbers))):
            mapping[f"{kind}_{old}"] = f"{kind}_{new}"
    return PLACEHOLDER.sub(lambda m: mapping[m.group()], text)


def _statements(block) -> list:
    return [c for c in block.named_children if c.type != "comment"]


def _main_block(root):
    functions = function_nodes(root)
    return body(functions[0]) if functions else None


def insert_dead_code(text: str, language: str, rng: random.Random) -> str:
    """`if ( 0 ) { <copy of one of its expression statements> }` at a random place after the leading
    declarations of the function's body (an empty statement when it has none)."""
    source = text.encode("utf-8")
    block = _main_block(parse(source, language).root_node)
    if block is None or block.type != "compound_statement":
        return text
    statements = _statements(block)
    leading = next((i for i, s in enumerate(statements) if s.type != "declaration"), len(statements))
    where = rng.randint(leading, len(statements))
    at = statements[where].start_byte if where < len(statements) else block.end_byte - 1
    copies = [n for n in _descendants(block) if n.type == "expression_statement"
              and n.end_byte - n.start_byte <= MAX_DEAD_STATEMENT]
    pick = rng.choice(copies) if copies else None
    dead = source[pick.start_byte:pick.end_byte] if pick is not None else b";"
    inserted = b"if ( 0 ) { " + dead + b" }\n"
    return (source[:at] + inserted + source[at:]).decode("utf-8")


def _descendants(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.children)


def _declared(declaration) -> set[str]:
    names = set()
    for node in declaration.children_by_field_name("declarator"):
        while node is not None and node.type not in ("identifier", "field_identifier"):
            node = node.child_by_field_name("declarator")
        if node is not None:
            names.add(node.text.decode("utf-8"))
    return names


def _movable(declaration) -> bool:
    return not any(n.type in _SIDE_EFFECTS for n in _descendants(declaration))


def _random_order(facts: list[tuple[set, set]], rng: random.Random) -> list[int]:
    """A random order of items where two items that refer to each other's names keep their order."""
    def bound(i, j):
        (di, mi), (dj, mj) = facts[i], facts[j]
        return bool(di & mj or dj & mi)

    placed, order = set(), []
    while len(order) < len(facts):
        ready = [j for j in range(len(facts)) if j not in placed
                 and all(i in placed for i in range(j) if bound(i, j))]
        pick = rng.choice(ready)
        placed.add(pick)
        order.append(pick)
    return order


def _runs(block) -> list[list]:
    """Maximal runs of adjacent movable declarations in a compound statement."""
    runs, current = [], []
    for child in _statements(block):
        if child.type == "declaration" and _movable(child):
            current.append(child)
            continue
        if len(current) > 1:
            runs.append(current)
        current = []
    if len(current) > 1:
        runs.append(current)
    return runs


def reorder_declarations(text: str, language: str, rng: random.Random) -> str:
    """Every run of adjacent movable declarations, in every block, put in a random allowed order."""
    source = text.encode("utf-8")
    root = parse(source, language).root_node
    edits = []
    for block in (n for n in _descendants(root) if n.type == "compound_statement"):
        for run in _runs(block):
            facts = [(_declared(d), {leaf.text.decode("utf-8") for leaf in leaves(d)}) for d in run]
            order = _random_order(facts, rng)
            pieces = b"\n".join(source[run[i].start_byte:run[i].end_byte] for i in order)
            edits.append((run[0].start_byte, run[-1].end_byte, pieces))
    for start, end, pieces in sorted(edits, reverse=True):
        source = source[:start] + pieces + source[end:]
    return source.decode("utf-8")


def source_variant(text: str, language: str, rng: random.Random) -> str:
    """A random composition: renaming always, dead code and reordering each with probability 1/2."""
    text = rename_placeholders(text, rng)
    if rng.random() < 0.5:
        text = reorder_declarations(text, language, rng)
    if rng.random() < 0.5:
        text = insert_dead_code(text, language, rng)
    return text


def tokens_of(text: str, language: str) -> list[str]:
    """The tokens of normalised text, read off its parse tree (comments were dropped already)."""
    source = text.encode("utf-8")
    return [source[n.start_byte:n.end_byte].decode("utf-8") for n in leaves(parse(source, language).root_node)
            if n.type != "comment" and n.end_byte > n.start_byte]
