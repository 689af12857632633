"""vimogen_core is a pure library: importing all of it pulls in no orchestration stack."""
import pkgutil
import subprocess
import sys

import vimogen_core

FORBIDDEN = ("dagster", "mlflow", "dvc", "boto3", "great_expectations")


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
