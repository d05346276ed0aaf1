"""Error codes are unique across every slice and each uses a known prefix (kernel/errors.py lists them)."""

from __future__ import annotations

import importlib
import pkgutil

import safecity
from safecity.kernel.errors import ERROR_CODE_PREFIXES, GENERIC_ERROR_CODES, SafeCityError

# Alembic's env.py runs a migration when imported; it defines no error.
_SKIP = ("safecity.store.migrations",)


def _import_every_module() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(safecity.__path__, prefix="safecity."):
        if info.name.startswith(_SKIP):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    return names


def _subclasses(cls: type[SafeCityError]) -> list[type[SafeCityError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def _coded_errors() -> dict[str, list[str]]:
    """Each code declared by an error class of safecity (not inherited), with the classes that declare it."""
    _import_every_module()
    codes: dict[str, list[str]] = {}
    for cls in _subclasses(SafeCityError):
        if cls.__module__.startswith("safecity.") and "code" in vars(cls):
            codes.setdefault(cls.code, []).append(f"{cls.__module__}.{cls.__qualname__}")
    return codes


def test_the_walk_reaches_every_slice() -> None:
    modules = _import_every_module()
    for slice_ in ("kernel", "store", "geo", "sensing", "warning", "dispatch", "sharing", "api"):
        assert any(name.startswith(f"safecity.{slice_}.") for name in modules), slice_
    prefixes = {code.split(".")[0] + "." for code in _coded_errors() if "." in code}
    # Errors from beyond the kernel are found: a kernel-only check would see none of these.
    assert {"road.", "dispatch.", "device.", "notify.", "rules.", "sensing."} <= prefixes


def test_every_error_code_is_unique_across_slices() -> None:
    shared = {code: owners for code, owners in _coded_errors().items() if len(owners) > 1}
    assert not shared, f"error codes declared more than once: {shared}"


def test_every_error_code_uses_a_known_prefix() -> None:
    unknown = [
        code for code in _coded_errors() if code not in GENERIC_ERROR_CODES and not code.startswith(ERROR_CODE_PREFIXES)
    ]
    assert not unknown, f"codes without a prefix from ERROR_CODE_PREFIXES: {unknown}"


def test_prefixes_have_one_spelling() -> None:
    assert all(prefix.endswith(".") for prefix in ERROR_CODE_PREFIXES)
    stems = {prefix.rstrip(".") for prefix in ERROR_CODE_PREFIXES}
    # `road.` and `roads.` (or `alert.` and `alerts.`) would be two spellings of one slice.
    assert not {stem for stem in stems if stem + "s" in stems}
    assert "roads." not in ERROR_CODE_PREFIXES and "road." in ERROR_CODE_PREFIXES
