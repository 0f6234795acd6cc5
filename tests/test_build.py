"""The build: the lock file and the environment it makes, and CI's hold on the native path.

``make install`` installs the lock (``requirements.lock``, made by ``make lock``) with
``pip install --require-hashes`` and the project on top of it without dependencies, so a
requirement of ``pyproject.toml`` missing from the lock would only show at run time. These
tests catch that (and a hand-edited lock) first.

CI sets ``TUNNELWATCH_NATIVE=1`` where cargo exists; then a native module that does not
load stops pytest (``tests/conftest.py``) instead of letting the native tests skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def _pins() -> dict[str, tuple[Version, int]]:
    """Every pinned package of the lock: its version and how many hashes it carries."""
    text = LOCK.read_text(encoding="utf-8")
    out: dict[str, tuple[Version, int]] = {}
    for entry in re.split(r"\n(?=\S)", text):
        first = entry.split("\\", 1)[0].strip()
        m = PIN.match(first)
        if m:
            out[canonicalize_name(m[1])] = (Version(m[2]), len(HASH.findall(entry)))
    return out


def _declared() -> list[tuple[str, Requirement]]:
    """What pyproject.toml (main and dev) and both build systems ask for."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    native = tomllib.loads((REPO / "native" / "pyproject.toml").read_text(encoding="utf-8"))
    found = [
        *(("dependencies", r) for r in project["project"]["dependencies"]),
        *(("dev", r) for r in project["project"]["optional-dependencies"]["dev"]),
        *(("build-system", r) for r in project["build-system"]["requires"]),
        *(("native build-system", r) for r in native["build-system"]["requires"]),
    ]
    return [(where, Requirement(text)) for where, text in found]


def test_the_lock_pins_every_requirement_of_pyproject_within_its_range() -> None:
    pins = _pins()
    missing = []
    for where, req in _declared():
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.append(f"{req} ({where}) is not in the lock")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            missing.append(f"{req} ({where}) but the lock pins {pins[name][0]}")
    assert not missing, "run make lock: " + "; ".join(missing)


def test_every_pin_of_the_lock_carries_hashes() -> None:
    pins = _pins()
    assert len(pins) > 20
    assert not [name for name, (_, hashes) in pins.items() if hashes == 0]


def test_the_lock_names_no_index_or_local_path() -> None:
    # A lock made behind a mirror must install anywhere: no --index-url, --find-links or
    # file paths in it (make lock passes --no-emit-*).
    text = LOCK.read_text(encoding="utf-8")
    assert not re.search(r"^\s*-(-index-url|-extra-index-url|-find-links|f |i )", text, re.M)
    assert "file://" not in text


def test_the_environment_running_the_tests_is_the_locked_one() -> None:
    pins = _pins()
    wrong = []
    for name, (version, _) in sorted(pins.items()):
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} is not installed")
            continue
        if installed != version:
            wrong.append(f"{name} {installed} installed, {version} locked")
    assert not wrong, "run make install: " + "; ".join(wrong)


def _pytest_with_a_broken_native_module(
    tmp_path: Path, mode: str
) -> subprocess.CompletedProcess[str]:
    """pytest on one quick test, where ``tunnelwatch_native`` fails to import."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "tunnelwatch_native.py").write_text(
        'raise ImportError("built for another Python")\n', encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(shadow), "TUNNELWATCH_NATIVE": mode}
    test = "tests/test_build.py::test_every_pin_of_the_lock_carries_hashes"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_a_required_native_module_that_does_not_load_stops_the_test_run(tmp_path: Path) -> None:
    proc = _pytest_with_a_broken_native_module(tmp_path, "1")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "the native module is required" in proc.stderr
    assert "built for another Python" in proc.stderr


def test_without_the_requirement_the_same_run_takes_the_python_path(tmp_path: Path) -> None:
    proc = _pytest_with_a_broken_native_module(tmp_path, "auto")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_make_test_runs_the_rust_unit_tests_before_pytest() -> None:
    proc = subprocess.run(
        ["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    out = proc.stdout
    assert "cargo test --locked --no-default-features" in out
    assert out.index("cargo test") < out.index("/pytest ")
