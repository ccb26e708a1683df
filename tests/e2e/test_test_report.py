"""scripts/test_report.py, which closes scripts/test.sh: skipped tests are listed with their
reasons and never counted as passed; a skipped test that is not a CUDA one fails the run."""
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
    assert "FAIL: 1 non-CUDA test(s) skipped" in out
    # The skip counts as a failure in the totals; the real failure too.
    assert out.strip().splitlines()[-1] == "total: 1 passed, 2 failed, 1 skipped"
