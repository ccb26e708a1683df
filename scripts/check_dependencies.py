#!/usr/bin/env python3
"""Checks that a fresh Debian 12 machine gets everything the build and the tests use.

A green CI on a machine that keeps what earlier work installed by hand can hide a missing install
step (issue 9: OpenCVConfig.cmake came from a package setup.sh never installed). This reads what a
configured and built tree really used and fails, naming the package, when:

  * a system file the build used (every absolute path in the CMake cache: package config
    directories, include directories, libraries, programs; every header the compiler read, from
    `ninja -t deps`; every library on a link line, from build.ninja) belongs to a Debian package
    that is neither in setup.sh's APT_PACKAGES nor pulled in by one that is, nor part of every
    Debian system (Essential or Priority: required);
  * a library that perf_analyzer (run by the e2e tests) loads is missing or comes from such a
    package;
  * a Python module that the tests, tools or benchmarks import is not installed in .venv, or comes
    from a distribution that neither requirements file names.

The CUDA toolkit, which setup.sh does not install on purpose (it turns on the CUDA kernels when
present), is reported, not failed; anything else under /usr/local fails, since no package of a
fresh machine puts it there.

    scripts/check_dependencies.py --build-dir build [--setup FILE] [--requirements F ...]

Exit status 0 when nothing is missing, 1 otherwise; the report goes to standard output.
Python's standard library only, so it runs before and outside .venv.
"""
from __future__ import annotations

import argparse
import ast
import glob
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL_PREFIX = "/usr/local"  # where nothing of a fresh Debian machine's packages lives
PYTHON_SOURCES = ("tests/e2e/*.py", "tools/*.py", "bench/*.py", "scripts/*.py")
# Modules that come from a path the user gives, not from a package (module: why).
NOT_FROM_PACKAGES = {
    "models": "bench/zoo3_flops.py --check --vittm-ref DIR imports the official ViTTM "
              "repository's checkout from DIR",
}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    system_paths: int = 0


def read_package_list(setup_script: Path) -> list[str]:
    """The Debian packages of setup.sh's APT_PACKAGES=( ... ) array (comments allowed)."""
    text = setup_script.read_text()
    match = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.M | re.S)
    if not match:
        raise SystemExit(f"{setup_script}: no APT_PACKAGES=( ... ) array")
    names = []
    for line in match.group(1).splitlines():
        names.extend(line.split("#", 1)[0].split())
    return names


def dependency_closure(packages: list[str]) -> set[str]:
    """The listed packages and every installed package they depend on (Depends and
    Pre-Depends, recursively, virtual packages resolved to their installed providers)."""
    out = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--installed", "--no-recommends", "--no-suggests",
         "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
        capture_output=True, text=True, check=False).stdout
    closure = set(packages)
    for line in out.splitlines():
        if not line.startswith(" "):
            closure.add(line.strip().split(":")[0])
        elif not re.match(r"\s+\|?(Pre)?Depends:", line):
            # Indented lines below a <virtual> dependency name its providers.
            name = line.strip()
            if name and " " not in name and not name.startswith("<"):
                closure.add(name.split(":")[0])
    return closure


def base_system_packages() -> set[str]:
    """Packages every Debian system has: Essential ones and those of Priority required."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Essential} ${Priority}\n"],
                         capture_output=True, text=True, check=True).stdout
    base = set()
    for line in out.splitlines():
        name, essential, priority = (line.split() + ["", ""])[:3]
        if essential == "yes" or priority == "required":
            base.add(name)
    return base


def installed_package_installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                         capture_output=True, text=True, check=False).stdout
    return "install ok installed" in out


class FileOwners:
    """Path -> owning Debian packages, from dpkg's file lists (one read, then lookups)."""

    def __init__(self) -> None:
        self._owners: dict[str, set[str]] = {}
        for listing in glob.glob("/var/lib/dpkg/info/*.list"):
            package = os.path.basename(listing)[: -len(".list")].split(":")[0]
            with open(listing, encoding="utf-8", errors="replace") as f:
                for line in f:
                    self._owners.setdefault(line.rstrip("\n"), set()).add(package)

    def _lookup(self, path: str) -> set[str]:
        # Debian 12 merges /lib into /usr/lib, while dpkg may record either spelling.
        for candidate in (path, re.sub(r"^/usr/(lib|lib64|bin|sbin)/", r"/\1/", path),
                          re.sub(r"^/(lib|lib64|bin|sbin)/", r"/usr/\1/", path)):
            if candidate in self._owners:
                return self._owners[candidate]
        return set()

    def owners(self, path: str) -> set[str]:
        """Owners of the path as the build named it (a -dev package's .so link), else of
        what it resolves to; for a directory, also of the regular files directly inside it (a
        package config directory is recorded by every package that puts a file there)."""
        found = self._lookup(path) or self._lookup(os.path.realpath(path))
        if os.path.isdir(path):
            for entry in sorted(os.listdir(path)):
                full = os.path.join(path, entry)
                if os.path.isfile(full):
                    found |= self._lookup(full) or self._lookup(os.path.realpath(full))
        return found


