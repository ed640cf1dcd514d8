"""``new_call(...)``: a ``Call`` built at a third of the cost of ``Call(...)``, same object.

A frozen dataclass's ``__init__`` sets each of its 18 fields through ``object.__setattr__``
(~0.4 us each on the development VM: ~7 us per Call, the largest single cost of turning a
parsed message into a Call). Here each slot is written by its own member descriptor, which
skips the attribute-name lookup. The function is generated from ``dataclasses.fields(Call)`` so
that it always sets every field, with the same defaults, in the same order: a field added to
the model later is covered without touching this file.

Only for code that builds a *new* Call it then hands on (parsers, the pipeline's copies): the
result is an ordinary, frozen ``Call``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from hostagent.model import Call

_MISSING = dataclasses.MISSING


def _generate() -> Callable[..., Call]:
    env: dict[str, Any] = {"_new": object.__new__, "_Call": Call}
    params, body = [], []
    for f in dataclasses.fields(Call):
        if f.default is not _MISSING:
            env[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not _MISSING:  # a fresh value per Call, as the dataclass does
            env[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=None")
            body.append(f"    if {f.name} is None:\n        {f.name} = _f_{f.name}()\n")
        else:
            params.append(f.name)
        env[f"_s_{f.name}"] = getattr(Call, f.name).__set__
        body.append(f"    _s_{f.name}(call, {f.name})\n")
    source = "def new_call(" + ", ".join(params) + "):\n    call = _new(_Call)\n" + "".join(body) + "    return call\n"
    exec(source, env)  # generated from the dataclass's own field list: no outside input
    return env["new_call"]  # type: ignore[no-any-return]


new_call: Callable[..., Call] = _generate()


def copy_call(call: Call, **changes: Any) -> Call:
    """``dataclasses.replace(call, **changes)`` without its per-call field introspection."""
    values = {f: getattr(call, f) for f in _FIELDS}
    values.update(changes)
    return new_call(**values)


_FIELDS = tuple(f.name for f in dataclasses.fields(Call))
