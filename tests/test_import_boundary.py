"""vimogen_core is a pure library: importing all of it pulls in no orchestration stack, and its
layers import one way (DESIGN.md section 2)."""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import vimogen_core

FORBIDDEN = ("dagster", "mlflow", "dvc", "boto3", "great_expectations", "gradio")


def test_vimogen_core_imports_without_the_orchestration_stack():
    modules = [m.name for m in pkgutil.walk_packages(vimogen_core.__path__, "vimogen_core.")]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"vimogen_core imported: {out.stdout.strip()}"
    assert len(modules) > 10


# DESIGN.md section 2: layers go one way. A module may import its own package, a lower layer, or
# the shared plumbing (top-level modules such as errors, files, state); never a higher layer.
LAYERS = {"motion": 0, "body": 1, "sources": 2, "curation": 3, "text": 4, "model": 4, "train": 5,
          "control": 6, "distill": 6, "bench": 7}
# Entry points that drive the `vimogen` command itself and so may import its CLI modules: the
# command registering every subcommand, and the Dagster Pipes script that parses `vimogen train`'s
# own arguments.
CLI_DRIVERS = {"vimogen_core.cli", "orchestration.pipes_train"}
REPO = Path(vimogen_core.__file__).resolve().parents[1]


def _module_imports(path: Path) -> list[tuple[int, str]]:
    """Every vimogen_core module a file imports (module level or inside functions), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from vimogen_core.motion import cli` imports the module vimogen_core.motion.cli
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "vimogen_core"]


def _is_cli(module: str) -> bool:
    return module.split(".")[-1] == "cli" and module != "vimogen_core.cli"


def _layer_violations() -> list[str]:
    problems = []
    for path in sorted([*(REPO / "vimogen_core").rglob("*.py"), *(REPO / "orchestration").rglob("*.py")]):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        parts = module.split(".")
        package = parts[1] if parts[0] == "vimogen_core" and len(parts) > 1 else None
        own = LAYERS.get(package)
        for line, imported in _module_imports(path):
            where = f"{path.relative_to(REPO)}:{line} imports {imported}"
            if _is_cli(imported) and module not in CLI_DRIVERS:
                problems.append(f"{where}: a CLI module is an entry point, not a library")
            target = imported.split(".")
            if len(target) < 2 or target[1] not in LAYERS:
                continue
            if parts[0] == "vimogen_core" and own is None and module not in CLI_DRIVERS:
                problems.append(f"{where}: shared plumbing imports no layer")
            elif own is not None and not _is_cli(module) and LAYERS[target[1]] > own:
                problems.append(f"{where}: {package} is below {target[1]}")
            elif own is not None and not _is_cli(module) and LAYERS[target[1]] == own and target[1] != package:
                problems.append(f"{where}: {package} and {target[1]} are one layer; neither imports the other")
    return problems


def test_layers_go_one_way_and_no_cli_module_is_imported():
    """An upward import (also inside a function), a sibling layer's, or an import of a `*/cli.py`
    module fails. CLI modules themselves are entry points on top of every layer: they may import
    any layer, never another CLI module."""
    assert _layer_violations() == []
    assert len(list((REPO / "vimogen_core").rglob("*.py"))) > 40  # the walk found the package


def test_the_layer_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "gates.py"
    source.write_text("def jitter(joints):\n    from vimogen_core.bench.metrics import jitter_degree\n"
                      "    from vimogen_core.curation import cli\n    return jitter_degree(joints)\n")
    assert _module_imports(source) == [(2, "vimogen_core.bench.metrics"), (2, "vimogen_core.bench.metrics.jitter_degree"),
                                       (3, "vimogen_core.curation"), (3, "vimogen_core.curation.cli")]