def is_project_path(path: str, build_dir: Path) -> bool:
    real = os.path.realpath(path)
    return any(real == str(p) or real.startswith(str(p) + os.sep)
               for p in (ROOT, build_dir.resolve(), (ROOT / ".venv").resolve()))


# Cache entries that name where the build writes or installs, not something it uses.
NOT_INPUTS = {"CMAKE_INSTALL_PREFIX"}


def cache_paths(build_dir: Path) -> set[str]:
    """Absolute paths of existing files and directories that the CMake cache records."""
    paths = set()
    for line in (build_dir / "CMakeCache.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.+-]+)(?::[A-Z]+)?=(.*)$", line)
        if not match or match.group(1) in NOT_INPUTS:
            continue
        for value in match.group(2).split(";"):
            value = value.strip()
            if value.startswith("/") and os.path.exists(value):
                paths.add(value)
    return paths


def ninja_paths(build_dir: Path) -> set[str]:
    """Headers the compiler read (ninja's dependency log) and libraries on link lines."""
    paths = set()
    deps = subprocess.run(["ninja", "-C", str(build_dir), "-t", "deps"],
                          capture_output=True, text=True, check=False).stdout
    for line in deps.splitlines():
        if line.startswith("    /"):
            paths.add(line.strip())
    build_ninja = (build_dir / "build.ninja").read_text()
    link_dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib"]
    for match in re.finditer(r"^\s*LINK_LIBRARIES = (.*)$", build_ninja, re.M):
        for word in shlex.split(match.group(1)):
            for piece in word.split(","):  # -Wl,--whole-archive,/path/lib.a
                if piece.startswith("/") and os.path.exists(piece):
                    paths.add(piece)
                elif piece.startswith("-l"):
                    for directory in link_dirs:
                        candidate = f"{directory}/lib{piece[2:]}.so"
                        if os.path.exists(candidate):
                            paths.add(candidate)
                            break
    return paths


def is_cuda_toolkit_path(path: str, local_prefix: str = LOCAL_PREFIX) -> bool:
    """True for the CUDA toolkit's files, which setup.sh leaves to the user on purpose.

    They live under /usr/local/cuda*, but the toolkit's installer also puts nvcc into
    /usr/local/bin and links include/, lib64/ and targets/ into /usr/local. When CMake finds nvcc
    as /usr/local/bin/nvcc (PATH without /usr/local/cuda/bin, as under CI), FindCUDA names
    /usr/local itself the toolkit root and its headers /usr/local/include/cuda*.h. So a path under
    /usr/local counts as the toolkit's when it resolves into a cuda* directory there, or when the
    same relative path exists inside one (the prefix itself included)."""
    roots = sorted(glob.glob(os.path.join(local_prefix, "cuda*")))
    real = os.path.realpath(path)
    for root in roots:
        real_root = os.path.realpath(root)
        if real == real_root or real.startswith(real_root + os.sep):
            return True
    if path == local_prefix or path.startswith(local_prefix + os.sep):
        relative = path[len(local_prefix):]
        return any(os.path.lexists(root + relative) for root in roots)
    return False


def check_system_files(paths: set[str], allowed: set[str], owners: FileOwners,
                       report: Report, local_prefix: str = LOCAL_PREFIX) -> None:
    missing: dict[str, list[str]] = {}
    cuda: list[str] = []
    for path in sorted(paths):
        if is_cuda_toolkit_path(path, local_prefix):
            cuda.append(path)
            continue
        found = owners.owners(path)
        if not found:
            if path == local_prefix or path.startswith(local_prefix + os.sep):
                report.problems.append(f"{path} was installed by hand (no Debian package owns "
                                       "it): a fresh machine does not have it")
            elif path.startswith("/usr/"):
                report.problems.append(f"{path} belongs to no Debian package")
            continue
        if not found & allowed:
            missing.setdefault(", ".join(sorted(found)), []).append(path)
    for package, used in sorted(missing.items()):
        shown = ", ".join(used[:3]) + (f" and {len(used) - 3} more" if len(used) > 3 else "")
        report.problems.append(
            f"the build uses files of {package}, which scripts/setup.sh does not "
            f"bring: {shown}")
    if cuda:
        report.notes.append(f"optional, not installed by setup.sh: {len(cuda)} files of the CUDA "
                            f"toolkit, such as {cuda[0]} (CUDA kernels are built because it is "
                            "here)")


