"""What every method's `Options` is: a frozen dataclass of its flags, with the hooks a run calls on it.

A method's `Options` subclasses `MethodOptions`, declares its fields with `opt(...)` (each default
once, with where it comes from) and its views as the class constant `VIEWS`. The hooks below have
defaults; a method overrides the ones it needs:

    options.finish(world_size=, local_batch=)   defaults that depend on the run, and checks of options
                                                 that only go together (a new Options)
    options.views()                             the views the method needs (a ViewSpec); VIEWS by default
    options.distributed_note()                  what the method does across processes, for the run's log

A run holds the resolved instance; files hold `to_dict()` and are read back with `from_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from contrastive.batches import ViewSpec


@dataclass(frozen=True)
class MethodOptions:
    VIEWS: ClassVar[ViewSpec]  # the views the method needs with its default options

    def finish(self, *, world_size: int = 1, local_batch: int = 1) -> "MethodOptions":
        """The options for a run of `world_size` processes of `local_batch` items each; unchanged by default."""
        del world_size, local_batch
        return self

    def views(self) -> ViewSpec:
        """The views the method needs; a method whose options choose them overrides this."""
        return self.VIEWS

    # Options this method takes on a kind of data where the user typed none: {modality kind: {option: value}}.
    DATA_DEFAULTS: ClassVar[dict] = {}

    def distributed_note(self) -> str:
        """What the method does across processes, for the run's log ("": nothing to say)."""
        return ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "MethodOptions":
        """The options a file saved (`to_dict`); keys that are no longer options are left out."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})
