"""Command-line flags from dataclass fields: each default, help text and choice list is written once.

A field declared with `opt(...)` carries its help (and optionally choices, a flag name, a short
flag, or `cli=False`) in its metadata. `add_fields` turns the fields of a dataclass into argparse
flags whose default is `argparse.SUPPRESS`, so the parsed namespace holds only the flags the user
typed; `given` reads them back as a dict and `build` applies that dict to a base config. A CLI
therefore does

    cfg = build(Config, preset or Config(), given(args, Config))

and a typed flag always wins over a preset, while untouched fields keep the preset's values.
A field whose annotation is a dataclass is flattened: `finetune: Budget` gives `--finetune-epochs`.
Annotations are resolved with `typing.get_type_hints`, so the classes must be defined at module level.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING

from contrastive.errors import ContrastiveError


def opt(default=MISSING, help: str = "", *, default_factory=MISSING, choices=None, flag: str | None = None,
        cli: bool = True, short: str | None = None, positive: bool = False) -> dataclasses.Field:
    """A dataclass field whose metadata describes its flag.

    `choices` is a tuple, or a zero-argument callable returning one (called when the parser is
    built, so a registry can fill it); `flag` overrides the flag name (e.g. "--k"); `short` adds a
    short flag (e.g. "-e"); `cli=False` keeps the field off the command line (derived values);
    `positive`: a value of 0 or less is refused (check_positive).
    """
    metadata = {"help": help, "choices": choices, "flag": flag, "cli": cli, "short": short, "positive": positive}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _on_cli(f: dataclasses.Field, exclude) -> bool:
    """Whether field `f` gets a flag: not excluded, not `cli=False`, and settable through __init__."""
    return f.name not in exclude and f.init and f.metadata.get("cli", True)


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}{name}".replace("-", "_")


def _nested(hint) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _strip_optional(hint):
    """`X | None` (or Optional[X]) -> X; anything else unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _comma_list(elem: type, flag: str):
    """An argparse `type` that parses "1,2,3" into a tuple of `elem`."""
    def parse(text: str) -> tuple:
        if not text.strip():
            return ()
        try:
            return tuple(elem(part.strip()) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} expects comma-separated {elem.__name__} values, e.g. 1,2; got {text!r}") from None
    return parse


def _type_kwargs(hint, flag: str, name: str) -> dict:
    """The add_argument keywords that parse a value of annotation `hint`."""
    hint = _strip_optional(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float, str):
        return {"type": hint}
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str):
        return {"type": _comma_list(args[0], flag), "metavar": f"{args[0].__name__.upper()},..."}
    raise TypeError(f"field {name!r}: annotation {hint!r} has no command-line form; "
                    f"declare it with opt(cli=False) or pass it in exclude")


def _default(f: dataclasses.Field, owner):
    """The field's default: taken from `owner` (an instance) when given, else from the field."""
    if owner is not None:
        return getattr(owner, f.name)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _help(text: str, value, none_phrase: str | None) -> str:
    """Help text with " (default: X)" appended, escaped for argparse's %-formatting."""
    if isinstance(value, bool):
        shown = "on" if value else "off"
    elif isinstance(value, tuple):
        shown = ",".join(str(v) for v in value)
    elif value is None:
        shown = none_phrase
    elif value is MISSING:
        shown = None
    else:
        shown = str(value)
    if shown is not None:
        text = f"{text} (default: {shown})" if text else f"default: {shown}"
    return text.replace("%", "%%")


def add_fields(parser_or_group, cls, *, prefix: str = "", exclude=(), help_defaults: dict | None = None,
               base=None) -> None:
    """Add one flag per field of dataclass `cls`, in field order, each with default=SUPPRESS.

    The flag is "--" + prefix + name (underscores as dashes) unless the field's `flag` overrides
    it; the dest is prefix + name with dashes as underscores. `exclude` names fields of `cls`
    to skip. `help_defaults` maps a dest to the phrase shown for a `None` default. `base`, an
    instance of `cls`, shows its values as the defaults (a preset such as a fine-tuning budget).
    """
    _add(parser_or_group, cls, base, prefix, exclude, help_defaults or {})


