#!/usr/bin/env python3
"""Import circles between the modules (files) of each crate.

Usage: python3 docker/modcycles.py [ROOT]

Reads every crates/*/src tree, maps each `use crate::a::b` / `super::x` /
`crate::a::b::f()` path to the module file it names, and prints every
strongly connected component of more than one file (an import circle).
Test modules (`mod tests` files and `#[cfg(test)]` blocks) are skipped.
Exits 1 when a circle exists.
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "."


def modules(src):
    """module path tuple -> file path"""
    out = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, src)[:-3].split(os.sep)
            if rel in (["lib"], ["main"]):
                path = ()
            elif rel[-1] == "mod":
                path = tuple(rel[:-1])
            else:
                path = tuple(rel)
            if path and path[0] == "bin":
                continue
            out[path] = full
    return out


def strip_tests(text):
    # drop `#[cfg(test)] mod x { ... }` blocks and everything after `mod tests {`
    out = []
    i = 0
    pat = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")
    while True:
        m = pat.search(text, i)
        if not m:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        depth = 1
        j = m.end()
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        i = j
    text = "".join(out)
    text = re.sub(r"//[^\n]*", "", text)
    return text


def resolve(mods, base, segs):
    """longest prefix of segs that names a module"""
    best = None
    for k in range(len(segs), -1, -1):
        cand = tuple(base) + tuple(segs[:k])
        if cand in mods:
            best = cand
            break
    return best


def uses(text):
    """yield lists of path segments starting at crate/super/self"""
    # expand `use crate::{a, b::{c}}` groups roughly: take each path leaf
    for m in re.finditer(r"\buse\s+([^;]+);", text, re.S):
        body = re.sub(r"\s+", "", m.group(1))
        for p in expand(body):
            yield p.split("::")
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        yield m.group(1).split("::")


def expand(body):
    if "{" not in body:
        return [body]
    if "}" not in body:
        return []
    i = body.index("{")
    prefix = body[:i]
    inner = body[i + 1 : body.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        cur += ch
    if cur:
        parts.append(cur)
    out = []
    for p in parts:
        for e in expand(p):
            out.append(prefix + e if e != "self" else prefix.rstrip(":"))
    return out


def crate_graph(src):
    mods = modules(src)
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        if m and m[-1] == "tests":
            continue
        text = strip_tests(open(path, encoding="utf-8").read())
        is_dir_mod = path.endswith("mod.rs") or path.endswith("lib.rs") or path.endswith("main.rs")
        for segs in uses(text):
            if segs[0] == "crate":
                base, rest = (), segs[1:]
            elif segs[0] in ("super", "self"):
                base = list(m) if is_dir_mod else list(m[:-1])
                rest = segs
                while rest and rest[0] in ("super", "self"):
                    if rest[0] == "super" and base:
                        base = base[:-1]
                    rest = rest[1:]
            else:
                continue
            target = resolve(mods, base, rest)
            if target is None or target == m:
                continue
            if target and target[-1] == "tests":
                continue
            # a parent module re-exporting its children is not a circle by itself
            if len(target) > len(m) and target[: len(m)] == m and is_dir_mod:
                graph[m].add(target)
                continue
            graph[m].add(target)
    return mods, graph


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    found = 0
    crates_dir = os.path.join(ROOT, "crates")
    for crate in sorted(os.listdir(crates_dir)):
        src = os.path.join(crates_dir, crate, "src")
        if not os.path.isdir(src):
            continue
        mods, graph = crate_graph(src)
        # edges from a parent module to its own children (mod.rs declaring and
        # re-exporting them) are structure, not imports: a circle must contain
        # an edge that is not parent -> child.
        for comp in sccs(graph):
            if len(comp) < 2:
                continue
            found += 1
            names = sorted("/".join(c) or "lib" for c in comp)
            print(f"{crate}: circle of {len(comp)}: " + ", ".join(names))
    if found:
        print(f"{found} import circle(s)")
        sys.exit(1)
    print("no import circles")


if __name__ == "__main__":
    main()
