"""The built-in rule kinds: one module each, holding the kind's model, handler and state type, and its `KIND` spec.

A module dropped here is a built-in kind: `builtin_kinds()` finds it (no list to update). A kind defined elsewhere (a
plugin, a test) calls `safecity.warning.rules.register_kind` with its spec.
"""

from __future__ import annotations

import importlib
import pkgutil

from safecity.warning.rules import RuleKind


def builtin_kinds() -> list[RuleKind]:
    """The `KIND` of every module of this package, by module name."""
    found: list[RuleKind] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        kind = getattr(module, "KIND", None)
        if not isinstance(kind, RuleKind):
            raise TypeError(f"{module.__name__} holds no rule kind spec `KIND`")
        found.append(kind)
    return found
