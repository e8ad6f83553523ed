"""What reading source code costs, kept between runs: each file's functions and each function's variants.

Two tables in the cache folder ($CONTRASTIVE_CACHE, else ~/.cache/contrastive), each a folder of
SHARDS JSON files chosen by the key's first two hex digits (functions-<version>/3f.json):

  functions-<version>  {hash of a file's bytes: [skip reason or null, [[name, text, tokens, language,
                       line], ...]]}: what contrastive.code.extract.functions_of gave for those bytes
  variants-<version>   {"<hash of a function's language and normalised text>/<V>": [tokens, ...]}: the
                       V - 1 source-level variants contrastive.code.data.variant_rows drew for it

Tokens are stored joined by NUL, which no source we read holds (extract.check_source refuses it). A key is
the content, never a path: a changed file has a new hash and is parsed again; its old entry stays unused.
<version> is a hash of the modules that produce a table (and of the tree-sitter grammars' versions), so a
change to the parser, the normaliser or the transforms starts a fresh table instead of reading stale
results. A shard is read when a key in it is first asked for, and written (atomically, contrastive.files)
only when something new went into it; two loads writing one shard at once each leave a whole file, the
last one's. Shards keep a small load small: a few files read a few shards, not the whole suite's 590 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path

from contrastive.code.extract import Function, functions_of, language_of
from contrastive.errors import ContrastiveError
from contrastive.files import write_atomic

CACHE_ENV = "CONTRASTIVE_CACHE"
DEFAULT_FOLDER = "~/.cache/contrastive"  # the XDG base-directory spec's per-user cache folder
SEP = "\0"
# What each table's entries are computed by: a change to any of these files starts a new table.
PARSE_MODULES = ("extract.py", "parse.py", "normalise.py")
VARIANT_MODULES = PARSE_MODULES + ("transforms.py",)
GRAMMARS = ("tree-sitter", "tree-sitter-c", "tree-sitter-cpp")
SHARD_DIGITS = 2  # 256 shards: the whole Juliet suite's ~2.3 MB each (its two tables hold ~590 MB)


def cache_folder() -> Path:
    return Path(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_FOLDER))


def digest(data: bytes) -> str:
    """A 128-bit blake2b of `data`, hex: collisions among a few hundred thousand files are not a concern."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def text_key(text: str, language: str) -> str:
    """The key of a normalised function: its language and text, whatever file or subset it came from."""
    return digest(f"{language}{SEP}{text}".encode("utf-8", "surrogatepass"))


def text_seed(text: str, language: str) -> int:
    """A seed fixed by the function's content alone (64 bits of text_key)."""
    return int(text_key(text, language)[:16], 16)


def code_version(modules: tuple[str, ...]) -> str:
    """A short hash of the named modules of contrastive.code and the installed grammars' versions."""
    h = hashlib.blake2b(digest_size=6)
    here = Path(__file__).parent
    for name in modules:
        h.update((here / name).read_bytes())
    for package in GRAMMARS:
        try:
            h.update(f"{package}={metadata.version(package)};".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{package}=none;".encode())
    return h.hexdigest()


class Table:
    """A dict kept on disk as shards of JSON, each read on first use and written back by `save` if it grew."""

    def __init__(self, folder: Path):
        self.folder, self.shards, self.grown = folder, {}, set()

    def shard(self, key: str) -> dict:
        name = key[:SHARD_DIGITS]
        if name not in self.shards:
            self.shards[name] = _read_json(self.folder / f"{name}.json")
        return self.shards[name]

    def get(self, key: str):
        return self.shard(key).get(key)

    def put(self, key: str, value) -> None:
        self.shard(key)[key] = value
        self.grown.add(key[:SHARD_DIGITS])

    def save(self) -> None:
        for name in sorted(self.grown):
            write_atomic(self.folder / f"{name}.json", json.dumps(self.shards[name], separators=(",", ":")),
                         flag=f"${CACHE_ENV}")
        self.grown.clear()


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError):  # none yet, or unreadable: started afresh (and replaced when saved)
        return {}
    return entries if isinstance(entries, dict) else {}


class SourceCache:
    """Functions of files and variants of functions, read from the cache or computed and added to it."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else cache_folder()
        self.parsed = Table(self.folder / f"functions-{code_version(PARSE_MODULES)}")
        self.variants = Table(self.folder / f"variants-{code_version(VARIANT_MODULES)}")
        self.shared: dict[str, tuple[str, ...]] = {}  # NUL-joined tokens -> their tuple, one per body read

    def functions(self, path: str) -> tuple[list[Function], str | None]:
        """As extract.read_functions(path), parsing only bytes not seen before."""
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError:
            return [], "unreadable"
        key = digest(source)
        cached = self.parsed.get(key)
        if cached is not None:
            reason, records = cached
            return [Function(name, text, self.tokens(tokens), language, path, line)
                    for name, text, tokens, language, line in records], reason
        found, reason = functions_of(source, language_of(path) or "c", path)
        self.parsed.put(key, [reason, [[f.name, f.text, SEP.join(f.tokens), f.language, f.line] for f in found]])
        return found, reason

    def variant_rows(self, text: str, language: str, variants: int, draw) -> list[list[str]]:
        """The variants - 1 drawn rows of a function stored as `variants` rows: cached, or draw(seed), whose
        seed text_seed gives."""
        if variants <= 1:
            return []
        key = f"{text_key(text, language)}/{variants}"
        cached = self.variants.get(key)
        if cached is not None:
            return [list(_split(row)) for row in cached]
        rows = draw(text_seed(text, language))
        self.variants.put(key, [SEP.join(row) for row in rows])
        return rows

    def tokens(self, joined: str) -> tuple[str, ...]:
        """A body's tokens, split once however many files hold it (Juliet repeats its bodies: its 100,883
        files hold 413,640 functions, 74,124 kept after deduplication; measured on the whole suite)."""
        found = self.shared.get(joined)
        if found is None:
            found = self.shared[joined] = _split(joined)
        return found

    def save(self, log) -> None:
        """Write the tables that grew; a folder that cannot be written is reported, not fatal."""
        for table in (self.parsed, self.variants):
            try:
                table.save()
            except ContrastiveError as e:
                log(f"code cache not saved: {e}")
                return


def _split(joined: str) -> tuple[str, ...]:
    """Tokens back from their NUL-joined form, interned: a vocabulary's few thousand strings are then
    shared by the millions of tokens of a whole suite instead of each token holding its own copy."""
    return tuple(map(sys.intern, joined.split(SEP))) if joined else ()
