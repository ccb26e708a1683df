#!/usr/bin/env python3
"""The table bench/serve_sweep.sh prints from its results file (model, measurement, value per
line, tab-separated): each served row against the model alone and timm, then, for the KServe
rounds (KSERVE_ROUNDS), the medians of perf_analyzer's rows against our client's.

A row whose tool failed is recorded as nan: it stays in the per-row table (as nan), but the
medians and ranges leave it out and count it on their line, since one nan among the values
would make the median and the range meaningless.

Usage: sweep_table.py RESULTS_TSV
"""
import collections
import math
import re
import sys


def read_results(path):
    """{model: {measurement: value}} in the file's order; values that are not numbers are
    skipped (nan is a number: a failed row)."""
    rows = collections.defaultdict(dict)
    with open(path) as f:
        for line in f:
            model, key, value = line.rstrip("\n").split("\t")
            try:
                rows[model][key] = float(value)
            except ValueError:
                pass
    return rows


def finite_or_none(value):
    return value if value is not None and math.isfinite(value) else None


def median(xs):
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


class Rounds:
    """One model's rows found by the prefix they share (rows of interleaved rounds end in _rN;
    keys ending in _ms are the rows' latencies, not rows)."""

    def __init__(self, rows):
        self.rows = rows

    def all(self, prefix):
        return [v for k, v in self.rows.items() if k.startswith(prefix) and not k.endswith("_ms")]

    def values(self, prefix):
        return sorted(v for v in self.all(prefix) if math.isfinite(v))

    def failed_note(self, prefix):
        n = sum(1 for v in self.all(prefix) if not math.isfinite(v))
        return f", {n} row{'s' if n > 1 else ''} failed" if n else ""

    def compare(self, label, prefix, base):
        """A line with the median and range of PREFIX's rows over the median of BASE (values);
        nothing when neither has rows."""
        pa = self.values(prefix)
        if pa and base:
            print(f"  {label}: median {median(pa):,.0f} (range {pa[0]:,.0f}-{pa[-1]:,.0f}"
                  f"{self.failed_note(prefix)}): / ours = {median(pa) / median(base):.3f}")
        elif self.all(prefix) and not pa:
            print(f"  {label}: no value, every row failed ({len(self.all(prefix))})")


def print_rows(model, r):
    alone = finite_or_none(next((v for k, v in r.items()
                                 if k.startswith("model_graph_b") and not k.endswith("_ms")), None))
    timm = finite_or_none(r.get("timm_eager_b256"))
    print(f"\n{model}: model alone (graph) {alone and round(alone)} img/s, timm eager b256 "
          f"{timm and round(timm)} img/s, graph b1 {r.get('model_graph_b1_ms')} ms")
    print(f"  {'measurement':24s} {'img/s':>9s} {'p50 ms':>8s} {'vs alone':>9s} {'vs timm':>8s}")
    nan = float("nan")
    for k, v in r.items():
        if k.endswith("_p50_ms") or k.startswith(("model_", "timm_")):
            continue
        p50 = r.get(k + "_p50_ms", nan)
        print(f"  {k:24s} {v:9.0f} {p50:8.2f} {v / alone if alone else nan:9.1%} "
              f"{v / timm if timm else nan:8.2f}")


def print_kserve_rounds(r):
    """KSERVE_ROUNDS: medians of the interleaved rounds, perf_analyzer against our client."""
    rounds = Rounds(r)
    concurrencies = sorted({int(x.group(1)) for k in r for x in
                            [re.match(r"kserve_(?:fp32|uint8)_c(\d+)_(?:pa_conns|shm)_r", k)]
                            if x})
    for dtype, c in ((d, c) for d in ("fp32", "uint8") for c in concurrencies):
        ours = rounds.values(f"kserve_{dtype}_c{c}_pa_conns_r")
        ours_shm = rounds.values(f"kserve_{dtype}_c{c}_shm_r")
        for shm, base, label in (("", ours, "KServe agreement"),
                                 ("_shm", ours_shm, "KServe agreement, shared memory")):
            pa_prefix = f"perf_analyzer_async_{dtype}_c{c}{shm}_r"
            base_prefix = f"kserve_{dtype}_c{c}{shm or '_pa_conns'}_r"
            pa = rounds.values(pa_prefix)
            if pa and base:
                print(f"  {label} ({dtype}, concurrency {c}, {len(pa)} rounds): "
                      f"perf_analyzer --async median {median(pa):,.0f} "
                      f"(range {pa[0]:,.0f}-{pa[-1]:,.0f}{rounds.failed_note(pa_prefix)}), "
                      f"vitserve-client median {median(base):,.0f} "
                      f"(range {base[0]:,.0f}-{base[-1]:,.0f}{rounds.failed_note(base_prefix)}): "
                      f"perf_analyzer / ours = {median(pa) / median(base):.3f}")
            elif rounds.all(pa_prefix) or rounds.all(base_prefix):
                print(f"  {label} ({dtype}, concurrency {c}): no ratio, every row of one tool "
                      f"failed (perf_analyzer {len(pa)} of {len(rounds.all(pa_prefix))}, "
                      f"vitserve-client {len(base)} of {len(rounds.all(base_prefix))})")
            where = f"{dtype}, concurrency {c}" + (", shared memory" if shm else "")
            # PA_SYNC_ROWS: perf_analyzer in its synchronous mode.
            rounds.compare(f"perf_analyzer synchronous ({where})",
                           f"perf_analyzer_sync_{dtype}_c{c}{shm}_r", base)
            # PA_LOCALHOST_ROWS: perf_analyzer sent to a name instead of an address.
            rounds.compare(f"perf_analyzer --async at localhost:8001 ({where})",
                           f"perf_analyzer_async_{dtype}_c{c}{shm}_localhost_r", base)
            # PA_MAX_THREADS_ROWS: perf_analyzer with fewer worker threads than requests.
            threads = sorted({int(x.group(1)) for k in r for x in
                              [re.match(rf"perf_analyzer_async_{dtype}_c{c}{shm}_t(\d+)_r", k)]
                              if x})
            for t in threads:
                rounds.compare(f"perf_analyzer --max-threads {t} ({where})",
                               f"perf_analyzer_async_{dtype}_c{c}{shm}_t{t}_r", base)
        # The two processes at 32 each stand in for one at 64: compared at 64 only.
        if c == 64:
            rounds.compare(f"two perf_analyzer processes at 32 each ({dtype})",
                           f"perf_analyzer_async_{dtype}_2x32_r", ours)
        for kind in ("tcmalloc", "tuned"):
            rounds.compare(f"perf_analyzer with {kind} malloc ({dtype})",
                           f"perf_analyzer_async_{dtype}_c{c}_{kind}_r", ours)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    for model, r in read_results(argv[1]).items():
        print_rows(model, r)
        print_kserve_rounds(r)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
