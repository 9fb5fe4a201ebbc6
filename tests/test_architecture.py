import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tlcore_never_imports_streamlit():
    offenders = []
    for path in (ROOT / "tlcore").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert offenders == []


def test_registry_config_data_and_charts_load_without_tensorflow():
    code = (
        "import sys, json; import tlcore.backbones, tlcore.config, tlcore.data, tlcore.charts, tlcore.evaluation, tlcore.cli;"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules)))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []
