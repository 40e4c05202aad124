#!/usr/bin/env python3
"""Fails when a top-level module of src/ imports a module of its own layer or one above it.

The layers, lowest first (the architecture picture in src/lib.rs). A module may use only modules
of lower layers; modules sharing a layer may not use each other. Without a layer violation there
can be no import cycle between top-level modules either.
"""
import pathlib
import re
import sys

LAYERS = [
    ["util"],
    ["tls"],
    ["config"],
    ["import"],
    ["state"],
    ["balance"],
    ["snapshot"],
    ["observe"],
    ["runtime"],
    ["health", "discovery", "history", "analytics"],
    ["edge"],
    ["proxy"],
    ["reload"],
    ["admin"],
    ["server"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
# `crate::name` anywhere, and the names inside `crate::{a, b::c}` groups.
SINGLE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def used_modules(text: str) -> set:
    text = re.sub(r"//[^\n]*", "", text)  # comments and docs do not import
    names = set(SINGLE.findall(text))
    for group in GROUP.findall(text):
        for item in group.split(","):
            head = item.strip().split("::")[0].strip()
            if head:
                names.add(head)
    return names


def main() -> int:
    problems = []
    # The binaries (main.rs, bin/, and alloc.rs, their allocator) are not library modules.
    binaries = ("bin", "lib.rs", "main.rs", "alloc.rs")
    files = [p for p in SRC.rglob("*.rs") if p.relative_to(SRC).parts[0] not in binaries]
    unknown = sorted({module_of(p) for p in files} - RANK.keys())
    for m in unknown:
        problems.append(f"src/{m}: not in any layer of scripts/check-layers.py")
    for path in sorted(files):
        me = module_of(path)
        if me not in RANK:
            continue
        for other in sorted(used_modules(path.read_text())):
            if other == me or other not in RANK:
                continue
            if RANK[other] >= RANK[me]:
                where = "the same layer" if RANK[other] == RANK[me] else "a layer above"
                problems.append(
                    f"{path.relative_to(SRC.parent)}: uses crate::{other} ({where}: "
                    f"{me} is layer {RANK[me]}, {other} is layer {RANK[other]})"
                )
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"check-layers: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check-layers: {len(files)} files, {len(LAYERS)} layers, no upward import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
