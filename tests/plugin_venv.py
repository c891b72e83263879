"""A fresh virtual environment to install third-party plugins into, as a user would.

It has no pip and no packages of its own: a ``.pth`` line adds this test run's site-packages
with ``site.addsitedir`` (so their own ``.pth`` files run too, and selfdev's editable install
is found), which lends it selfdev, pytest, setuptools and pip without downloading anything.
What pip installs into it lands in its own site-packages, never in the test run's environment.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PluginVenv:
    root: Path
    python: Path
    purelib: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a command in the venv: no bytecode written next to sources, no
        allow-list inherited, one thread."""
        env = {k: v for k, v in os.environ.items() if k not in ("SELFDEV_LOAD_PLUGINS", "PYTHONPATH")}
        env.update(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", **extra)
        return env

    def run(self, *args: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env=self.env(**env))

    def selfdev(self, *args: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        """``selfdev ARGS`` run by the venv's interpreter (its ``sys.executable``)."""
        return self.run("-m", "selfdev.engine", *args, cwd=cwd, timeout=timeout, **env)

    def pip_install(self, *args: str, cwd: Path) -> None:
        done = self.run("-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", *args, cwd=cwd)
        assert done.returncode == 0, done.stderr[-3000:]


def make_plugin_venv(root: Path, *, lend_selfdev: bool = True) -> PluginVenv:
    """A venv at ``root`` borrowing this test run's packages. With ``lend_selfdev=False`` the
    site-packages is added as a plain path, so its ``.pth`` files (selfdev's editable finder
    among them) do not run: selfdev must then be installed into the venv itself (a wheel)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    ours = sysconfig.get_paths()["purelib"]
    line = f"import site; site.addsitedir({ours!r})" if lend_selfdev else ours
    (purelib / "_borrow_test_env.pth").write_text(line + "\n")
    return PluginVenv(root, python, purelib)
