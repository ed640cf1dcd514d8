"""``new_call(...)``: a ``Call`` built from Python code at a third of the cost of the pure-Python
``Call(...)``, same object; and ``new_connection`` / ``new_endpoint``, the same for the records the
capture stage builds per connection.

A frozen dataclass's ``__init__`` sets each of its fields through ``object.__setattr__``
(~0.4 us each on the development VM: ~7 us per Call, the largest single cost of turning a
parsed message into a Call). Here each slot is written by its own member descriptor, which
skips the attribute-name lookup. The functions are generated from ``dataclasses.fields`` of the
class so that they always set every field, with the same defaults, in the same order: a field
added to the model later is covered without touching this file.

Only for code that builds a *new* record it then hands on (parsers, the tracker, the pipeline's
copies): the result is an ordinary, frozen instance. Compiled (mypyc), hostagent.model's records
have a written-out ``__init__`` that is C and faster than this (their ``__new__`` runs it too):
there the functions are the classes themselves, and compiled callers call the classes directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from hostagent.model import COMPILED, Call, Connection, Endpoint

_MISSING = dataclasses.MISSING
T = TypeVar("T")


def fast_constructor(cls: type[T], name: str) -> Callable[..., T]:
    """A function taking the fields of the slotted dataclass ``cls`` (positionally or by name,
    with its defaults) that returns a new instance, its __init__ skipped."""
    env: dict[str, Any] = {"_new": cls.__new__, "_cls": cls}
    params, body = [], []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.default is not _MISSING:
            env[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not _MISSING:  # a fresh value per instance, as the dataclass does
            env[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=None")
            body.append(f"    if {f.name} is None:\n        {f.name} = _f_{f.name}()\n")
        else:
            params.append(f.name)
        env[f"_s_{f.name}"] = getattr(cls, f.name).__set__
        body.append(f"    _s_{f.name}(obj, {f.name})\n")
    source = f"def {name}(" + ", ".join(params) + "):\n    obj = _new(_cls)\n" + "".join(body) + "    return obj\n"
    exec(source, env)  # generated from the dataclass's own field list: no outside input
    return env[name]  # type: ignore[no-any-return]


new_call: Callable[..., Call] = Call if COMPILED else fast_constructor(Call, "new_call")
new_connection: Callable[..., Connection] = Connection if COMPILED else fast_constructor(Connection, "new_connection")
new_endpoint: Callable[..., Endpoint] = Endpoint if COMPILED else fast_constructor(Endpoint, "new_endpoint")


def copy_call(call: Call, **changes: Any) -> Call:
    """``dataclasses.replace(call, **changes)`` without its per-call field introspection."""
    values = {f: getattr(call, f) for f in _FIELDS}
    values.update(changes)
    return new_call(**values)


_FIELDS = tuple(f.name for f in dataclasses.fields(Call))