def check_perf_analyzer(venv: Path, allowed: set[str], owners: FileOwners,
                        report: Report) -> None:
    exe = venv / "bin" / "perf_analyzer"
    if not exe.exists():
        report.problems.append(f"{exe} is missing (requirements-dev.txt's perf-analyzer)")
        return
    # The e2e test puts nvidia-cuda-runtime-cu12's lib directory on LD_LIBRARY_PATH.
    lib_dirs = glob.glob(str(venv / "lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(lib_dirs))
    out = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, env=env,
                         check=False).stdout
    for line in out.splitlines():
        if "not found" in line:
            report.problems.append(f"perf_analyzer cannot load {line.split()[0]}")
            continue
        match = re.search(r"=> (/\S+)", line)
        if match and not is_project_path(match.group(1), venv):
            found = owners.owners(match.group(1))
            if found and not found & allowed:
                report.problems.append(
                    f"perf_analyzer loads {match.group(1)} from {', '.join(sorted(found))}, "
                    "which scripts/setup.sh does not bring")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def required_distributions(files: list[Path]) -> set[str]:
    names = set()
    for path in files:
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
            if match:
                names.add(normalise(match.group(1)))
    return names


def imported_modules(pattern_roots: list[Path]) -> dict[str, set[str]]:
    """Top-level module name -> the files importing it (every import statement, also inside
    functions), leaving out the project's own modules."""
    files = [p for root in pattern_roots for p in sorted(ROOT.glob(str(root)))]
    local = {p.stem for p in files}
    modules: dict[str, set[str]] = {}
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in local and top not in sys.stdlib_module_names and top != "__future__":
                    modules.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return modules


def check_python_imports(venv_python: Path, requirements: list[Path], report: Report) -> None:
    wanted = required_distributions(requirements)
    imported = imported_modules([Path(p) for p in PYTHON_SOURCES])
    modules = {name: files for name, files in imported.items() if name not in NOT_FROM_PACKAGES}
    # Ask .venv's interpreter which distribution provides each module.
    probe = (
        "import importlib.metadata as m, importlib.util as u, json, sys\n"
        "dists = m.packages_distributions()\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        found = u.find_spec(name) is not None\n"
        "    except Exception:\n"
        "        found = False\n"
        "    out[name] = dists.get(name, []) if found else None\n"
        "print(json.dumps(out))\n")
    # Run outside the tree, so the repository's own folders (models/, tools/) are not found as
    # namespace packages.
    result = subprocess.run([str(venv_python), "-c", probe, *sorted(modules)],
                            capture_output=True, text=True, check=False, cwd="/")
    if result.returncode != 0:
        report.problems.append(f"cannot ask {venv_python} about modules: {result.stderr.strip()}")
        return
    import json  # noqa: PLC0415 (only this check needs it)
    for module, distributions in sorted(json.loads(result.stdout).items()):
        where = ", ".join(sorted(modules[module]))
        if distributions is None:
            report.problems.append(f"Python module '{module}' (imported by {where}) is not "
                                   "installed in .venv")
        elif not {normalise(d) for d in distributions} & wanted:
            report.problems.append(
                f"Python module '{module}' (imported by {where}) comes from "
                f"{', '.join(sorted(set(distributions)))}, which no requirements file names")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build",
                        help="a configured and built tree (default: build/)")
    parser.add_argument("--setup", type=Path, default=ROOT / "scripts/setup.sh",
                        help="the setup script whose APT_PACKAGES array lists what is installed")
    parser.add_argument("--requirements", type=Path, nargs="+",
                        default=[ROOT / "requirements-dev.txt", ROOT / "requirements-vim.txt"],
                        help="the Python requirements files setup.sh installs")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    args = parser.parse_args(argv)

    if not (args.build_dir / "CMakeCache.txt").exists():
        print(f"{args.build_dir} is not a configured build (no CMakeCache.txt)")
        return 1
    listed = read_package_list(args.setup)
    absent = [p for p in listed if not installed_package_installed(p)]
    report = Report()
    if absent:
        report.problems.append(f"listed but not installed here (run scripts/setup.sh): {absent}")
    allowed = dependency_closure(listed) | base_system_packages()
    owners = FileOwners()

    system = {p for p in cache_paths(args.build_dir) | ninja_paths(args.build_dir)
              if not is_project_path(p, args.build_dir)}
    report.system_paths = len(system)
    check_system_files(system, allowed, owners, report)
    check_perf_analyzer(args.venv, allowed, owners, report)
    check_python_imports(args.venv / "bin" / "python", args.requirements, report)

    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"MISSING: {problem}")
    print(f"{report.system_paths} system files checked against {len(listed)} listed packages "
          f"({len(allowed)} with their dependencies and the base system): "
          f"{len(report.problems)} problem(s)")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
