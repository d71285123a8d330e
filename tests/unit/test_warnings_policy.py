"""pytest's filterwarnings in pyproject.toml: a warning raised in a coffer module or a test fails the test;
a third-party warning does not. Runs pytest on a throwaway test file with the project's configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE_TEST = """
import warnings

from coffer import _warning_probe
import thirdparty_warning_probe


def test_warning_from_coffer_code():
    _warning_probe.old_api()


def test_warning_from_third_party_code():
    thirdparty_warning_probe.old_api()


def test_warning_from_a_test():
    warnings.warn("raised in a test module", UserWarning, stacklevel=1)
"""

WARNING_MODULE = """
import warnings


def old_api():
    warnings.warn("old_api is deprecated", DeprecationWarning, stacklevel=1)
"""


def test_warnings_from_our_code_are_errors(tmp_path: Path) -> None:
    # ``coffer`` is a namespace package (PEP 420): a ``coffer`` folder on the path adds a module to it.
    (tmp_path / "coffer").mkdir()
    (tmp_path / "coffer" / "_warning_probe.py").write_text(WARNING_MODULE)
    (tmp_path / "thirdparty_warning_probe.py").write_text(WARNING_MODULE)
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    (tests_dir / "test_probe.py").write_text(textwrap.dedent(PROBE_TEST))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-rA",
            str(tests_dir / "test_probe.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "FAILED tests/test_probe.py::test_warning_from_coffer_code" in out, out
    assert "DeprecationWarning: old_api is deprecated" in out, out
    assert "PASSED tests/test_probe.py::test_warning_from_third_party_code" in out, out
    assert "FAILED tests/test_probe.py::test_warning_from_a_test" in out, out
