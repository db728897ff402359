"""JSON for the benchmark's dataclasses, read back into the same classes, through pydantic.

Every result of the suite (a load run, a perf_analyzer row, the sweep, the whole run) is a dataclass
that inherits `Record`: `to_json()` gives plain JSON values, `from_json()` builds the class again and
checks each value against the field's type annotation, so a results.json that was edited or written by
another version fails with the path of the value and what was expected, instead of surfacing later as
an AttributeError in the report. pydantic validates the plain dataclasses as they are; strict mode,
so "2" is not taken for 2, and unknown fields are refused.
"""
from __future__ import annotations

import functools
import json
from typing import TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

R = TypeVar("R", bound="Record")


class Record:
    """A dataclass with a JSON form (see the module's docstring)."""

    # Read by pydantic from every dataclass that inherits Record. NaN stays NaN (a core whose clock did
    # not tick has no busy share), as Python's json module writes and reads it.
    __pydantic_config__ = ConfigDict(strict=True, extra="forbid", ser_json_inf_nan="constants")

    def to_json(self) -> dict:
        return json.loads(_adapter(type(self)).dump_json(self))

    @classmethod
    def from_json(cls: type[R], data: dict, where: str = "") -> R:
        # Validated as JSON text: strict mode then takes what JSON can hold (a list for a tuple, a
        # string for a Path), and nothing else.
        try:
            return _adapter(cls).validate_json(json.dumps(data))
        except ValidationError as e:
            raise ValueError(_message(e, where or cls.__name__)) from None


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def _message(error: ValidationError, where: str) -> str:
    """pydantic's errors as one line each: `where.path.to.value: what was expected, got what`."""
    lines = []
    for e in error.errors(include_url=False):
        path = ".".join([where, *(str(p) for p in e["loc"])])
        got = "" if e["type"] == "missing" else f", got {e['input']!r}"[:200]
        lines.append(f"{path}: {e['msg']}{got}")
    return "; ".join(lines)
