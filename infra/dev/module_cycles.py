#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a circle.

Every `.rs` file under a crate's `src/` is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`).
A module depends on another when its code names it: `use crate::x::y`, `use super::z`,
`use child::w` (a `pub use` re-export too: a facade depends on what it shows), or a path
`crate::x::y::f(...)` in an expression. Declaring a child with `mod` is not a dependency, and
neither is what a file's `#[cfg(test)]` module uses. A path names the longest module prefix it
has. So a `mod.rs` that re-exports its children cannot also define what they import from it:
those definitions live in a child of their own. The one-way order each crate's `lib.rs`
documents is then a fact this check keeps.

Usage: module_cycles.py CRATE_SRC_DIR...   exit 1, the cycles printed, when any exists.
First it checks itself on a crate with a known cycle (and on one without), so a broken
check cannot pass quietly.
"""
import pathlib
import re
import sys
import tempfile

USE = re.compile(r"^\s*use\s+([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)(::\{[^;]*\})?", re.M)
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP_ITEM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")


def modules(src):
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src)
        parts = list(rel.with_suffix("").parts)
        if parts[0] in ("bin", "tests") or parts[-1] == "main":
            continue
        if parts[-1] in ("mod", "lib"):
            parts = parts[:-1]
        mods[tuple(parts)] = f
    return mods


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    # #[cfg(test)] mod tests { ... } at the end of a file: tests may use anything.
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    if m:
        text = text[: m.start()]
    return text


def resolve(mods, here, path):
    """The module a path names: the longest prefix of it that is a module."""
    segs = path.split("::")
    if segs[0] not in ("crate", "super", "self"):
        # `use child::x` (a path relative to this module, 2018 edition); anything else is
        # another crate.
        if here + (segs[0],) not in mods:
            return None
        segs = ["self"] + segs
    if segs[0] == "crate":
        base = []
    elif segs[0] == "self":
        base = list(here)
    else:
        base = list(here)
        while segs and segs[0] == "super":
            base = base[:-1]
            segs = segs[1:]
        segs = ["super"] + segs
    full = base + segs[1:]
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in mods:
            return tuple(full[:n])
    return None


def deps(mods, here, text):
    text = strip(text)
    text = re.sub(r"^\s*pub(?:\([^)]*\))?\s+use\s+", "use ", text, flags=re.M)
    paths = []
    for m in USE.finditer(text):
        head, group = m.group(1), m.group(2)
        if group:
            inner = group[3:-1]
            paths += [head + "::" + g for g in GROUP_ITEM.findall(inner) if g != "self"]
            if re.search(r"\bself\b", inner):
                paths.append(head)
        else:
            paths.append(head)
    text = USE.sub("", text)
    paths += [m.group(1) + m.group(2) for m in PATH.finditer(text)]
    out = set()
    for p in paths:
        target = resolve(mods, here, p)
        # A module's own items and its children's facade are not a dependency on an outside.
        if target is not None and target != here:
            out.add(target)
    return out


def cycles(graph):
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return comps


def name(m):
    return "::".join(m) or "crate"


def found(src):
    """The cycles of the crate at `src`, each as (members, edges)."""
    mods = modules(src)
    graph = {m: deps(mods, m, f.read_text()) for m, f in mods.items()}
    out = []
    for comp in cycles(graph):
        members = set(comp)
        edges = sorted(f"{name(a)} -> {name(b)}" for a in comp for b in graph[a] if b in members)
        out.append((sorted(map(name, comp)), edges))
    return out


def self_test():
    files = {
        "lib.rs": "pub mod error;\npub mod queue;\n",
        "error.rs": "use crate::queue::QueueError;\n",
        "queue/mod.rs": "mod publish;\npub use publish::{Queue, QueueError};\n",
        "queue/publish.rs": "use crate::error::ApiError;\npub struct Queue;\n",
    }
    with tempfile.TemporaryDirectory() as d:
        src = pathlib.Path(d)
        for path, text in files.items():
            (src / path).parent.mkdir(parents=True, exist_ok=True)
            (src / path).write_text(text)
        got = [members for members, _ in found(src)]
        want = [["error", "queue", "queue::publish"]]
        if got != want:
            sys.exit(f"module_cycles self-test: found {got}, expected {want}")
        (src / "error.rs").write_text("// ApiError: a leaf; `crate::queue` only in a comment.\n")
        if found(src):
            sys.exit("module_cycles self-test: a cycle found where there is none")


def main(dirs):
    self_test()
    bad = 0
    for d in dirs:
        for members, edges in found(pathlib.Path(d)):
            bad += 1
            print(f"{d}: modules in a cycle: {', '.join(members)}")
            for e in edges:
                print(f"    {e}")
    if not bad:
        print(f"module_cycles: no import cycle in {len(dirs)} crates")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
