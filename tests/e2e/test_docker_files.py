"""Static checks of the container builds (scripts/container-test.sh builds and runs them with
podman; these run in every test pass, in seconds):

- the builders install scripts/setup.sh's Debian packages (less the test-only ones) and take
  torch's version from requirements-dev.txt, so the image and the tested tree build alike;
- every COPY source exists and survives the Dockerfile's own .dockerignore;
- pip's build-time settings only arrive as secret mounts (never COPY, ENV or ARG);
- docker/libtorch_cpu_only.py applies to the torch wheel in .venv/ and makes CMake link a CPU-only
  LibTorch (libtorch_cpu.so, not libtorch.so / libtorch_cuda.so) without a CUDA toolkit.
"""
import fnmatch
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILES = ["docker/Dockerfile.cpu", "docker/Dockerfile.cuda"]


def _instructions(dockerfile):
    """(stage, instruction) pairs with continuation lines joined and comments dropped."""
    lines = (ROOT / dockerfile).read_text().splitlines()
    out, current, stage = [], "", None
    for line in lines:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", current, re.I)
            if m:
                stage = m.group(1)
            out.append((stage, current.strip()))
            current = ""
    return out


def _setup_packages():
    text = (ROOT / "scripts/setup.sh").read_text()
    match = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.M | re.S)
    assert match, "setup.sh has no APT_PACKAGES=( ... ) array"
    return {name for line in match.group(1).splitlines() for name in line.split("#", 1)[0].split()}


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_builder_installs_setup_packages(dockerfile):
    """The builder installs what docker/builder_packages.sh prints for the setup.sh it copied."""
    builder = [i for stage, i in _instructions(dockerfile) if stage == "builder"]
    copy_at = next(n for n, i in enumerate(builder) if i.startswith("COPY ") and "scripts/setup.sh" in i)
    assert "docker/builder_packages.sh" in builder[copy_at]
    apt_at = next(n for n, i in enumerate(builder) if "apt-get install" in i)
    assert copy_at < apt_at
    assert 'packages="$(bash /tmp/setup/builder_packages.sh /tmp/setup/setup.sh)"' in builder[apt_at]
    assert "${packages}" in builder[apt_at]


