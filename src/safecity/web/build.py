"""Build the command centre's front end (npm, from the committed lock file) when the build is missing or stale.

The sources live in `frontend/`; `npm ci` installs the locked packages from the npm registry and `npm run build`
writes the page, its assets and the map's glyphs into `frontend/dist/` (git-ignored, never committed). A digest of
every source file is written beside the build, so a later run rebuilds only when a source changed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from rich.console import Console

FRONTEND = Path(__file__).parent / "frontend"
DIST = FRONTEND / "dist"
STAMP = DIST / ".source-digest"
# What the build reads: a change to any of these makes the build stale.
SOURCES = ("package.json", "package-lock.json", "vite.config.js", "index.html", "src", "scripts")


class UiBuildError(RuntimeError):
    """The front end could not be built (npm missing, install or build failed)."""


def source_digest(root: Path = FRONTEND) -> str:
    """A digest of every front-end source file (paths and contents)."""
    digest = hashlib.sha256()
    for name in SOURCES:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if not file.is_file():
                continue
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()


def is_built(root: Path = FRONTEND) -> bool:
    """True when the build exists and was made from the current sources."""
    stamp = root / "dist" / STAMP.name
    return (
        (root / "dist" / "index.html").is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == source_digest(root)
    )


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise UiBuildError(
            "npm was not found, so the command-centre UI cannot be built. Install Node.js 20+ with npm "
            "(Debian: apt-get install nodejs npm), then run this command again."
        )
    return npm


def _run(args: list[str], root: Path, what: str) -> None:
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise UiBuildError(f"{what} failed (exit {done.returncode}) in {root}:\n{tail}")


def ensure_built(console: Console | None = None, *, root: Path = FRONTEND, force: bool = False) -> Path:
    """Build the UI when it is missing or stale (or `force`), showing progress; return the build folder."""
    dist = root / "dist"
    if not force and is_built(root):
        return dist
    console = console or Console(stderr=True)
    if shutil.which("npm") is None and (dist / "index.html").is_file():
        # A node deployed with a built UI but no Node.js: serve what is there rather than refuse to start.
        console.print(f"[yellow]npm not found: serving the existing UI build in {dist}, which may be stale.[/yellow]")
        return dist
    npm = _npm()
    lock = root / "package-lock.json"
    installed = root / "node_modules" / ".package-lock.json"
    if force or not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        with console.status("Installing the UI's npm packages (npm ci, from package-lock.json)…"):
            _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], root, "npm ci")
    with console.status("Building the command-centre UI (vite, map glyphs)…"):
        _run([npm, "run", "build", "--silent"], root, "npm run build")
    (dist / STAMP.name).write_text(source_digest(root) + "\n")
    console.print(f"[green]Command-centre UI built[/green] ({dist})")
    return dist


if __name__ == "__main__":  # `python -m safecity.web.build`: what ./scripts/test runs before the browser tests
    ensure_built()
