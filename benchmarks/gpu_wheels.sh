#!/usr/bin/env bash
# Build a wheelhouse for a bare GPU machine (no package index): rezdiff's own wheel plus the wheels of every
# package rezdiff needs that torch does not bring (diffusers, neuraloperator, jsonargparse, lightning, ... and
# their requirements), pinned to the versions installed here. benchmarks/gpu_acceptance.py installs the
# missing ones from it with `pip install --no-index --find-links build/wheelhouse`.
#
#   bash benchmarks/gpu_wheels.sh [folder [package ...]]
#
# folder: default build/wheelhouse (ignored by git, under build/); packages: the roots of the closure
# (default rezdiff, i.e. everything; e.g. `diffusers neuraloperator jsonargparse` when the GPU machine has
# lightning and the rest: the closure of all of rezdiff is ~80 wheels, too large for a 64 MiB carry).
#
# Binary wheels (e.g. safetensors, regex, PyYAML) are this machine's: the GPU machine needs the same Python
# minor version and platform (a mismatch shows as the acceptance JSON's setup.pip_last_line).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/wheelhouse}"
shift || true
roots="${*:-rezdiff}"
mkdir -p "$out"
python -m pip wheel --no-deps --no-build-isolation --quiet -w "$out" .
python - $roots > "$out/requirements.txt" <<'PY'
"""name==version of the installed requirement closure of the roots, without torch and what ships with it."""
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

SKIP = re.compile(r"^(torch|triton|nvidia-.*|setuptools|pip|wheel)$")
seen: dict[str, str] = {}
todo = [(root, frozenset()) for root in sys.argv[1:]]
while todo:
    name, extras = todo.pop()
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue
    key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    if key != "rezdiff":
        seen[key] = dist.version
    for text in dist.requires or []:
        req = Requirement(text)
        wanted = any(req.marker.evaluate({"extra": e}) for e in extras or {""}) if req.marker else True
        if wanted and not SKIP.match(req.name.lower()) and re.sub(r"[-_.]+", "-", req.name).lower() not in seen:
            todo.append((req.name, frozenset(req.extras)))
print("\n".join(f"{k}=={v}" for k, v in sorted(seen.items())))
PY
python -m pip download --no-deps --only-binary=:all: --quiet -d "$out" -r "$out/requirements.txt"
echo "wrote $(ls "$out" | wc -l) files, $(du -sh "$out" | cut -f1), to $out"
