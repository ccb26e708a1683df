"""Guard for issue 9: every system file the build and the tests use comes from a package that
scripts/setup.sh installs, and every Python module the tests import from a requirements file.

The checker (scripts/check_dependencies.py) reads the configured, built tree that this suite
runs against. The two negative tests prove the guard can fail: with a needed package taken out
of a copy of the list (or a requirement out of a copy of requirements-dev.txt) it must fail and
name what is missing."""
import importlib.util
import subprocess
import sys

from conftest import BUILD_DIR, ROOT

CHECKER = ROOT / "scripts/check_dependencies.py"


def _check(*extra):
    result = subprocess.run([sys.executable, str(CHECKER), "--build-dir", str(BUILD_DIR), *extra],
                            capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def test_everything_the_build_and_tests_use_is_installed_by_setup():
    code, output = _check()
    assert code == 0, output
    # It did look: a configured and built tree uses hundreds of system headers and libraries.
    checked = int(output.strip().splitlines()[-1].split()[0])
    assert checked > 500, output


def test_guard_fails_and_names_a_debian_package_missing_from_the_list(tmp_path):
    setup = (ROOT / "scripts/setup.sh").read_text()
    # Nothing else on the list depends on imgcodecs, so removing it must leave the build's use of
    # imgcodecs.hpp and libopencv_imgcodecs.so unaccounted for.
    assert " libopencv-imgcodecs-dev" in setup
    broken = tmp_path / "setup.sh"
    broken.write_text(setup.replace(" libopencv-imgcodecs-dev", "", 1))
    code, output = _check("--setup", str(broken))
    assert code == 1, output
    assert "MISSING: the build uses files of libopencv-imgcodecs-dev" in output, output


def test_guard_fails_and_names_a_python_module_no_requirement_brings(tmp_path):
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "safetensors" in lines
    broken = tmp_path / "requirements-dev.txt"
    broken.write_text("\n".join(line for line in lines if line != "safetensors") + "\n")
    code, output = _check("--requirements", str(broken), str(ROOT / "requirements-vim.txt"))
    assert code == 1, output
    assert "Python module 'safetensors'" in output and "no requirements file names" in output, output


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_dependencies", CHECKER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _fake_local_prefix(tmp_path):
    """A /usr/local laid out as the CUDA toolkit's installer leaves it, plus one header that a
    user put there by hand."""
    local = tmp_path / "local"
    toolkit = local / "cuda-13.0"
    for relative in ("bin/nvcc", "include/cuda_runtime.h", "lib64/libcudart.so"):
        (toolkit / relative).parent.mkdir(parents=True, exist_ok=True)
        (toolkit / relative).write_text("")
    (local / "cuda").symlink_to(toolkit)
    (local / "lib64").symlink_to(toolkit / "lib64")
    (local / "bin").mkdir()
    (local / "bin/nvcc").write_text("#!/bin/sh\n")  # the installer's wrapper
    (local / "include").mkdir()
    (local / "include/cuda_runtime.h").write_text("")  # a copy, not a link
    (local / "include/hand_made.h").write_text("")
    return local


def test_cuda_toolkit_files_under_usr_local_are_optional_wherever_cmake_found_them(tmp_path):
    # CI's PATH lacks /usr/local/cuda/bin: CMake then finds nvcc as /usr/local/bin/nvcc and calls
    # /usr/local itself the toolkit root. That must count as the (optional) toolkit.
    checker = _load_checker()
    local = _fake_local_prefix(tmp_path)
    for path in (local, local / "cuda", local / "cuda/include/cuda_runtime.h", local / "bin/nvcc",
                 local / "include/cuda_runtime.h", local / "lib64/libcudart.so"):
        assert checker.is_cuda_toolkit_path(str(path), str(local)), path
    assert not checker.is_cuda_toolkit_path(str(local / "include/hand_made.h"), str(local))
    assert not checker.is_cuda_toolkit_path("/usr/include/stdio.h", str(local))


def test_guard_fails_on_a_file_installed_by_hand_under_usr_local(tmp_path):
    checker = _load_checker()
    local = _fake_local_prefix(tmp_path)
    report = checker.Report()
    paths = {str(local), str(local / "bin/nvcc"), str(local / "include/hand_made.h")}
    checker.check_system_files(paths, allowed=set(), owners=checker.FileOwners(), report=report,
                               local_prefix=str(local))
    assert report.problems == [f"{local / 'include/hand_made.h'} was installed by hand (no Debian "
                               "package owns it): a fresh machine does not have it"], report
    assert "2 files of the CUDA toolkit" in report.notes[0], report
