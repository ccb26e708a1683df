"""vitserve-bench-grpc-rtt (bench/grpc_round_trip.cc) against the real server: the floor under
a lone request. Each call's outcome is counted, so the rows it prints are the calls it claims."""
import re
import subprocess

from conftest import E2E_MODEL, binary


def run_rtt(*args, timeout=300):
    return subprocess.run([str(binary("vitserve-bench-grpc-rtt")), *args], capture_output=True,
                          text=True, timeout=timeout)


def summary(stdout):
    """(calls, {outcome: count}) from the tool's output."""
    head, *outcomes = stdout.strip().splitlines()
    calls = int(re.search(r": (\d+) calls, mean [\d.]+ us, p50 [\d.]+", head).group(1))
    counts = {}
    for line in outcomes:
        count, outcome = re.fullmatch(r"\s+(\d+) x (.*)", line).groups()
        counts[outcome] = int(count)
    return calls, counts


def test_unknown_model_measures_the_transport_alone(server):
    result = run_rtt("--server", server.grpc_target, "--calls", "40", "--warmup_calls", "5",
                     "--image_size", "64", "--gap_us", "200")
    assert result.returncode == 0, result.stderr
    # 64 * 64 * 3 pixels, plus 28 bytes of protobuf: the model's name (2 + 13), the image and
    # raw-image headers (3 + 3), width and height (2 + 2) and the pixels' header (3).
    assert "12316 request bytes, gap 200 us" in result.stdout, result.stdout
    calls, counts = summary(result.stdout)
    assert calls == 40
    ((outcome, count),) = counts.items()
    assert count == 40 and outcome.startswith("NOT_FOUND: unknown model 'no_such_model'")


def test_served_model_and_other_methods(server):
    result = run_rtt("--server", server.grpc_target, "--calls", "5", "--warmup_calls", "1",
                     "--model", E2E_MODEL)
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout) == (5, {"OK": 5})
    result = run_rtt("--server", server.grpc_target, "--calls", "20",
                     "--method", "/grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert "0 request bytes" in result.stdout
    assert summary(result.stdout) == (20, {"OK": 20})


def test_bad_flags_are_a_usage_error():
    result = run_rtt("--calls", "0")
    assert result.returncode == 2
    assert "--calls and --image_size must be positive" in result.stderr
