"""HTTP endpoints: Prometheus /metrics (parsed with the reference parser) and health."""
import subprocess

from prometheus_client.parser import text_string_to_metric_families

from conftest import E2E_MODEL, binary, sample_images

HISTOGRAMS = ["vitserve_request_duration_seconds", "vitserve_queue_duration_seconds",
              "vitserve_preprocess_duration_seconds", "vitserve_compute_duration_seconds",
              "vitserve_batch_size"]
GAUGES = ["vitserve_queue_depth", "vitserve_inflight_requests", "vitserve_model_ready"]


def _families(server):
    status, body = server.http_get("/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body)}


def _requests_total(families, code):
    # The parser strips `_total` from counter family names.
    family = families["vitserve_requests"]
    return sum(s.value for s in family.samples
               if s.name == "vitserve_requests_total" and s.labels.get("model") == E2E_MODEL
               and s.labels.get("code") == code)


def test_health_endpoints(server):
    assert server.http_get("/v2/health/live")[0] == 200
    assert server.http_get("/v2/health/ready")[0] == 200
    assert server.http_get("/no/such/path")[0] == 404


def test_metrics_names_types_and_counts(server):
    before = _families(server)
    ok_before = _requests_total(before, "OK")
    bad_before = _requests_total(before, "INVALID_ARGUMENT")
    client = binary("vitserve-client")
    image = str(sample_images()[0])
    ok = subprocess.run([str(client), "classify", "--server", server.grpc_target,
                         "--model", E2E_MODEL, image], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([str(client), "classify", "--server", server.grpc_target,
                          "--model", E2E_MODEL, __file__], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0

    after = _families(server)
    assert after["vitserve_requests"].type == "counter"
    assert _requests_total(after, "OK") == ok_before + 1
    assert _requests_total(after, "INVALID_ARGUMENT") == bad_before + 1
    for name in HISTOGRAMS:
        assert after[name].type == "histogram", name
    for name in GAUGES:
        assert after[name].type == "gauge", name
    ready = [s for s in after["vitserve_model_ready"].samples if s.labels["model"] == E2E_MODEL]
    assert ready and ready[0].value == 1
    batch_count = [s for s in after["vitserve_batch_size"].samples
                   if s.name == "vitserve_batch_size_count" and s.labels["model"] == E2E_MODEL]
    assert batch_count and batch_count[0].value >= 1
