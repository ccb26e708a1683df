"""tools/hpa_model.py against the Kubernetes documentation's rules, with deploy/base/hpa.yaml."""
import pathlib
import random
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import hpa_model  # noqa: E402

SYNC = hpa_model.SYNC_PERIOD_S


def manifest_spec():
    return hpa_model.spec_from_manifest(
        yaml.safe_load((ROOT / "deploy" / "base" / "hpa.yaml").read_text()))


def run(autoscaler, per_pod_average, start_s, end_s):
    """Syncs every 15 s from start_s (inclusive) to end_s (exclusive): [(time, replicas)]."""
    trace = []
    t = start_s
    while t < end_s:
        value = per_pod_average(t) if callable(per_pod_average) else per_pod_average
        trace.append((t, autoscaler.sync(t, [value] * autoscaler.replicas)))
        t += SYNC
    return trace


def test_the_manifest_reads_as_written():
    spec = manifest_spec()
    assert (spec.min_replicas, spec.max_replicas, spec.target_average) == (2, 10, 8.0)
    assert spec.scale_up.stabilization_window_s == 0
    assert spec.scale_up.select_policy == "Max"
    assert {(p.kind, p.value, p.period_s) for p in spec.scale_up.policies} == {
        ("Percent", 100, 30.0), ("Pods", 2, 30.0)}
    assert spec.scale_down.stabilization_window_s == 300
    assert spec.scale_down.select_policy == "Min"


def test_within_the_tolerance_nothing_changes_beyond_it_the_ratio_scales():
    spec = manifest_spec()
    hpa = hpa_model.Autoscaler(spec, replicas=4)
    assert hpa.sync(0, [8.7] * 4) == 4      # ratio 1.0875: inside 10%
    assert hpa.sync(15, [7.3] * 4) == 4     # ratio 0.9125: inside 10%
    assert hpa.sync(30, [9.0] * 4) == 5     # ratio 1.125: ceil(4 * 1.125) = 5


def test_scale_up_is_limited_to_doubling_or_two_pods_per_30_seconds():
    hpa = hpa_model.Autoscaler(manifest_spec(), replicas=2)
    trace = run(hpa, 80.0, 0, 90)  # Ten times the target: wants maxReplicas (10) at once.
    assert [r for _, r in trace] == [4, 4, 8, 8, 10, 10]


def test_scale_down_waits_for_the_window_then_removes_one_pod_a_minute():
    hpa = hpa_model.Autoscaler(manifest_spec(), replicas=10)
    high = run(hpa, 80.0, 0, 60)
    assert all(r == 10 for _, r in high)
    low = run(hpa, 0.0, 60, 60 + 300 + 4 * 60 + SYNC)
    replicas = dict(low)
    # The last recommendation of 10 was at t = 45 s: it holds until 45 + 300 s.
    assert all(r == 10 for t, r in low if t <= 345)
    assert replicas[360] == 9
    # Then one pod per 60 s (10% of 9 pods truncates to 8.1 -> 8: one pod too).
    assert replicas[405] == 9 and replicas[420] == 8 and replicas[480] == 7 and replicas[540] == 6


def test_no_flapping_under_steady_noisy_load():
    rng = random.Random(1)
    hpa = hpa_model.Autoscaler(manifest_spec(), replicas=4)
    trace = run(hpa, lambda t: 8.0 * (1 + rng.uniform(-0.08, 0.08)), 0, 3600)
    assert {r for _, r in trace} == {4}


def test_min_and_max_replicas_bound_every_decision():
    hpa = hpa_model.Autoscaler(manifest_spec(), replicas=2)
    assert all(r >= 2 for _, r in run(hpa, 0.0, 0, 900))
    assert all(r <= 10 for _, r in run(hpa, 1000.0, 900, 1500))
