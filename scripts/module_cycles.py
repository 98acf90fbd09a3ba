#!/usr/bin/env python3
"""Import cycles between the modules of a Rust crate, from its `use` paths (what `cargo modules
dependencies --acyclic` reports, without building rust-analyzer: this reads the source).

Every `crate::`, `super::` and `self::` path in a file (in `use` items and inline, outside comments and
string literals) is an edge from that file's module to the deepest module the path names that is a file
of the crate. A test module inside a file is part of that file. Prints the strongly connected components
with more than one module, at two levels: top-level modules (`dataflow`, `train`, ...) and files. Exit
status 1 when there is a cycle.

    scripts/module_cycles.py src            # the main crate
    scripts/module_cycles.py crates/connectors/src
"""
import re
import sys
from pathlib import Path


def module_of(root: Path, file: Path) -> tuple:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def expand_use(text: str):
    """Paths of `use` items, braces expanded (`use a::{b, c::d}` -> a::b, a::c::d)."""
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        yield from expand(m.group(1).replace("\n", " ").replace(" ", ""))


def expand(tree: str):
    i = tree.find("{")
    if i < 0:
        yield tree
        return
    prefix, inner = tree[:i], tree[i + 1 : tree.rfind("}")]
    depth, start = 0, 0
    for k, c in enumerate(inner + ","):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            part = inner[start:k]
            start = k + 1
            if part:
                yield from expand(prefix + part)


def main(root: Path) -> int:
    files = {module_of(root, f): f for f in root.rglob("*.rs")}
    modules = set(files)
    edges = {m: set() for m in modules}
    for module, file in files.items():
        text = strip(file.read_text())
        paths = set(expand_use(text))
        paths |= {m.group(0) for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", text)}
        for path in paths:
            segments = path.split("::")
            if segments[0] == "crate":
                base, rest = (), segments[1:]
            else:
                # `self` is the file's own module (a mod.rs is its directory's module); each `super` one up.
                base, rest = module, segments[1:] if segments[0] == "self" else segments
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
            target = base
            for s in rest:
                if target + (s,) in modules:
                    target = target + (s,)
                else:
                    break
            if target != module and target in modules and target != ():
                edges[module].add(target)
    status = 0
    for level, key in (("top-level modules", lambda m: m[:1]), ("files", lambda m: m)):
        graph = {}
        for a, targets in edges.items():
            for b in targets:
                ka, kb = key(a), key(b)
                if ka and kb and ka != kb and not (kb[: len(ka)] == ka or ka[: len(kb)] == kb):
                    graph.setdefault(ka, set()).add(kb)
        cycles = [c for c in sccs(graph) if len(c) > 1]
        print(f"{root}: {len(cycles)} cycle(s) between {level}")
        for c in cycles:
            status = 1
            print("  " + " <-> ".join("::".join(m) for m in sorted(c)))
    return status


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    nodes = set(graph) | {b for bs in graph.values() for b in bs}

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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    roots = [Path(a) for a in sys.argv[1:]] or [Path("src")]
    sys.exit(max(main(r) for r in roots))