def test_builder_packages_are_setup_packages_without_test_ones(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "docker/builder_packages.sh"), str(ROOT / "scripts/setup.sh")],
                         capture_output=True, text=True, check=True).stdout.split()
    setup = _setup_packages()
    test_only = {"prometheus", "libgtest-dev", "libgmock-dev", "libbenchmark-dev", "libb64-0d",
                 "git", "python3-pip", "podman", "buildah", "debootstrap", "runc", "catatonit",
                 "fuse-overlayfs", "slirp4netns", "uidmap", "curl", "clang", "libclang-rt-14-dev"}
    assert set(out) == setup - test_only, set(out) ^ (setup - test_only)
    assert {"libgrpc++-dev", "cmake", "libopencv-imgcodecs-dev", "prometheus-cpp-dev",
            "libcpp-httplib-dev", "nlohmann-json3-dev"} <= set(out)
    # A file without the array is an error, not an empty list (the build would go on without
    # its -dev packages).
    empty = tmp_path / "setup.sh"
    empty.write_text("#!/bin/bash\necho no packages\n")
    bad = subprocess.run(["bash", str(ROOT / "docker/builder_packages.sh"), str(empty)],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "APT_PACKAGES" in bad.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_torch_version_comes_from_requirements(dockerfile):
    pins = re.findall(r"^torch==\S+", (ROOT / "requirements-dev.txt").read_text(), re.M)
    assert len(pins) == 1, pins
    steps = _instructions(dockerfile)
    copy_at = next(n for n, (_, i) in enumerate(steps)
                   if i.startswith("COPY ") and "requirements-dev.txt" in i)
    pip_at = next(n for n, (_, i) in enumerate(steps) if "pip install" in i)
    assert copy_at < pip_at
    assert "grep -E '^torch=='" in steps[pip_at][1], "the torch pin must be read, not repeated"
    assert "torch==" not in steps[pip_at][1].replace("'^torch=='", "")


def _ignored(patterns, path):
    """Docker's rule: the last matching pattern wins; a pattern also covers what is below it."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(p, pattern) or
               (pattern.startswith("**/") and fnmatch.fnmatchcase(p.split("/")[-1], pattern[3:]))
               for p in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_copy_sources_exist_and_are_not_dockerignored(dockerfile):
    patterns = [line.strip() for line in (ROOT / f"{dockerfile}.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert ".venv" in patterns and "build*" in patterns and ".git" in patterns
    copies = [i.split()[1:-1] for _, i in _instructions(dockerfile)
              if i.startswith("COPY ") and "--from=" not in i]
    assert copies
    for sources in copies:
        for src in sources:
            if src == ".":
                continue
            assert (ROOT / src).exists(), f"{dockerfile}: COPY {src}: no such file"
            assert not _ignored(patterns, src), f"{dockerfile}.dockerignore drops {src}"
    # the sanity of the matcher itself
    assert _ignored(patterns, "build/bin/vitserve") and _ignored(patterns, "docker/README.md")
    assert _ignored(patterns, "models/x/model.safetensors")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_pip_settings_only_as_secret_mounts(dockerfile):
    steps = _instructions(dockerfile)
    for _, instruction in steps:
        if "pip install" in instruction:
            assert "--mount=type=secret,id=pip.conf" in instruction
            assert "--mount=type=secret,id=pip-ca.pem" in instruction
            # without the secret (a user elsewhere) pip runs with its defaults
            assert 'if [ -s /run/secrets/pip.conf ]' in instruction
        if instruction.split()[0] in ("ENV", "ARG", "COPY", "ADD"):
            for word in ("PIP_CERT", "PIP_INDEX", "PIP_CONFIG_FILE", "pip.conf", "SSL_CERT", "pip-ca"):
                assert word not in instruction, f"{dockerfile}: {instruction}"
    # the HEALTHCHECK survives only in Docker-format images: the docs say --format docker
    assert "--format docker" in (ROOT / dockerfile).read_text()


def _venv_torch():
    torch_dir = next((ROOT / ".venv/lib").glob("python3*/site-packages/torch"), None)
    assert torch_dir and (torch_dir / "share/cmake/Torch/TorchConfig.cmake").is_file(), \
        "no torch wheel in .venv/ (scripts/setup.sh installs it)"
    return torch_dir


def test_libtorch_cpu_only_links_no_cuda(tmp_path):
    """The CPU image's CMake edit, applied to a copy of the real wheel's config: a target linking
    `torch` configures without a CUDA toolkit on PATH and links libtorch_cpu.so + libc10.so."""
    wheel = _venv_torch()
    torch_dir = tmp_path / "torch"
    (torch_dir / "share").mkdir(parents=True)
    shutil.copytree(wheel / "share/cmake", torch_dir / "share/cmake")
    (torch_dir / "lib").symlink_to(wheel / "lib")
    (torch_dir / "include").symlink_to(wheel / "include")
    subprocess.run(["python3", str(ROOT / "docker/libtorch_cpu_only.py"), str(torch_dir)],
                   check=True, capture_output=True)
    # A second run must refuse: every edit is checked to match exactly once.
    again = subprocess.run(["python3", str(ROOT / "docker/libtorch_cpu_only.py"), str(torch_dir)],
                           capture_output=True, text=True)
    assert again.returncode != 0 and "expected 1 match" in again.stderr

    project = tmp_path / "project"
    project.mkdir()
    (project / "main.cc").write_text("int main() { return 0; }\n")
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(t CXX)\n"
        "find_package(Torch REQUIRED)\n"
        "add_executable(t main.cc)\ntarget_link_libraries(t torch)\n")
    # No CUDA toolkit reachable: PATH without /usr/local/cuda, CUDA variables cleared.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["cmake", "-S", str(project), "-B", str(tmp_path / "b"), "-G", "Ninja",
         f"-DTorch_DIR={torch_dir}/share/cmake/Torch", "-DCUDAToolkit_ROOT=/nonexistent",
         "-DCMAKE_CUDA_COMPILER=/nonexistent/nvcc"],
        capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    ninja = (tmp_path / "b/build.ninja").read_text()
    link = next(line for line in ninja.splitlines() if "LINK_LIBRARIES" in line)
    assert "libtorch_cpu.so" in link and "libc10.so" in link, link
    assert "libtorch_cuda" not in link and "libc10_cuda" not in link, link
    assert "lib/libtorch.so" not in link, link