def _add(parser, cls, owner, prefix: str, exclude, help_defaults: dict) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not _on_cli(f, exclude):
            continue
        value = _default(f, owner)
        if _nested(hints[f.name]):
            nested_owner = value if dataclasses.is_dataclass(value) else None
            _add(parser, hints[f.name], nested_owner, f"{prefix}{f.name}-".replace("_", "-"), (), help_defaults)
            continue
        meta, dest = f.metadata, _dest(prefix, f.name)
        flag = meta.get("flag") or "--" + f"{prefix}{f.name}".replace("_", "-")
        flags = [meta["short"], flag] if meta.get("short") else [flag]
        kwargs = _type_kwargs(hints[f.name], flag, f.name)
        choices = meta.get("choices")
        if choices is not None:
            kwargs["choices"] = tuple(choices() if callable(choices) else choices)
        parser.add_argument(*flags, dest=dest, default=argparse.SUPPRESS,
                            help=_help(meta.get("help", ""), value, help_defaults.get(dest)), **kwargs)


def given(namespace, cls, *, prefix: str = "", exclude=()) -> dict:
    """The fields of `cls` the user typed, name -> value; nested dataclasses as nested dicts."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if not _on_cli(f, exclude):
            continue
        if _nested(hints[f.name]):
            inner = given(namespace, hints[f.name], prefix=f"{prefix}{f.name}-".replace("_", "-"))
            if inner:
                out[f.name] = inner
        elif hasattr(namespace, _dest(prefix, f.name)):
            out[f.name] = getattr(namespace, _dest(prefix, f.name))
    return out


def build(cls, base=None, overrides: dict | None = None):
    """`base` (default `cls()`) with `overrides` applied; a dict for a nested dataclass updates it field by field."""
    base = cls() if base is None else base
    known = {f.name for f in dataclasses.fields(cls)}
    changes = {}
    for name, value in (overrides or {}).items():
        if name not in known:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        current = getattr(base, name)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            value = build(type(current), current, value)
        changes[name] = value
    return dataclasses.replace(base, **changes)


def add_shared_fields(parser_or_group, owners: dict[str, type], *, exclude=()) -> None:
    """One flag per field name over several dataclasses (the options of every method, say).

    Fields of the same name share a flag; its help gives each owner's own help and default,
    e.g. "simclr: NT-Xent temperature (default: 0.5); moco: InfoNCE temperature (default: 0.2)".
    The annotations of one name must agree. Read the typed values back with `given_shared`.
    """
    seen: dict[str, tuple] = {}
    for owner, cls in owners.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not _on_cli(f, exclude):
                continue
            if f.name in seen and _strip_optional(seen[f.name][0]) != _strip_optional(hints[f.name]):
                raise TypeError(f"option {f.name!r} is {seen[f.name][0]} in one owner and {hints[f.name]} in {owner}")
            hint, parts = seen.setdefault(f.name, (hints[f.name], []))
            parts.append(f"{owner}: " + _help(f.metadata.get("help", ""), _default(f, None), "derived").replace("%%", "%"))
    for name, (hint, parts) in seen.items():
        flag = "--" + name.replace("_", "-")
        kwargs = _type_kwargs(hint, flag, name)
        choices = [f.metadata.get("choices") for cls in owners.values() for f in dataclasses.fields(cls)
                   if f.name == name and f.metadata.get("choices") is not None]
        if choices:
            kwargs["choices"] = tuple(choices[0]() if callable(choices[0]) else choices[0])
        parser_or_group.add_argument(flag, dest=name, default=argparse.SUPPRESS,
                                     help="; ".join(parts).replace("%", "%%"), **kwargs)


def given_shared(namespace, owners: dict[str, type]) -> dict:
    """The fields added by add_shared_fields that the user typed, name -> value."""
    names = {f.name for cls in owners.values() for f in dataclasses.fields(cls)}
    return {n: getattr(namespace, n) for n in sorted(names) if hasattr(namespace, n)}


def options_from(cls, given: dict, owner: str):
    """`cls(**given)`, with a one-line error naming every key that is not a field of `cls` (a data
    modality's options: "--foo is not an option of image data")."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ContrastiveError(f"{', '.join('--' + k.replace('_', '-') for k in unknown)} is not an option of {owner}")
    return cls(**given)


def check_positive(options) -> None:
    """A one-line error for the first field of the dataclass instance `options` declared `positive` whose
    value is set and not above 0 ("--temperature must be positive, got 0.0")."""
    values = dataclasses.asdict(options)
    for f in dataclasses.fields(options):
        value = values[f.name]
        if f.metadata.get("positive") and value is not None and value <= 0:
            raise ContrastiveError(f"--{f.name.replace('_', '-')} must be positive, got {value}")
