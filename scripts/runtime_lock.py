"""Print the part of requirements.lock that Coffer needs at run time (no dev tools, no build backend).

The container image (deploy/Dockerfile) installs its final virtualenv from this output with
``pip --require-hashes``: the pins and hashes are the lock's own, only the entries outside the run-time
closure are dropped. The closure is computed from the metadata of the installed ``coffer`` distribution
(its requirements without extras, recursively, markers evaluated for this interpreter), so this must run in
an environment where the project and its dependencies are installed (the image's build stage, or .venv).

Usage: ``python scripts/runtime_lock.py [requirements.lock] > runtime.lock``
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")


def runtime_closure(root: str = "coffer") -> set[str]:
    """Canonical names of ``root`` and everything it needs at run time (extras not requested)."""
    seen: set[str] = set()
    todo = [canonicalize_name(root)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for raw in metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(canonicalize_name(req.name))
    return seen


def filter_lock(text: str, keep: set[str]) -> str:
    """The blocks of a hashed pip requirements file (a ``name==version \\`` line and its continuation,
    hash and comment lines) whose package is in ``keep``; header comments are kept."""
    out: list[str] = []
    keeping = True
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            keeping = canonicalize_name(match.group(1)) in keep
        elif not line.startswith((" ", "\t")) and not line.startswith("#"):
            keeping = True
        if keeping:
            out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    lock = Path(argv[1] if len(argv) > 1 else "requirements.lock")
    keep = runtime_closure() - {"coffer"}
    text = filter_lock(lock.read_text(encoding="utf-8"), keep)
    found = {canonicalize_name(m.group(1)) for m in map(_PIN.match, text.splitlines()) if m}
    missing = keep - found
    if missing:
        print(f"not pinned in {lock}: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
