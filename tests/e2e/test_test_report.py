"""scripts/test_report.py, which closes scripts/test.sh: skipped tests are listed with their
reasons and never counted as passed; a skipped test fails the run unless it is a CUDA one or the
container image test on a disk without room for the build."""
import os
import subprocess
import sys

from conftest import ROOT

REPORT = ROOT / "scripts/test_report.py"


def _junit(path, cases):
    body = "".join(
        f'<testcase name="{name}" classname="{name}">{extra}</testcase>' for name, extra in cases)
    path.write_text(f'<?xml version="1.0"?><testsuite>{body}</testsuite>')
    return path


def _run(*paths):
    result = subprocess.run([sys.executable, str(REPORT), *map(str, paths)], capture_output=True,
                            text=True, timeout=60)
    return result.returncode, result.stdout


def test_cuda_skips_are_listed_with_their_reason_and_allowed(tmp_path):
    ctest = _junit(tmp_path / "ctest.xml", [
        ("SuiteTest.Works", ""),
        ("ModelInstanceCudaTest.RunsOnCuda",
         '<skipped message="SKIP_REGULAR_EXPRESSION_MATCHED"/><system-out>[ RUN ] x\n'
         "a_test.cc:12: Skipped\nno CUDA device\n[  SKIPPED ] x</system-out>"),
    ])
    pytest = _junit(tmp_path / "pytest.xml", [("test_a", ""), ("test_b", "")])
    code, out = _run(ctest, pytest)
    assert code == 0, out
    assert "ModelInstanceCudaTest.RunsOnCuda: no CUDA device (CUDA only" in out
    assert out.strip().splitlines()[-1] == "total: 3 passed, 0 failed, 1 skipped"


def test_a_skipped_non_cuda_test_fails_the_run(tmp_path):
    pytest = _junit(tmp_path / "pytest.xml", [
        ("test_a", ""),
        ("test_needs_timm", '<skipped message="could not import \'timm\'"/>'),
        ("test_broken", '<failure message="assert 1 == 2"/>'),
    ])
    code, out = _run(pytest)
    assert code == 1, out
    assert "test_needs_timm: could not import 'timm'" in out
    assert "FAIL: 1 test(s) skipped without an allowed reason" in out
    # The skip counts as a failure in the totals; the real failure too.
    assert out.strip().splitlines()[-1] == "total: 1 passed, 2 failed, 1 skipped"


def test_the_container_test_may_skip_only_for_lack_of_disk(tmp_path):
    container = _junit(tmp_path / "container.xml", [
        ("container_image::cpu", '<skipped message="not enough disk: 3 GB free for podman"/>')])
    code, out = _run(container)
    assert code == 0, out
    assert "(allowed: the machine lacks the disk space)" in out
    assert out.strip().splitlines()[-1] == "total: 0 passed, 0 failed, 1 skipped"

    other = _junit(tmp_path / "other.xml", [
        ("container_image::cpu", '<skipped message="podman is missing"/>')])
    code, out = _run(other)
    assert code == 1, out
    assert out.strip().splitlines()[-1] == "total: 0 passed, 1 failed, 1 skipped"


def test_container_test_reports_a_disk_without_room_as_a_skip(tmp_path):
    """Run the real script with more room asked for than any disk has: it must not start a
    build, exit 0, and write a JUnit skip that test_report.py accepts."""
    report = tmp_path / "container-junit.xml"
    env = dict(os.environ, VITSERVE_CT_NEED_GB="1000000", VITSERVE_CT_WORK=str(tmp_path / "work"))
    result = subprocess.run([str(ROOT / "scripts/container-test.sh"), "--junit", str(report)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "SKIPPED: not enough disk" in result.stderr
    assert "podman build" not in result.stderr
    text = report.read_text()
    assert '<skipped message="not enough disk:' in text
    assert 'name="container_image::cpu"' in text
    code, out = _run(report)
    assert code == 0, out
