"""Every runtime dependency in pyproject.toml is there for a reason: the library or the Dagster code
imports it, or it is a tool or pin named below with why. A package only tests use belongs in the
test extra."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Declared without an import from our code, each for a reason.
USED_WITHOUT_IMPORT = {
    "imageio-ffmpeg": "imageio's ffmpeg backend, which writes the MP4 renders",
    "dagster-webserver": "the `dagster dev` UI",
    "dvc": "the `dvc` command that runs the pipeline and versions the data",
    "dvc-s3": "DVC's S3 remote",
    "hydra-core": "pinned so that dvc's hydra accepts antlr 4.13 (DESIGN.md section 3)",
    "antlr4-python3-runtime": "pinned at 4.13 for Dagster's asset-selection parser (DESIGN.md section 3)",
    "dagster-postgres": "the PostgreSQL run/event/schedule storage deploy/dagster.yaml names, loaded by Dagster",
    "psycopg2-binary": "the PostgreSQL driver of dagster-postgres and of the MLflow server (postgresql+psycopg2://)",
}


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _top_level_imports(folders: tuple[str, ...]) -> set[str]:
    names = set()
    for folder in folders:
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names


def test_every_runtime_dependency_is_imported_or_named_with_its_reason():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_normalised(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}
    modules_of: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            modules_of.setdefault(_normalised(distribution), set()).add(module)
    imported = _top_level_imports(("vimogen_core", "orchestration", "playground"))
    unused = sorted(d for d in declared - set(USED_WITHOUT_IMPORT) if not modules_of.get(d, set()) & imported)
    assert not unused, f"declared runtime dependencies that nothing imports: {unused}"
    assert set(USED_WITHOUT_IMPORT) <= declared, "a reason for a dependency that is no longer declared"
