"""The layout stays as DESIGN.md draws it: layers import one way, no circles, short functions.

Read from the source with `ast` (nothing is imported), so a new module is checked the day it lands.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vidldm"

# Lower layers never import higher ones (siblings may import each other, without circles).
LAYERS = [
    ("errors", "atomic", "builtin_names", "canny", "sampling_settings", "schedulers", "io", "sampling", "denoisers", "frames", "clip_run",
     "prompt_travel", "seeds", "memory", "free_init", "offload", "long_clips", "run_file", "latents", "noise_prior",
     "temporal_smoothing", "known_pixels", "yaml_numbers"),
    ("models",),
    ("lora", "ip_adapter", "control"),
    ("pipeline",),
    ("builtins", "loading", "walk"),
    ("data",),
    ("train", "eval", "bench", "web"),
    ("cli", "__main__"),
]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts).removesuffix(".__init__")] = path
    return out


def imports() -> dict[str, set[str]]:
    """Each module's imports of other vidldm modules (`from pkg import mod` counts as `pkg.mod`)."""
    known, graph = modules(), {}
    for name, path in known.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level and node.module.startswith("vidldm"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in known else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("vidldm.")}
        graph[name] = {d for d in deps if d in known and d not in (name, "vidldm")}
    return graph


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer of tests/test_structure.py: place it (and in DESIGN.md's table)")


def test_no_module_imports_a_layer_above_it():
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in imports().items() if m != "vidldm" for d in deps if layer(d) > layer(m)]
    assert upward == []


def test_no_import_circles():
    graph, cycles = imports(), []
    # A package's __init__ re-exports its submodules: pkg -> pkg.sub is not a circle back.
    graph = {m: {d for d in deps if not d.startswith(m + ".") and not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def _functions():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE.parent), node, node.end_lineno - node.lineno + 1


def test_functions_are_short():
    long = [f"{path}:{node.lineno} {node.name} ({lines} lines)" for path, node, lines in _functions()
            if lines > 80 and node.name != "build_parser"]
    assert long == []


def test_pipeline_call_reads_as_numbered_steps():
    [(_, call, lines)] = [f for f in _functions() if f[0].name == "pipeline.py" and f[1].name == "__call__"]
    assert lines < 60
    comments = [line.strip() for line in (PACKAGE / "pipeline.py").read_text().splitlines()[call.lineno:call.end_lineno]
                if line.strip().startswith("# ")]
    assert [c[2:4] for c in comments if c[2].isdigit()] == ["0.", "1.", "2.", "3.", "4."]
