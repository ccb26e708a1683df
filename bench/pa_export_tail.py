#!/usr/bin/env python3
"""Where perf_analyzer's slow requests are: a summary of its --profile-export-file.

perf_analyzer's throughput in a closed loop is concurrency / mean latency, and its mean can sit
well above its p99 when a few requests take far longer than the rest. This prints the latency
distribution out to the maximum, how much of the mean the slow requests make, and whether they
come together in time (the longest gaps between consecutive completions, and the start times of
the slow requests in 100 ms bins): all requests stalled at once points at something shared (the
server, or perf_analyzer's own bookkeeping), a scattered tail at individual requests.

    python3 bench/pa_export_tail.py pa_export.json [--metrics AFTER [--metrics-before BEFORE]]

--metrics: vitserve's /metrics after the run (and --metrics-before, before it); prints how many
requests the server itself took longer than 10, 25, 50 and 100 ms in between
(vitserve_request_duration_seconds).
"""
import argparse
import json
import re


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarise_experiment(experiment):
    spans = []  # (start ns, end ns)
    for request in experiment.get("requests", []):
        ends = request.get("response_timestamps") or []
        if ends:
            spans.append((request["timestamp"], ends[-1]))
    if not spans:
        print("  no completed requests")
        return
    spans.sort()
    origin = spans[0][0]
    latencies_ms = sorted((end - start) / 1e6 for start, end in spans)
    n = len(latencies_ms)
    mean = sum(latencies_ms) / n
    p50 = percentile(latencies_ms, 0.50)
    p90, p99, p999 = (percentile(latencies_ms, q) for q in (0.9, 0.99, 0.999))
    print(f"  {n} requests: mean {mean:.3f} ms, p50 {p50:.3f}, p90 {p90:.3f}, p99 {p99:.3f}, "
          f"p99.9 {p999:.3f}, max {latencies_ms[-1]:.3f}")
    for threshold in (2 * p50, 10.0, 25.0, 50.0, 100.0):
        slow = [x for x in latencies_ms if x > threshold]
        if not slow:
            continue
        rest = latencies_ms[: n - len(slow)]
        rest_mean = f"{sum(rest) / len(rest):.3f} ms" if rest else "-"
        print(f"  over {threshold:.1f} ms: {len(slow)} ({len(slow) / n:.2%}), "
              f"mean {sum(slow) / len(slow):.1f} ms; the mean without them {rest_mean}")
    ends = sorted(end for _, end in spans)
    gaps = sorted(((later - earlier) / 1e6, (earlier - origin) / 1e9)
                  for earlier, later in zip(ends, ends[1:]))
    print("  longest gaps between consecutive completions (ms at s after the first request): "
          + ", ".join(f"{gap:.1f} at {at:.2f}" for gap, at in reversed(gaps[-10:])))
    slow_threshold = 4 * p50
    bins = {}
    for start, end in spans:
        if (end - start) / 1e6 > slow_threshold:
            key = int((start - origin) / 1e8)
            bins[key] = bins.get(key, 0) + 1
    if bins:
        busiest = sorted(bins.items(), key=lambda kv: -kv[1])[:15]
        print(f"  requests over {slow_threshold:.1f} ms by start time (100 ms bins, busiest first; "
              f"{len(bins)} bins hold any): "
              + ", ".join(f"{key / 10:.1f} s: {count}" for key, count in busiest))


def duration_buckets(path):
    buckets = {}
    for line in open(path):
        m = re.match(r'vitserve_request_duration_seconds_bucket\{([^}]*)\} (\S+)', line)
        if not m:
            continue
        le = re.search(r'le="([^"]+)"', m.group(1))
        if le:
            buckets[le.group(1)] = buckets.get(le.group(1), 0) + float(m.group(2))
    return buckets


def summarise_metrics(after_path, before_path):
    after = duration_buckets(after_path)
    before = duration_buckets(before_path) if before_path else {}
    buckets = {le: count - before.get(le, 0) for le, count in after.items()}
    total = buckets.get("+Inf")
    if total is None:
        print("  no vitserve_request_duration_seconds in the metrics")
        return
    parts = []
    for le in ("0.01", "0.025", "0.05", "0.1"):
        if le in buckets:
            parts.append(f"over {float(le) * 1000:.0f} ms {total - buckets[le]:.0f}")
    print(f"  the server's own request durations ({total:.0f} requests): " + ", ".join(parts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", help="perf_analyzer --profile-export-file output (JSON)")
    parser.add_argument("--metrics", help="vitserve's /metrics after the run")
    parser.add_argument("--metrics-before", help="vitserve's /metrics before the run")
    args = parser.parse_args()
    with open(args.export) as f:
        document = json.load(f)
    for experiment in document.get("experiments", []):
        print(f"experiment {experiment.get('experiment', {})}:")
        summarise_experiment(experiment)
    if args.metrics:
        summarise_metrics(args.metrics, args.metrics_before)


if __name__ == "__main__":
    main()
