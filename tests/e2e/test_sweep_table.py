"""bench/sweep_table.py, the table bench/serve_sweep.sh prints: served rows against the model
alone and timm, and the KServe rounds' medians (perf_analyzer against our client), from small
results files whose answers are worked out in each test."""
import subprocess
import sys

from conftest import ROOT

TABLE = ROOT / "bench/sweep_table.py"


def _run(tmp_path, rows):
    path = tmp_path / "results.tsv"
    path.write_text("".join(f"{m}\t{k}\t{v}\n" for m, k, v in rows))
    result = subprocess.run([sys.executable, str(TABLE), str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _line(out, start):
    matches = [line.strip() for line in out.splitlines() if line.strip().startswith(start)]
    assert len(matches) == 1, (start, out)
    return matches[0]


def test_served_rows_against_the_model_alone_and_timm(tmp_path):
    out = _run(tmp_path, [("m", "model_graph_b128", 8000),
                          ("m", "timm_eager_b256", 4000), ("m", "raw_c64", 6000),
                          ("m", "raw_c64_p50_ms", 3.25)])
    assert "m: model alone (graph) 8000 img/s, timm eager b256 4000 img/s" in out
    # 6000 / 8000 = 75.0%, 6000 / 4000 = 1.50.
    assert _line(out, "raw_c64").split() == ["raw_c64", "6000", "3.25", "75.0%", "1.50"]


def test_a_failed_anchor_leaves_the_ratios_empty_instead_of_failing(tmp_path):
    out = _run(tmp_path, [("m", "model_graph_b128", "nan"), ("m", "raw_c64", 6000)])
    assert "m: model alone (graph) None img/s" in out
    assert _line(out, "raw_c64").split() == ["raw_c64", "6000", "nan", "nan%", "nan"]


def _round_rows(prefix_pa, prefix_ours, pa, ours):
    return ([("m", f"{prefix_pa}{i}", v) for i, v in enumerate(pa, 1)]
            + [("m", f"{prefix_ours}{i}", v) for i, v in enumerate(ours, 1)])


def test_agreement_is_the_ratio_of_the_medians_of_the_rounds(tmp_path):
    out = _run(tmp_path, _round_rows("perf_analyzer_async_fp32_c64_r", "kserve_fp32_c64_pa_conns_r",
                                     [900, 1000, 800], [1000, 1100, 950]))
    # perf_analyzer median 900 (800-1000), ours median 1000 (950-1100): 0.900.
    assert _line(out, "KServe agreement (fp32") == (
        "KServe agreement (fp32, concurrency 64, 3 rounds): perf_analyzer --async median 900 "
        "(range 800-1,000), vitserve-client median 1,000 (range 950-1,100): "
        "perf_analyzer / ours = 0.900")


def test_failed_rows_are_left_out_of_the_medians_and_counted(tmp_path):
    rows = _round_rows("perf_analyzer_async_uint8_c256_shm_r", "kserve_uint8_c256_shm_r",
                       [900, "nan", 1000, "nan"], [1000, 1000, 1000, 1000])
    out = _run(tmp_path, rows)
    # Medians of 900 and 1000 (the two that ran): 950 / 1000.
    assert _line(out, "KServe agreement, shared memory (uint8") == (
        "KServe agreement, shared memory (uint8, concurrency 256, 2 rounds): perf_analyzer "
        "--async median 950 (range 900-1,000, 2 rows failed), vitserve-client median 1,000 "
        "(range 1,000-1,000): perf_analyzer / ours = 0.950")


def test_no_ratio_when_every_row_of_one_tool_failed(tmp_path):
    out = _run(tmp_path, _round_rows("perf_analyzer_async_fp32_c64_r", "kserve_fp32_c64_pa_conns_r",
                                     ["nan", "nan"], [1000, 1200]))
    assert _line(out, "KServe agreement (fp32") == (
        "KServe agreement (fp32, concurrency 64): no ratio, every row of one tool failed "
        "(perf_analyzer 0 of 2, vitserve-client 2 of 2)")


def test_extra_perf_analyzer_rows_against_our_client_of_the_same_placement(tmp_path):
    rows = _round_rows("perf_analyzer_async_fp32_c64_shm_r", "kserve_fp32_c64_shm_r",
                       [880, 900], [1000, 1000])
    rows += [("m", "perf_analyzer_async_fp32_c64_shm_localhost_r1", 500),
             ("m", "perf_analyzer_async_fp32_c64_shm_localhost_r2", 700),
             ("m", "perf_analyzer_sync_fp32_c64_shm_r1", "nan"),
             ("m", "perf_analyzer_sync_fp32_c64_shm_r2", "nan"),
             ("m", "perf_analyzer_async_fp32_c64_shm_t16_r1", 950)]
    out = _run(tmp_path, rows)
    assert _line(out, "perf_analyzer --async at localhost:8001") == (
        "perf_analyzer --async at localhost:8001 (fp32, concurrency 64, shared memory): "
        "median 600 (range 500-700): / ours = 0.600")
    assert _line(out, "perf_analyzer synchronous") == (
        "perf_analyzer synchronous (fp32, concurrency 64, shared memory): "
        "no value, every row failed (2)")
    assert _line(out, "perf_analyzer --max-threads 16") == (
        "perf_analyzer --max-threads 16 (fp32, concurrency 64, shared memory): "
        "median 950 (range 950-950): / ours = 0.950")
    # The shared-memory rounds' extra rows are not compared with the rows in the requests.
    assert "KServe agreement (fp32" not in out


def test_two_processes_at_32_compare_with_our_client_at_64(tmp_path):
    rows = _round_rows("perf_analyzer_async_fp32_c64_r", "kserve_fp32_c64_pa_conns_r",
                       [600], [1000])
    rows += [("m", "perf_analyzer_async_fp32_2x32_r1", 850)]
    out = _run(tmp_path, rows)
    assert _line(out, "two perf_analyzer processes") == (
        "two perf_analyzer processes at 32 each (fp32): median 850 (range 850-850): "
        "/ ours = 0.850")


def test_usage(tmp_path):
    result = subprocess.run([sys.executable, str(TABLE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "Usage: sweep_table.py RESULTS_TSV" in result.stderr


def _targets(out, model):
    """The lines of MODEL's "issue 11 targets" block."""
    lines = out.splitlines()
    start = lines.index(f"  issue 11 targets ({model}):")
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        block.append(line.strip())
    return block


def test_targets_take_the_best_raw_row_above_one_client(tmp_path):
    out = _run(tmp_path, [("shvit_s1", "model_graph_b128", 10000),
                          ("shvit_s1", "model_graph_b1_ms", 0.7),
                          ("shvit_s1", "timm_eager_b256", 5000),
                          ("shvit_s1", "raw_c1", 1500), ("shvit_s1", "raw_c1_p50_ms", 1.25),
                          ("shvit_s1", "raw_c64", 6000), ("shvit_s1", "raw_c1024", 8200),
                          ("shvit_s1", "raw_c1024_2clients", 7000),
                          ("shvit_s1", "raw16_c32", 9900)])
    # raw_c1024 is the best one-image row (raw16 sends 16 per request; raw_c1 is the latency
    # row): 8200 / 10000 = 82.0% and 8200 / 5000 = 1.64x, so the goal beyond is met too.
    # Latency: 1.25 > 0.7 + 0.5 = 1.2.
    assert _targets(out, "shvit_s1") == [
        "throughput, raw, 1 image per request: best raw_c1024 8,200 img/s = 82.0% of alone "
        "(>= 50%: met), 1.64x timm (>= 1.0x: met)",
        "goal beyond, 80% of alone and 1.5x timm: met",
        "latency, raw, 1 client: p50 1.250 ms, replay 0.700 + 0.5 = 1.200 ms: NOT met"]


def test_the_goal_beyond_needs_both_shares(tmp_path):
    out = _run(tmp_path, [("m", "model_graph_b128", 10000), ("m", "timm_eager_b256", 6000),
                          ("m", "raw_c256", 8500)])
    # 85% of alone but 8500 / 6000 = 1.42x timm.
    block = _targets(out, "m")
    assert block[0].endswith("= 85.0% of alone (>= 50%: met), 1.42x timm (>= 1.0x: met)")
    assert block[1] == "goal beyond, 80% of alone and 1.5x timm: NOT met"


def test_vit_base_needs_ninety_percent_of_its_model_alone_and_no_timm_share(tmp_path):
    out = _run(tmp_path, [("vit_base_patch16_224", "model_graph_b128", 1000),
                          ("vit_base_patch16_224", "timm_eager_b256", 2000),
                          ("vit_base_patch16_224", "raw_c1024", 890)])
    assert _targets(out, "vit_base_patch16_224") == [
        "throughput, raw, 1 image per request: best raw_c1024 890 img/s = 89.0% of alone "
        "(>= 90%: NOT met)",
        "latency, raw, 1 client: not measured"]


def test_jpeg_and_kserve_targets(tmp_path):
    rows = [("m", "jpeg224_c1024", 15000), ("m", "jpeg640_c1024", 7999),
            ("m", "jpeg224_c1", 700), ("m", "jpeg224_c1_p50_ms", 1.5)]
    rows += _round_rows("perf_analyzer_async_uint8_c64_shm_r", "kserve_uint8_c64_shm_r",
                        [1090, 1110], [1000, 1000])
    rows += _round_rows("perf_analyzer_async_fp32_c64_r", "kserve_fp32_c64_pa_conns_r",
                        [600, 700], [1000, 1000])
    out = _run(tmp_path, rows)
    # 15,000 is at the line; 7,999 one below it; UINT8 1100 / 1000 at the 10% line, FP32 0.65.
    assert _targets(out, "m") == [
        "throughput, raw, 1 image per request: not measured (no raw row at concurrency > 1, "
        "or no model-alone anchor)",
        "latency, raw, 1 client: not measured",
        "JPEG 224: best jpeg224_c1024 15,000 img/s (>= 15,000: met)",
        "JPEG 640: best jpeg640_c1024 7,999 img/s (>= 8,000: NOT met)",
        "latency, JPEG 224, 1 client: p50 1.500 ms (<= 2.0 ms: met)",
        "KServe, fp32, concurrency 64, tensors in the requests: perf_analyzer / ours 0.650 "
        "(within 10%: NOT met)",
        "KServe, uint8, concurrency 64, shared memory: perf_analyzer / ours 1.100 "
        "(within 10%: met)"]
