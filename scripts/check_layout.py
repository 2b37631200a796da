#!/usr/bin/env python3
"""Checks two rules of the layout of src/ and fails (exit 1) naming each breach:

1. No import cycles among sibling modules. For every module P, its child
   modules form a graph: A -> B when code anywhere inside A names anything
   inside B (a `use`, or a path in the code, through `crate::` or `super::`).
   Every strongly connected component of more than one child is a cycle.
2. No file has more than MAX_LINES lines of non-test code (a trailing
   `#[cfg(test)]` module and files that are test modules are not counted).

Test code is left out of both: tests name what they test.

Usage: scripts/check_layout.py [SRC_DIR]
       scripts/check_layout.py --self-test   (the checker on small trees of its own)
"""

import os
import re
import sys

MAX_LINES = 600

TEST_FILE = re.compile(r"(^|_)tests?$")


def module_path(src, path):
    """src/a/b.rs -> ('a', 'b'); src/a/mod.rs -> ('a',); src/lib.rs -> ()."""
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def is_test_module(parts):
    return any(TEST_FILE.search(p) for p in parts)


def production_text(text):
    """The file without its `#[cfg(test)]` items (a `mod` block or a `mod x;`)."""
    out = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("#[cfg(test)]"):
            # Skip the attribute and the item after it: up to its `;` or the
            # close of its block.
            j = i + 1
            depth = 0
            opened = False
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                if "{" in lines[j]:
                    opened = True
                if (opened and depth <= 0) or (not opened and lines[j].rstrip().endswith(";")):
                    break
                j += 1
            i = j + 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def strip_comments(text):
    """The text without comments, string literals and char literals (a log
    message can hold `crate::`-looking text)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:]).group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """Expands `a::{b, c::{d, e}}` into ['a::b', 'a::c::d', 'a::c::e']."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix = tree[:brace]
    inner = tree[brace + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [prefix + p for part in parts if part.strip() for p in expand_use(part)]


def referenced(mod, text):
    """Absolute module paths (tuples) that `text`, inside module `mod`, names."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand_use(re.sub(r"\s+", "", m.group(1))))
    paths.extend(re.findall(r"\b(?:crate|super)(?:::\w+)+", text))
    out = []
    for p in paths:
        segs = [s for s in p.split(" as ")[0].split("::") if s]
        if not segs:
            continue
        if segs[0] == "crate":
            base, rest = (), segs[1:]
        elif segs[0] == "super":
            base = list(mod)
            rest = segs
            while rest and rest[0] == "super":
                base = base[:-1]
                rest = rest[1:]
            base = tuple(base)
        elif segs[0] == "self":
            base, rest = mod, segs[1:]
        else:
            continue
        out.append(base + tuple(s for s in rest if s not in ("*", "self")))
    return out


def sccs(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main(src):
    modules = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(root, f)
                modules[module_path(src, path)] = path
    known = set(modules)
    failures = []

    # children[parent] = set of child names; edges[parent][a] = {b: example}
    edges = {}
    for mod, path in sorted(modules.items()):
        if is_test_module(mod):
            continue
        text = production_text(open(path, encoding="utf-8").read())
        lines = len(text.rstrip("\n").split("\n"))
        if lines > MAX_LINES:
            failures.append(f"{path}: {lines} lines of non-test code (at most {MAX_LINES})")
        for target in referenced(mod, strip_comments(text)):
            # The deepest known module the path points into.
            while target and target not in known:
                target = target[:-1]
            common = 0
            while common < min(len(mod), len(target)) and mod[common] == target[common]:
                common += 1
            if common >= len(mod) or common >= len(target):
                continue  # a module naming its own descendant or ancestor
            parent = mod[:common]
            a, b = mod[common], target[common]
            edges.setdefault(parent, {}).setdefault(a, {}).setdefault(
                b, f"{path} names {'::'.join(('crate',) + target)}"
            )

    for parent, graph in sorted(edges.items()):
        nodes = set(graph) | {b for bs in graph.values() for b in bs}
        for comp in sccs(nodes, graph):
            if len(comp) > 1:
                where = "::".join(("crate",) + parent)
                lines = [f"import cycle among the children of {where}: {' <-> '.join(sorted(comp))}"]
                members = set(comp)
                for a in sorted(comp):
                    for b, why in sorted(graph.get(a, {}).items()):
                        if b in members:
                            lines.append(f"    {a} -> {b}: {why}")
                failures.append("\n".join(lines))

    for f in failures:
        print(f)
    if failures:
        print(f"layout check: {len(failures)} problem(s)")
        return 1
    print(f"layout check: {len(modules)} modules, no import cycle, no file over {MAX_LINES} lines")
    return 0


def self_test():
    """Runs the checker on trees that break each rule and on one that keeps
    them, so a checker that cannot fail is noticed."""
    import contextlib
    import io
    import tempfile

    def check(files):
        with tempfile.TemporaryDirectory() as root:
            for path, text in files.items():
                full = os.path.join(root, path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "w", encoding="utf-8") as f:
                    f.write(text)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(root)
            return code, out.getvalue()

    cases = [
        ("a clean tree passes", {
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::X;\n",
            "b.rs": "pub const X: u8 = 1;\n",
        }, 0, "no import cycle"),
        ("a cycle through use and a path is found", {
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::{X, Y};\n",
            "b/mod.rs": "mod c;\n",
            "b/c.rs": "fn f() { super::super::a::g() }\n",
        }, 1, "import cycle among the children of crate: a <-> b"),
        ("a cycle between siblings through super is found", {
            "lib.rs": "mod d;\n",
            "d/mod.rs": "mod s;\nmod u;\n",
            "d/s.rs": "use super::u::Q;\n",
            "d/u.rs": "use crate::d::s::P;\n",
        }, 1, "children of crate::d: s <-> u"),
        ("text in strings and comments is not an import", {
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::X;\n",
            "b.rs": "// crate::a::y\nconst S: &str = \"crate::a::z\";\nconst C: char = '\"';\n",
        }, 0, "no import cycle"),
        ("a long file is found, its tests are not counted", {
            "lib.rs": "mod long;\nmod short;\n",
            "long.rs": "fn f() {}\n" * (MAX_LINES + 1),
            "short.rs": "fn f() {}\n#[cfg(test)]\nmod tests {\n" + "fn t() {}\n" * MAX_LINES + "}\n",
        }, 1, f"long.rs: {MAX_LINES + 1} lines"),
        ("tests may import what they test", {
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::X;\n#[cfg(test)]\nmod tests;\n",
            "a/tests.rs": "use crate::b::Y;\n",
            "b.rs": "#[cfg(test)]\nmod tests {\n    use crate::a::Z;\n}\n",
        }, 0, "no import cycle"),
    ]
    failed = 0
    for name, files, want_code, want_text in cases:
        code, out = check(files)
        if code != want_code or want_text not in out:
            failed += 1
            print(f"FAILED: {name}: exit {code}, output:\n{out}")
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "src"))
