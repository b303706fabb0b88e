#!/usr/bin/env python3
"""Report import cycles between the source files of each crate.

    python3 scripts/check-module-cycles.py [--allow DIR]... [--verbose]

For every crate of the repository (a directory with Cargo.toml and src/),
each crate root (src/lib.rs, src/main.rs, src/bin/*.rs) is followed through
its `mod` declarations, and a graph of the module files is built from the
paths the files use: `use crate::…`, `crate::…`, `super::…`, `self::…` and
paths starting with a child module's name. A path is resolved to the file
that defines the item it names, following `use` items (re-exports and
private imports alike) so that `use super::Thing` where the parent merely
re-exports a sibling's `Thing` is an edge to the sibling, not to the parent.
Declaring `mod child` is not an edge: only using something is.

Strongly connected components of more than one file are printed with the
paths that close them, and the exit status is 1 if there is any. `--allow
DIR` (relative to the repository) accepts components whose files all lie
under DIR. Standard library only; no Rust toolchain needed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# vendor/: third-party crates kept as published (vendor/sled/PATCHED.md).
SKIP_DIRS = {"target", ".git", "node_modules", "vendor"}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
ITEM_RE = re.compile(
    r"\b(?:pub(?:\s*\([^)]*\))?\s+)?(?:(?:const|async|unsafe|extern(?:\s+\"[^\"]*\")?)\s+)*"
    r"(fn|struct|enum|trait|type|const|static|union|mod)\s+(" + IDENT + r")"
)
MOD_DECL_RE = re.compile(r"\bmod\s+(" + IDENT + r")\s*;")
MOD_INLINE_RE = re.compile(r"\bmod\s+(" + IDENT + r")\s*\{")
PATH_ATTR_RE = re.compile(r'#\[\s*path\s*=\s*"([^"]+)"\s*\]\s*$')
USE_RE = re.compile(r"\buse\s+")
SERDE_PATH_RE = re.compile(
    r"\b(?:with|serialize_with|deserialize_with|default|skip_serializing_if|getter)\s*=\s*\"("
    + IDENT + r"(?:::" + IDENT + r")*)\""
)
PUB_RE = re.compile(r"\bpub\s*(?:\([^)]*\))?\s*$")
CFG_TEST_RE = re.compile(r"#\[\s*cfg\s*\(\s*(?:all\s*\(\s*)?test\b")
# A path in code: `a::b::c`, not preceded by `::` or `$` (macro `$crate`).
PATH_RE = re.compile(r"(?<![:$\w])(" + IDENT + r")((?:\s*::\s*" + IDENT + r")+)")


# ---------------------------------------------------------------- lexing


def strip(src: str) -> str:
    """Blank comments, string and char literals (newlines kept), so that
    paths in them are not taken for code."""
    out = []
    i, n = 0, len(src)

    def blank(text: str) -> str:
        return "".join("\n" if c == "\n" else " " for c in text)

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(src[i:j]))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(src[i:j]))
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(src, i)) and (
            i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")
        ):
            end = '"' + m.group(1)
            j = src.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append(blank(src[i:j]))
            i = j
        elif c == '"' or (c == "b" and src.startswith('b"', i) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_"))):
            j = i + (2 if c == "b" else 1)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(blank(src[i : j + 1]))
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            m = re.compile(r"'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'").match(src, i)
            if m:
                out.append(blank(m.group(0)))
                i = m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def attributes_before(code: str, pos: int) -> str:
    """The attributes (and visibility) written just before the item at `pos`."""
    k = pos
    while k > 0 and code[k - 1] not in ";{}":
        k -= 1
    text = code[k:pos]
    # An attribute's own brackets may hold `}` or `;` only in odd cases;
    # reaching back to the previous item is good enough.
    return text


def matching_brace(code: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code)


def split_top(text: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, []
    for c in text:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def expand_use(tree: str, prefix: list[str]) -> list[tuple[list[str], str | None]]:
    """`a::{b, c::d as e, self}` → [(path, bound name)], name None for `*`."""
    tree = re.sub(r"\s+", " ", tree).strip()
    if tree.startswith("::"):
        tree = tree[2:].strip()
    brace = tree.find("{")
    if brace >= 0 and tree.endswith("}"):
        head = [s.strip() for s in tree[:brace].split("::") if s.strip()]
        out = []
        for part in split_top(tree[brace + 1 : -1]):
            out.extend(expand_use(part, prefix + head))
        return out
    alias = None
    m = re.match(r"^(.*?)\s+as\s+(" + IDENT + r")$", tree)
    if m:
        tree, alias = m.group(1), m.group(2)
    segs = [s.strip() for s in tree.split("::") if s.strip()]
    if segs == ["self"]:
        path = prefix
        name = alias or (prefix[-1] if prefix else None)
    elif segs and segs[-1] == "*":
        return [(prefix + segs, None)]
    else:
        path = prefix + segs
        name = alias or (segs[-1] if segs else None)
    if name == "_":
        name = None
    return [(path, name or "")] if path else []


# ------------------------------------------------------------ the model


@dataclass
class Module:
    path: tuple[str, ...]
    file: str
    parent: "Module | None"
    span: tuple[int, int]  # the module's body in the file's stripped code
    children: dict[str, "Module"] = field(default_factory=dict)
    items: set[str] = field(default_factory=set)
    # name → (use path, line)
    imports: dict[str, tuple[list[str], int]] = field(default_factory=dict)
    globs: list[list[str]] = field(default_factory=list)
    test_only: bool = False


@dataclass
class Use:
    module: Module
    segs: list[str]
    line: int
    text: str


class Tree:
    def __init__(self, root_file: str):
        self.files: dict[str, str] = {}  # file → stripped code
        self.modules: list[Module] = []
        self.uses: list[Use] = []
        self.without_uses: dict[str, str] = {}
        self.raw: dict[str, str] = {}
        self.root = self.load(root_file, (), None, mod_rs=True)

    def load(self, file: str, path: tuple[str, ...], parent: Module | None, mod_rs: bool) -> Module:
        with open(file, encoding="utf-8") as f:
            raw = f.read()
        code = strip(raw)
        self.files[file] = code
        self.raw[file] = raw
        m = Module(path, file, parent, (0, len(code)))
        self.modules.append(m)
        self.scan(m, code, 0, len(code), file, mod_rs)
        return m

    def scan(self, m: Module, code: str, start: int, end: int, file: str, mod_rs: bool) -> None:
        """Record the module items of `m` (body `code[start:end]`), load its
        child files and scan its inline modules."""
        # Regions of inline child modules, and of every other brace block
        # (fn bodies, impls): only depth-0 items belong to `m`.
        depth_at = [0] * (end - start + 1)
        depth = 0
        for k in range(start, end):
            c = code[k]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            depth_at[k - start] = depth if c != "{" else depth - 1

        def top(pos: int) -> bool:
            return depth_at[pos - start] == 0

        for mo in MOD_INLINE_RE.finditer(code, start, end):
            if not top(mo.start()):
                continue
            name = mo.group(1)
            open_at = mo.end() - 1
            close = matching_brace(code, open_at)
            child = Module(m.path + (name,), file, m, (open_at + 1, close))
            child.test_only = m.test_only or bool(CFG_TEST_RE.search(attributes_before(code, mo.start())))
            m.children[name] = child
            m.items.add(name)
            self.modules.append(child)
            sub_dir = os.path.join(self.child_dir(file, mod_rs, m), name)
            self.scan(child, code, open_at + 1, close, file, mod_rs)
            child.inline_dir = sub_dir  # type: ignore[attr-defined]

        for mo in MOD_DECL_RE.finditer(code, start, end):
            if not top(mo.start()):
                continue
            name = mo.group(1)
            line_start = code.rfind("\n", 0, mo.start()) + 1
            prev = code[max(0, code.rfind("\n", 0, max(line_start - 1, 0)) + 1) : line_start].strip()
            here = os.path.dirname(file)
            pa = PATH_ATTR_RE.search(prev) if prev else None
            if pa:
                child_file = os.path.normpath(os.path.join(here, pa.group(1)))
                child_mod_rs = True
            else:
                base = self.child_dir(file, mod_rs, m)
                child_file = os.path.join(base, name + ".rs")
                child_mod_rs = False
                if not os.path.exists(child_file):
                    child_file = os.path.join(base, name, "mod.rs")
                    child_mod_rs = True
            m.items.add(name)
            # Test modules are compiled only into the crate's own test
            # binary; their `use super::*` is no part of the structure.
            if CFG_TEST_RE.search(attributes_before(code, mo.start())):
                continue
            if not os.path.exists(child_file) or child_file in self.files:
                continue
            child = self.load(child_file, m.path + (name,), m, child_mod_rs)
            m.children[name] = child

        for mo in ITEM_RE.finditer(code, start, end):
            if top(mo.start()) and mo.group(1) != "mod":
                m.items.add(mo.group(2))

        for mo in USE_RE.finditer(code, start, end):
            semi = code.find(";", mo.end())
            if semi < 0:
                continue
            tree = code[mo.end() : semi]
            line = code.count("\n", 0, mo.start()) + 1
            owner = self.innermost(m, mo.start()) if not top(mo.start()) else m
            public = bool(PUB_RE.search(attributes_before(code, mo.start())))
            for segs, name in expand_use(tree, []):
                if top(mo.start()):
                    if name is None:
                        m.globs.append(segs[:-1])
                    elif name:
                        m.imports[name] = (segs, line)
                # A re-export only declares where an item can be found, like
                # `mod`; it is a dependency when the file uses the name too.
                if public and name and not self.used_in_code(file, code, name):
                    continue
                target = segs[:-1] if name is None else segs
                if target:
                    self.uses.append(Use(owner, target, line, "use " + "::".join(segs)))

    def used_in_code(self, file: str, code: str, name: str) -> bool:
        """Whether `name` occurs in `file` outside its `use` items."""
        if file not in self.without_uses:
            blanked = list(code)
            for mo in USE_RE.finditer(code):
                semi = code.find(";", mo.end())
                for k in range(mo.start(), semi if semi >= 0 else len(code)):
                    if blanked[k] != "\n":
                        blanked[k] = " "
            self.without_uses[file] = "".join(blanked)
        return re.search(r"\b" + re.escape(name) + r"\b", self.without_uses[file]) is not None

    def child_dir(self, file: str, mod_rs: bool, m: Module) -> str:
        inline = getattr(m, "inline_dir", None)
        if inline:
            return inline
        if mod_rs:
            return os.path.dirname(file)
        return os.path.splitext(file)[0]

    def innermost(self, m: Module, pos: int) -> Module:
        for c in m.children.values():
            if c.file == m.file and c.span[0] <= pos < c.span[1]:
                return self.innermost(c, pos)
        return m

    def collect_paths(self) -> None:
        """Paths outside `use` items: `crate::x::f()`, `super::T`, `child::g`."""
        for file, code in self.files.items():
            owner_root = next(m for m in self.modules if m.file == file and (m.parent is None or m.parent.file != file))
            use_spans = [(mo.start(), code.find(";", mo.end())) for mo in USE_RE.finditer(code)]
            for mo in PATH_RE.finditer(code):
                if any(a <= mo.start() <= b for a, b in use_spans):
                    continue
                segs = [mo.group(1)] + [s.strip() for s in mo.group(2).split("::") if s.strip()]
                owner = self.innermost(owner_root, mo.start())
                if segs[0] not in ("crate", "super", "self") and segs[0] not in owner.children:
                    continue
                line = code.count("\n", 0, mo.start()) + 1
                self.uses.append(Use(owner, segs, line, "::".join(segs)))
            # serde's `with = "module"` and kin name paths in strings
            # (stripping keeps offsets, so the owner is found alike).
            for mo in SERDE_PATH_RE.finditer(self.raw[file]):
                segs = mo.group(1).split("::")
                owner = self.innermost(owner_root, mo.start())
                if segs[0] not in ("crate", "super", "self") and segs[0] not in owner.children:
                    continue
                line = code.count("\n", 0, mo.start()) + 1
                self.uses.append(Use(owner, segs, line, mo.group(0)))

    # --------------------------------------------------------- resolution

    def resolve(self, m: Module, segs: list[str], depth: int = 0) -> str | None:
        """The file defining what `segs` names, seen from module `m`; None if
        it is outside the crate or cannot be told."""
        if depth > 8 or not segs:
            return None
        cur = m
        rest = list(segs)
        head = rest[0]
        if head == "crate":
            cur, rest = self.root, rest[1:]
        elif head in ("super", "self"):
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    if cur.parent is None:
                        return None
                    cur = cur.parent
                rest = rest[1:]
        elif head in m.children:
            pass
        elif head in m.imports and m.imports[head][0] != segs:
            target = self.resolve_module(m, m.imports[head][0], depth + 1)
            if target is None:
                return None
            cur, rest = target, rest[1:]
        else:
            return None
        while rest and rest[0] in cur.children:
            cur, rest = cur.children[rest[0]], rest[1:]
        if not rest:
            return cur.file
        name = rest[0]
        if name in cur.items:
            return cur.file
        if name in cur.imports:
            via = cur.imports[name][0]
            if via == segs and cur is m:
                return None
            found = self.resolve(cur, via, depth + 1)
            # An import of something outside the crate: the item is not in
            # any file here.
            return found
        for g in cur.globs:
            target = self.resolve_module(cur, g, depth + 1)
            if target is not None and name in target.items:
                return target.file
        # Unknown (a macro-made item, a variant): the module's own file.
        return cur.file

    def resolve_module(self, m: Module, segs: list[str], depth: int) -> Module | None:
        if depth > 8 or not segs:
            return None
        cur = m
        rest = list(segs)
        if rest[0] == "crate":
            cur, rest = self.root, rest[1:]
        elif rest[0] in ("super", "self"):
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    if cur.parent is None:
                        return None
                    cur = cur.parent
                rest = rest[1:]
        elif rest[0] in m.children:
            pass
        else:
            return None
        for s in rest:
            if s in cur.children:
                cur = cur.children[s]
            elif s in cur.imports:
                nxt = self.resolve_module(cur, cur.imports[s][0], depth + 1)
                if nxt is None:
                    return None
                cur = nxt
            else:
                return None
        return cur


# ---------------------------------------------------------------- graph


def sccs(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def crates(repo: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            found.append(dirpath)
    return found


def roots(crate: str) -> list[str]:
    src = os.path.join(crate, "src")
    out = [os.path.join(src, f) for f in ("lib.rs", "main.rs") if os.path.exists(os.path.join(src, f))]
    bins = os.path.join(src, "bin")
    if os.path.isdir(bins):
        for f in sorted(os.listdir(bins)):
            p = os.path.join(bins, f)
            if f.endswith(".rs"):
                out.append(p)
            elif os.path.exists(os.path.join(p, "main.rs")):
                out.append(os.path.join(p, "main.rs"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--allow", action="append", default=[], help="accept cycles wholly inside this directory")
    ap.add_argument("--verbose", action="store_true", help="print every crate checked and its edge count")
    args = ap.parse_args()
    allow = [os.path.normpath(os.path.join(REPO, a)) + os.sep for a in args.allow]
    rel = lambda p: os.path.relpath(p, REPO)  # noqa: E731

    found = allowed = 0
    for crate in crates(REPO):
        for root in roots(crate):
            try:
                tree = Tree(root)
            except OSError as e:
                print(f"{rel(root)}: cannot read: {e}", file=sys.stderr)
                return 2
            tree.collect_paths()
            edges: dict[str, set[str]] = {}
            why: dict[tuple[str, str], Use] = {}
            for u in tree.uses:
                if u.module.test_only:
                    continue
                target = tree.resolve(u.module, u.segs)
                src = u.module.file
                if target is None or target == src:
                    continue
                edges.setdefault(src, set()).add(target)
                why.setdefault((src, target), u)
            if args.verbose:
                n = sum(len(v) for v in edges.values())
                print(f"{rel(root)}: {len(tree.files)} files, {n} edges")
            for comp in sccs(sorted(tree.files), edges):
                if len(comp) < 2:
                    continue
                if allow and all(any(f.startswith(a) for a in allow) for f in comp):
                    allowed += 1
                    if args.verbose:
                        print(f"allowed: {', '.join(rel(f) for f in comp)}")
                    continue
                found += 1
                print(f"cycle in {rel(root)}: {len(comp)} files")
                members = set(comp)
                for a in comp:
                    for b in sorted(edges.get(a, ())):
                        if b in members:
                            u = why[(a, b)]
                            print(f"  {rel(a)}:{u.line} -> {rel(b)}   ({u.text})")
    if found:
        print(f"{found} file cycle(s) found" + (f" ({allowed} allowed)" if allowed else ""))
        return 1
    print("no file cycles" + (f" outside the allowed directories ({allowed} allowed)" if allowed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
