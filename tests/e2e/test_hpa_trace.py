"""The HPA's scaling signal, for real: one vitserve under stepped open-loop load (light, twice its
capacity, steady, low), a real Prometheus scraping it with the deployed job, the deployed
prometheus-adapter query for the HPA's metric, and the HPA decision of deploy/base/hpa.yaml
(tools/hpa_model.py) every 15 s, in real time (about 9 minutes).

No cluster runs here, so the pods are simulated: the one server carries the whole fleet's load
and its in-flight requests are the fleet's total, which the simulated replicas share equally
(the per-pod average the HPA sees is total / replicas). Added replicas therefore do not relieve
the server: the trace shows the controller's decisions on the measured signal, not the fleet
recovering. Writes hpa_trace.json and hpa_trace.png (load, p99 latency, signal, replicas) to
$VITSERVE_HPA_TRACE_DIR (docs/images holds the run shown in docs/deployment.md) or a temp dir.
"""
import bisect
import itertools
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import yaml

from conftest import E2E_MODEL, ROOT, ServerProcess, binary
from prometheus_helpers import (DEPLOY, NAMESPACE, adapter_rules, expand_adapter_query,
                                start_prometheus)

sys.path.insert(0, str(ROOT / "tools"))
import hpa_model  # noqa: E402

POD = "vitserve-0"
# (phase, seconds, offered load as a multiple of the measured capacity)
PHASES = (("light", 30, 0.2), ("overload", 90, 2.0), ("steady", 60, 0.6), ("low", 330, 0.1))
# When each phase ends, in seconds from the start of the load.
PHASE_ENDS = tuple(itertools.accumulate(seconds for _, seconds, _ in PHASES))


def capacity_img_s(server):
    """Closed-loop throughput with enough clients to fill batches: the server's capacity."""
    out = subprocess.run(
        [str(binary("vitserve-client")), "bench", f"--server={server.grpc_target}",
         f"--model={E2E_MODEL}", "--input=raw", "--concurrency=16", "--duration=6",
         "--warmup=2", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["throughput_img_s"]


def hpa_metric_query():
    """The adapter's metricsQuery for the HPA's metric, expanded as the adapter does."""
    hpa = yaml.safe_load((DEPLOY / "base" / "hpa.yaml").read_text())
    [metric] = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    [rule] = [r for r in adapter_rules() if r["name"]["as"] == name]
    return expand_adapter_query(rule, f'namespace="{NAMESPACE}",pod="{POD}"', "pod")


def offer_load(server, rates, stop):
    """Runs each phase's open-loop bench in turn (errors are expected under overload)."""
    for (phase, seconds, _), rate in zip(PHASES, rates):
        if stop.is_set():
            return
        subprocess.run(
            [str(binary("vitserve-client")), "bench", f"--server={server.grpc_target}",
             f"--model={E2E_MODEL}", "--input=raw", f"--rate={rate:.2f}", f"--duration={seconds}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 120)


def plot(trace, path):
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    t = [row["t"] for row in trace]
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(9, 9))
    series = (("offered load (img/s)", "rate"), ("p99 latency (s, 30 s window)", "p99_s"),
              ("in-flight, fleet total (adapter query)", "inflight_total"),
              ("replicas (HPA of deploy/base/hpa.yaml)", "replicas"))
    for ax, (label, key) in zip(axes, series):
        ax.step(t, [row[key] if row[key] is not None else float("nan") for row in trace],
                where="post")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    for (phase, _, _), start in zip(PHASES, (0,) + PHASE_ENDS[:-1]):
        for ax in axes:
            ax.axvline(start, color="grey", lw=0.5)
        axes[0].text(start + 2, axes[0].get_ylim()[1] * 0.85, phase, fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"vitserve {E2E_MODEL} on CPU: HPA signal and decisions (one sync per 15 s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def test_hpa_scales_up_under_overload_holds_steady_and_scales_down_after_the_window(tmp_path):
    out_dir = pathlib.Path(os.environ.get("VITSERVE_HPA_TRACE_DIR", tmp_path))
    server = ServerProcess([f"--model={E2E_MODEL}", "--max-batch-size=8",
                            "--max-queue-size=64"], tmp_path / "vitserve.log")
    prometheus = None
    stop = threading.Event()
    loader = None
    try:
        server.wait_ready()
        capacity = capacity_img_s(server)
        rates = [capacity * factor for _, _, factor in PHASES]
        prometheus = start_prometheus([server], [POD], tmp_path)
        query = hpa_metric_query()
        spec = hpa_model.spec_from_manifest(
            yaml.safe_load((DEPLOY / "base" / "hpa.yaml").read_text()))
        hpa = hpa_model.Autoscaler(spec, replicas=spec.min_replicas)

        loader = threading.Thread(target=offer_load, args=(server, rates, stop))
        start = time.monotonic()
        loader.start()
        trace = []
        total = PHASE_ENDS[-1]
        sync = 0
        while sync * hpa_model.SYNC_PERIOD_S <= total:
            time.sleep(max(0.0, start + sync * hpa_model.SYNC_PERIOD_S - time.monotonic()))
            t = sync * hpa_model.SYNC_PERIOD_S
            result = prometheus.query(query)
            inflight = float(result[0]["value"][1]) if result else 0.0
            p99 = prometheus.query(
                "histogram_quantile(0.99, sum by (le) (rate(vitserve_request_duration_seconds_"
                f'bucket{{namespace="{NAMESPACE}"}}[30s])))')
            p99_s = float(p99[0]["value"][1]) if p99 else None
            if p99_s is not None and p99_s != p99_s:  # NaN: no requests in the window.
                p99_s = None
            before = hpa.replicas
            replicas = hpa.sync(t, [inflight / before] * before)
            phase_index = min(bisect.bisect_right(PHASE_ENDS, t), len(PHASES) - 1)
            trace.append({"t": t, "phase": PHASES[phase_index][0], "rate": rates[phase_index],
                          "inflight_total": inflight, "per_pod": inflight / before,
                          "p99_s": p99_s, "replicas": replicas})
            print(json.dumps(trace[-1]), flush=True)
            sync += 1
        loader.join(timeout=180)
    finally:
        stop.set()
        if prometheus is not None:
            prometheus.stop()
        server.stop()

    (out_dir / "hpa_trace.json").write_text(json.dumps(
        {"model": E2E_MODEL, "capacity_img_s": capacity, "phases": PHASES,
         "target_average": spec.target_average, "trace": trace}, indent=1))
    plot(trace, out_dir / "hpa_trace.png")

    ends = {phase: end for (phase, _, _), end in zip(PHASES, PHASE_ENDS)}
    replicas = [row["replicas"] for row in trace]
    peak = max(replicas)
    # Scale up under overload: above the minimum before the overload phase ends.
    assert any(row["replicas"] > spec.min_replicas for row in trace
               if row["t"] <= ends["overload"]), trace
    # No flapping: the count only rises, then only falls (never up again after a decrease).
    first_down = next((i for i in range(1, len(replicas)) if replicas[i] < replicas[i - 1]), None)
    assert first_down is not None, f"never scaled down: {replicas}"
    assert all(b <= a for a, b in zip(replicas[first_down - 1:], replicas[first_down:])), replicas
    assert all(b >= a for a, b in zip(replicas[:first_down - 1], replicas[1:first_down])), replicas
    # Scale down only after the stabilisation window has passed since the overload ended.
    assert trace[first_down]["t"] >= ends["overload"] + spec.scale_down.stabilization_window_s - \
        hpa_model.SYNC_PERIOD_S, (trace[first_down], ends)
    assert replicas[-1] < peak
