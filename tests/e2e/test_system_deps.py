"""Guard for issue 9: every system file the build and the tests use comes from a package that
scripts/setup.sh installs, and every Python module the tests import from a requirements file.

The checker (scripts/check_dependencies.py) reads the configured, built tree that this suite
runs against. The two negative tests prove the guard can fail: with a needed package taken out
of a copy of the list (or a requirement out of a copy of requirements-dev.txt) it must fail and
name what is missing."""
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
