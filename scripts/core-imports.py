#!/usr/bin/env python3
"""The module graph of core/ (production code: test modules and test-only helpers left out) has
no cycle. Prints the graph and exits 1 naming a cycle if there is one (`make lint` runs it)."""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "core" / "src"
TEST_ONLY = {"lib", "testing", "conformance", "differential", "tests"}


def module_of(path):
    rel = path.relative_to(SRC).with_suffix("")
    top = rel.parts[0]
    return None if top in TEST_ONLY or rel.name in TEST_ONLY else top


def deps(text):
    text = text.split("#[cfg(test)]\nmod tests {")[0]
    found = set(re.findall(r"\bcrate::(\w+)", text))
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
        found |= {item.strip().split("::")[0] for item in group.split(",") if item.strip()}
    return found


graph = {}
for path in sorted(SRC.rglob("*.rs")):
    module = module_of(path)
    if module:
        graph.setdefault(module, set()).update(deps(path.read_text()) - {module})
for module in graph:
    graph[module] &= graph.keys()

state, cycle = {}, None


def visit(node, path):
    global cycle
    state[node] = "open"
    for dep in sorted(graph[node]):
        if state.get(dep) == "open" and cycle is None:
            cycle = path[path.index(dep):] + [dep] if dep in path else path + [node, dep]
        elif dep not in state:
            visit(dep, path + [dep])
    state[node] = "done"


for module in sorted(graph):
    if module not in state:
        visit(module, [module])
for module in sorted(graph):
    print(f"  {module:<10} -> {', '.join(sorted(graph[module])) or '-'}")
if cycle:
    sys.exit(f"core-imports.py: import cycle in core: {' -> '.join(cycle)}")
print(f"core-imports.py: {len(graph)} modules, no import cycle")
