"""The house rules, checked on the source: every import (at the top of a file or inside a
function) is an edge; there are no circles, and each room imports only what it may."""

import ast
import sys

from tests.helpers import ROOT

PACKAGES = ("phi_demo", "phi_demo_dev")


def module_of(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules():
    return {module_of(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


MODULES = all_modules()


def imports_of(path) -> set[str]:
    """Every module `path` imports anywhere in it: `from a.b import c` counts as a.b.c when
    that is a module of ours, else a.b."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in MODULES else node.module)
    return out


GRAPH = {m: {i for i in imports_of(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert cycles(GRAPH) == []


def test_the_circle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


MODEL = ("torch", "transformers", "peft", "safetensors", "accelerate", "bitsandbytes")
# What each room may not import (any module under these names), anywhere in its files.
FORBIDDEN = {
    "phi_demo.ui": MODEL + ("phi_demo.engine",),
    "phi_demo.api": MODEL + ("phi_demo.engine", "phi_demo.ui"),  # it is handed a ChatEngine, like the page
    "phi_demo.engine": ("gradio", "phi_demo.ui", "phi_demo.speech", "phi_demo.chat.turn", "phi_demo.chat.store"),
    "phi_demo.chat": MODEL + ("gradio", "phi_demo.engine", "phi_demo.ui", "phi_demo.speech"),
    "phi_demo.speech": MODEL + ("gradio", "phi_demo.engine", "phi_demo.ui"),
    "phi_demo.media": MODEL + ("gradio", "phi_demo.engine", "phi_demo.ui", "phi_demo.chat", "phi_demo.speech"),
    "phi_demo.contract": MODEL + ("gradio", "phi_demo.engine", "phi_demo.ui", "phi_demo.chat", "phi_demo.speech",
                                  "phi_demo.media"),
    "phi_demo.errors": MODEL + ("gradio", "phi_demo."),
    "phi_demo.caches": MODEL + ("gradio", "phi_demo.engine", "phi_demo.ui", "phi_demo.chat", "phi_demo.speech"),
    "phi_demo.settings": MODEL + ("gradio", "phi_demo.engine", "phi_demo.ui", "phi_demo.chat", "phi_demo.speech"),
    "phi_demo": ("phi_demo_dev",),
}
# Deliberate exceptions, each with its reason.
ALLOWED = {
    ("phi_demo.speech.vad", "torch"): "silero-vad is a small torch model, loaded only when chosen",
}


def violations():
    found = []
    for module, path in MODULES.items():
        for room, banned in FORBIDDEN.items():
            if module != room and not module.startswith(room + "."):
                continue
            for imported in imports_of(path):
                for b in banned:
                    hit = imported.startswith(b) if b.endswith(".") else (imported == b or imported.startswith(b + "."))
                    if hit and imported != module and (module, imported.split(".")[0] if b in MODEL else imported) \
                            not in ALLOWED and (module, imported) not in ALLOWED:
                        found.append(f"{module} imports {imported} ({room} may not import {b})")
    return sorted(set(found))


def test_each_room_imports_only_what_it_may():
    assert violations() == []


