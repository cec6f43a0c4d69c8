"""The package's layout: imports flow one way (entries -> running -> configuration / training -> models -> core), with
no cycle and no function-level import of our own modules, and a model imports without any of the training code."""

import ast
import os
import subprocess
import sys

import pytest

import recbole_diffusion

PACKAGE = os.path.dirname(os.path.abspath(recbole_diffusion.__file__))
# Bottom up; a module may import its own part and the parts of lower layers only.
LAYERS = [
    {"utils", "compat"},
    {"diffusion"},
    {"text"},
    {"model"},
    {"data"},
    {"evaluation"},
    {"trainer", "config"},
    {"quick_start"},
    {"runner", "compare", "tune", "recommend", "selfcheck"},
    {"__main__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# What importing a model must not load: our training, checkpoint, process and entry code.
NOT_FOR_MODELS = ("recbole_diffusion.trainer", "recbole_diffusion.quick_start", "recbole_diffusion.utils.collectives",
                  "recbole_diffusion.config", "recbole_diffusion.runner", "recbole_diffusion.compare",
                  "recbole_diffusion.tune", "recbole_diffusion.recommend", "recbole_diffusion.selfcheck")


def modules():
    """``{dotted name: path}`` of every module of the package (``properties`` holds YAML only)."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def imports_of(path):
    """``[(imported module, inside a function)]`` for every import of our package in the file."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.extend((f"{child.module}.{alias.name}", nested) for alias in child.names)
            visit(child, nested)

    visit(tree, False)
    known = modules()
    resolved = []
    for name, nested in found:
        if not name.startswith("recbole_diffusion"):
            continue
        while name not in known:  # "package.module.name" -> the module that defines the name
            name = name.rsplit(".", 1)[0]
        resolved.append((name, nested))
    return resolved


def part(module):
    return module.split(".")[1] if module.count(".") else None


def test_every_import_flows_down_the_layers():
    wrong = []
    for module, path in modules().items():
        if module == "recbole_diffusion" or module.startswith("recbole_diffusion.properties"):
            continue  # the package's face (checked below) and the YAML package
        for imported, _ in imports_of(path):
            here, there = part(module), part(imported)
            if there is None or here == there:
                continue
            if RANK[there] >= RANK[here]:
                wrong.append(f"{module} -> {imported}")
    assert not wrong, "imports that do not flow down the layers: " + ", ".join(wrong)


def test_no_import_cycle_and_no_function_level_import_of_our_modules():
    graph, nested = {}, []
    for module, path in modules().items():
        found = imports_of(path)
        graph[module] = {name for name, _ in found if name != module}
        nested += [f"{module} -> {name}" for name, inside in found if inside and module != "recbole_diffusion"]
    assert not nested, "function-level imports of our modules: " + ", ".join(nested)
    state = {}

    def visit(module, trail):
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if imported.startswith(module + "."):
                continue  # a package's face hands on its own modules
            if state.get(imported) == "open":
                pytest.fail("import cycle: " + " -> ".join(trail + [imported]))
            if imported not in state:
                visit(imported, trail + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", ["recbole_diffusion.model", "recbole_diffusion.model.diffurec",
                                    "recbole_diffusion.model.dreamrec", "recbole_diffusion.model.seqdiffrec",
                                    "recbole_diffusion"])
def test_a_model_imports_without_our_training_code(module):
    """RecBole's own pipeline can use a model of this package: importing it (in a fresh interpreter) loads the
    models and the diffusion core, not our trainer, checkpoints, launcher, collectives, configuration or entries
    (RecBole's own trainer is loaded by the compatibility layer)."""
    probe = (f"import sys, {module}; "
             f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({NOT_FOR_MODELS!r}))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == []


def test_the_package_face_loads_the_pipeline_on_first_use():
    probe = ("import sys, recbole_diffusion; assert 'recbole_diffusion.quick_start' not in sys.modules; "
             "run = recbole_diffusion.run; print(run.__module__)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "recbole_diffusion.quick_start.quick_start"
