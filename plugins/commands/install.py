"""``selfdev install`` / ``selfdev uninstall``: pip, run by selfdev's own interpreter.

As ``llm install`` does: a plugin must land in the environment selfdev runs from, which is not
always the one a bare ``pip`` belongs to (pipx, a venv not activated, several Pythons). Running
``sys.executable -m pip`` removes the guess. pip's progress goes to the terminal as it comes;
when pip fails, its error is reduced to one line (the CLI's rule for errors a user can fix) and
the command exits 2.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from selfdev import SelfdevError, hookimpl

#: pip's stderr lines that are news about pip, not about the install
_NOISE = re.compile(r"^\s*\[notice\]")


def pip(args: list[str], what: str) -> None:
    """Run ``sys.executable -m pip ARGS``; stdout passes through, stderr is kept so that a
    failure can be told in one line."""
    done = subprocess.run([sys.executable, "-m", "pip", *args], stderr=subprocess.PIPE, text=True)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not _NOISE.match(line)]
    if done.returncode != 0:
        errors = [line for line in lines if line.startswith("ERROR:")]
        reason = (errors[0] if errors else lines[-1] if lines else f"exit status {done.returncode}")
        reason = reason.removeprefix("ERROR:").strip()
        raise SelfdevError(f"pip could not {what}: {reason}")
    for line in lines:  # warnings of a successful run
        print(line, file=sys.stderr)


def _local_path(spec: str, editable: bool = False) -> Path | None:
    """The folder or file a requirement names, when it names one (``./x``, ``x[test]`` after
    ``-e``, a wheel), else None (a project name or a URL)."""
    if "://" in spec or spec.startswith(("git+", "hg+", "svn+", "bzr+")):
        return None
    bare = re.sub(r"\[[^\]]*\]$", "", spec)
    if editable or bare.startswith((".", "/", "~")) or "/" in bare or bare.endswith(
            (".whl", ".tar.gz", ".zip")):
        return Path(bare).expanduser()
    return None


def install_args(packages: tuple[str, ...], editable: tuple[str, ...], upgrade: bool,
                 force_reinstall: bool, no_deps: bool, no_build_isolation: bool,
                 pre: bool) -> list[str]:
    """pip's arguments, after checking that every local path named exists."""
    if not packages and not editable:
        raise SelfdevError("install: name a package (e.g. selfdev-shuffle), a folder, a wheel "
                           "or -e FOLDER")
    for spec, is_editable in [(p, False) for p in packages] + [(e, True) for e in editable]:
        path = _local_path(spec, is_editable)
        if path is not None and not path.exists():
            raise SelfdevError(f"install: no such file or folder: {path}")
    args = ["install"]
    for flag, on in (("--upgrade", upgrade), ("--force-reinstall", force_reinstall),
                     ("--no-deps", no_deps), ("--no-build-isolation", no_build_isolation),
                     ("--pre", pre)):
        if on:
            args.append(flag)
    for path in editable:
        args += ["--editable", path]
    return args + list(packages)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _commands() -> list[Any]:
    import click

    @click.command(name="install")
    @click.argument("packages", nargs=-1)
    @click.option("-U", "--upgrade", is_flag=True, help="Upgrade the packages to their newest version.")
    @click.option("-e", "--editable", multiple=True, metavar="FOLDER",
                  help="Install the project in FOLDER in editable mode (repeatable).")
    @click.option("--force-reinstall", is_flag=True, help="Reinstall even if already installed.")
    @click.option("--no-deps", is_flag=True, help="Do not install dependencies.")
    @click.option("--no-build-isolation", is_flag=True,
                  help="Build with the packages already installed (offline installs).")
    @click.option("--pre", is_flag=True, help="Include pre-release versions.")
    def install(packages: tuple[str, ...], editable: tuple[str, ...], upgrade: bool,
                force_reinstall: bool, no_deps: bool, no_build_isolation: bool, pre: bool) -> None:
        """Install plugin packages (names, folders, wheels or URLs) into selfdev's own
        environment, with pip; `selfdev plugins` then lists them."""
        args = install_args(packages, editable, upgrade, force_reinstall, no_deps,
                            no_build_isolation, pre)
        pip(args, "install " + ", ".join([*editable, *packages]))

    @click.command(name="uninstall")
    @click.argument("packages", nargs=-1, required=True)
    @click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
    def uninstall(packages: tuple[str, ...], yes: bool) -> None:
        """Uninstall plugin packages from selfdev's own environment, with pip."""
        from importlib.metadata import PackageNotFoundError, distribution

        for name in packages:
            if _canonical(name) == "selfdev":
                raise SelfdevError("uninstall: refusing to uninstall selfdev itself "
                                   "(use `python -m pip uninstall selfdev`)")
            try:
                distribution(name)
            except PackageNotFoundError:
                raise SelfdevError(f"uninstall: {name} is not installed in selfdev's environment "
                                   f"({sys.prefix}); `selfdev plugins` lists the installed "
                                   f"plugins") from None
        pip(["uninstall", *(["--yes"] if yes else []), *packages],
            "uninstall " + ", ".join(packages))

    return [install, uninstall]


@hookimpl
def register_commands(cli):
    for command in _commands():
        cli.add_command(command)
