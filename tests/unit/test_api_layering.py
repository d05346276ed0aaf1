"""`safecity.api` has no path to `safecity.store`: routers reach the slices only through their ports.

Two proofs: the static import graph (grimp, what import-linter reads) holds no chain from any api module to any
store module, and importing every api module in a fresh interpreter with `safecity.store` blocked succeeds (and the
same blocker does stop a module that does reach the store, so the check can fail).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import grimp

# Run in a fresh interpreter: a finder refuses `safecity.store`, then the given modules are imported.
_BLOCKED_IMPORT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    class BlockStore:
        def find_spec(self, name, path=None, target=None):
            if name == "safecity.store" or name.startswith("safecity.store."):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, BlockStore())
    targets = sys.argv[1:]
    if targets == ["safecity.api"]:
        import safecity.api
        targets = ["safecity.api"] + [
            m.name for m in pkgutil.walk_packages(safecity.api.__path__, "safecity.api.")
        ]
    for name in targets:
        importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.startswith("safecity.store"))
    assert not loaded, loaded
    print("imported", len(targets))
    """
)


def _import_blocked(*modules: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT, *modules], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_import_graph_has_no_chain_from_api_to_store() -> None:
    graph = grimp.build_graph("safecity")
    chains = graph.find_shortest_chains(importer="safecity.api", imported="safecity.store", as_packages=True)
    assert chains == set(), sorted(" -> ".join(chain) for chain in chains)
    # The graph does see the store where it is used: the check is not vacuous.
    assert graph.find_shortest_chains(importer="safecity.runtime", imported="safecity.store", as_packages=True)


def test_every_api_module_imports_with_the_store_blocked() -> None:
    done = _import_blocked("safecity.api")
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) >= 10  # app, ports, deps and the routers


def test_the_blocker_stops_a_module_that_reaches_the_store() -> None:
    # dispatch.service reads through the store's repositories: with the store blocked it cannot be imported.
    done = _import_blocked("safecity.dispatch.service")
    assert done.returncode != 0
    assert "blocked: safecity.store" in done.stderr
