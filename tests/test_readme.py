"""The README stays true: CI runs its test command verbatim, and its model table is the registry's."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def test_ci_runs_the_readme_test_command():
    ci = [ln for ln in _read(".ci", "run").splitlines() if ln.strip() and not ln.startswith(("#", "set ", "cd "))]
    assert len(ci) == 1
    readme_lines = [ln.strip() for ln in _read("README.md").splitlines()]
    assert ci[0].strip() in readme_lines, "the README's test command and .ci/run disagree"


def test_readme_model_table_is_the_registry():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "models.py"), "--markdown"],
                         capture_output=True, text=True, check=True).stdout
    readme = _read("README.md")
    missing = [row for row in out.strip().splitlines() if row not in readme]
    assert not missing, f"README model table out of date (python tools/models.py --markdown): {missing[:3]}"


def test_models_tool_bad_pattern_exits_2():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "models.py"), "nonexistent_*"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no model matches" in r.stderr and "Traceback" not in r.stderr
