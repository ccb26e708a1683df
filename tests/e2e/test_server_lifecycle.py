"""Process-level behaviour: model repository, config errors, SIGTERM drain."""
import json
import os
import pathlib
import re
import subprocess
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from conftest import E2E_MODEL, SMALL_CLASSIFIER, add_model, binary, http_post, sample_images


def _models(server):
    listing = subprocess.run([str(binary("vitserve-client")), "models", "--server",
                              server.grpc_target, "--json"], capture_output=True, text=True,
                             timeout=60)
    if listing.returncode != 0:
        return {}
    models = [json.loads(line) for line in listing.stdout.splitlines() if line.strip()]
    return {m["name"]: m for m in models}


def test_repository_serves_models_and_reports_config_errors(start_server, tmp_path):
    repo = tmp_path / "repo"
    add_model(repo, "tiny", 'architecture: "deit_tiny_patch16_224" allow_random_weights: true '
                            'batching { max_batch_size: 4 max_queue_delay_us: 500 }')
    add_model(repo, "broken", 'architecture: "deit_tiny_patch16_224"\nmax_batch: 4')
    # A ViT's position embedding fixes its input: another size is refused as the config is read.
    add_model(repo, "wrong_size", 'architecture: "deit_tiny_patch16_224" '
                                  'allow_random_weights: true input { size: 1024 }')

    server = start_server(f"--model-repository={repo}", wait=False)
    # Not every configured model loads, so /v2/health/ready stays 503: poll the catalogue.
    deadline = time.monotonic() + 120
    models = {}
    while time.monotonic() < deadline and server.proc.poll() is None:
        models = _models(server)
        if models.get("tiny", {}).get("ready"):
            break
        time.sleep(0.3)
    assert models.get("tiny", {}).get("ready"), server.log()
    # The broken model must not stop the good one from serving; it is listed as failed.
    assert "broken" in models and not models["broken"]["ready"], models
    assert server.http_get("/v2/health/ready")[0] == 503
    log = server.log()
    assert "broken" in log and "config.pbtxt:2" in log and "max_batch" in log, log
    assert "wrong_size" in models and not models["wrong_size"]["ready"], models
    _, index = http_post(f"http://{server.rest_url}/v2/repository/index", b"{}",
                         "application/json", timeout=30)
    reasons = {entry["name"]: entry.get("reason", "") for entry in json.loads(index)}
    assert "'input.size' is 1024" in reasons["wrong_size"], reasons
    assert "takes only 224 px images" in reasons["wrong_size"], reasons
    result = subprocess.run([str(binary("vitserve-client")), "classify", "--server",
                             server.grpc_target, "--model", "tiny", str(sample_images()[0])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_number_or_boolean_flag_reads_its_environment_variable():
    """README: every flag can also be given as VITSERVE_<NAME> (how the container and the
    Kubernetes manifests set them). A value that no number or boolean parses must make the
    server name the variable and exit; string flags accept any value, so the flags checked are
    those whose default is a number or a boolean (a flag missing from main.cc's list of
    variables would start normally instead)."""
    helpfull = subprocess.run([str(binary("vitserve")), "--helpfull"], capture_output=True,
                              text=True, timeout=60).stdout
    section = helpfull.split("server/main.cc:")[1].split("Flags from")[0]
    defaults = dict(re.findall(r"--(\w+) \(.*?\); default: ([^;]*);", section, re.S))
    checked = [name for name, default in defaults.items()
               if re.fullmatch(r"-?\d+(\.\d+)?|true|false", default)]
    assert len(checked) >= 15 and "executor_idle_spin_us" in checked, defaults
    for name in checked:
        variable = f"VITSERVE_{name.upper()}"
        result = subprocess.run([str(binary("vitserve")), "--list-models"], capture_output=True,
                                text=True, timeout=60,
                                env=dict(os.environ, **{variable: "not-a-value"}))
        assert result.returncode != 0 and variable in result.stderr, (name, result.stderr)


def test_the_server_allocates_with_tcmalloc(server):
    """The vitserve binary links tcmalloc ahead of glibc (cmake/VitserveDependencies.cmake), so
    its malloc is the one every allocation of the running server finds."""
    needed = [line.split("[")[1].rstrip("]")
              for line in subprocess.run(["readelf", "-d", str(binary("vitserve"))],
                                         capture_output=True, text=True, check=True).stdout
              .splitlines() if "(NEEDED)" in line]
    assert "libtcmalloc_minimal.so.4" in needed, needed
    assert needed.index("libtcmalloc_minimal.so.4") < needed.index("libc.so.6"), needed
    maps = pathlib.Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "libtcmalloc_minimal.so.4" in maps


def _inflight_requests(server, model):
    """vitserve_inflight_requests of `model` from /metrics (None while /metrics is down)."""
    try:
        status, text = server.http_get("/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "vitserve_inflight_requests":
            return sum(s.value for s in family.samples if s.labels.get("model") == model)
    return 0


def test_sigterm_drains_accepted_requests_then_exits_zero(start_server):
    # vit_base on two CPU cores takes a good part of a second per image, so four requests of
    # four images each (--batch 4: one request per client; eight batches of two) are still
    # computing or queued when SIGTERM arrives.
    model = "vit_base_patch16_224"
    server = start_server(f"--model={model}", "--max-batch-size=2")
    image = str(sample_images()[0])
    results = []
    lock = threading.Lock()

    def classify():
        result = subprocess.run(
            [str(binary("vitserve-client")), "classify", "--server", server.grpc_target,
             "--model", model, "--batch", "4", "--json", image, image, image, image],
            capture_output=True, text=True, timeout=300)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=classify) for _ in range(4)]
    for t in threads:
        t.start()
    # SIGTERM only once the server has accepted all four (counted in flight, none finished).
    deadline = time.monotonic() + 120
    while _inflight_requests(server, model) != 4:
        assert time.monotonic() < deadline, f"requests never all in flight:\n{server.log()}"
        assert not results, [r.stderr for r in results]  # One finished before the others began.
        time.sleep(0.02)
    code = server.stop(timeout_s=240)
    for t in threads:
        t.join()
    assert code == 0, server.log()
    # Every request the server accepted before SIGTERM completes: none is cut off.
    assert len(results) == 4
    for r in results:
        assert r.returncode == 0, (r.stderr, server.log())
        assert len(r.stdout.strip().splitlines()) == 4, r.stdout  # One JSON line per image.


def test_a_shutdown_held_past_the_grace_ends_with_status_1(start_server, tmp_path):
    """A model load cannot be interrupted; past the grace + 10 s the process exits anyway
    (status 1, and the log says why) instead of waiting for it."""
    repo = tmp_path / "repo"
    add_model(repo, "m", SMALL_CLASSIFIER)
    server = start_server(f"--model-repository={repo}", "--shutdown-grace-seconds=1")
    # vit_base warms up at batch 64 on two instances: far longer than 11 s on two CPU cores.
    add_model(repo, "slow", 'architecture: "vit_base_patch16_224" num_classes: 10 '
                            'allow_random_weights: true batching { max_batch_size: 64 }')
    load = subprocess.Popen(["curl", "-s", "-X", "POST",
                             f"http://{server.rest_url}/v2/repository/models/slow/load"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _models(server).get("slow", {}).get("ready", True):  # Absent, or loaded already.
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        started = time.monotonic()
        code = server.stop(timeout_s=120)
        took = time.monotonic() - started
    finally:
        load.kill()
    assert code == 1, server.log()
    assert 10 <= took < 30, took
    assert "the shutdown did not finish within --shutdown-grace-seconds (1s) + 10s" in \
        server.log()


def test_bad_flags_exit_nonzero_with_message():
    result = subprocess.run([str(binary("vitserve")), "--model=shvit_s1",
                             "--model-repository=/nonexistent"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "model-repository" in (result.stdout + result.stderr)
    result = subprocess.run([str(binary("vitserve")), "--model=not_a_model", "--grpc-port=0",
                             "--http-port=0"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "not_a_model" in (result.stdout + result.stderr)
    result = subprocess.run([str(binary("vitserve")), "--model=shvit_s1", "--grpc-port=0",
                             "--http-port=-2"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "http port -2 is outside -1..65535" in (result.stdout + result.stderr)
    # CUDA graph sizes: a list of numbers >= 1, a usage error otherwise.
    for sizes, message in [("16,x", "got 'x'"), ("0", "got '0'")]:
        result = subprocess.run([str(binary("vitserve")), "--model=shvit_s1", "--grpc-port=0",
                                 "--http-port=0", "--rest-port=0", "--max-batch-size=8",
                                 f"--cuda-graph-batch-sizes={sizes}"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (sizes, result.stderr)
        assert message in result.stderr, (sizes, result.stderr)


def _second_server(*args):
    return subprocess.run([str(binary("vitserve")), f"--model={E2E_MODEL}", "--host=127.0.0.1",
                           *args], capture_output=True, text=True, timeout=120)


def test_port_of_a_running_server_is_refused_at_start(server):
    # Without --reuse-port on both, a second process must not share a port and take part of the
    # first one's traffic (gRPC and cpp-httplib would both set SO_REUSEPORT by default).
    grpc = _second_server(f"--grpc-port={server.grpc_port}", "--http-port=0", "--rest-port=0")
    assert grpc.returncode == 1, grpc.stderr
    assert f"cannot listen for gRPC on 127.0.0.1:{server.grpc_port}" in grpc.stderr
    rest = _second_server("--grpc-port=0", "--http-port=0", f"--rest-port={server.rest_port}",
                          "--reuse-port")
    assert rest.returncode == 1, rest.stderr
    assert f"REST: cannot listen on 127.0.0.1:{server.rest_port}" in rest.stderr
    # The running server was not disturbed.
    assert server.http_get("/v2/health/ready")[0] == 200


def test_reuse_port_lets_two_servers_share_their_ports(start_server):
    first = start_server(f"--model={E2E_MODEL}", "--reuse-port")
    second = start_server(f"--model={E2E_MODEL}", "--reuse-port",
                          f"--grpc-port={first.grpc_port}", f"--rest-port={first.rest_port}")
    # Both listen: each one's own HTTP port says ready, and the shared ports answer.
    for proc in (first, second):
        assert proc.http_get("/v2/health/ready")[0] == 200, proc.log()
    health = subprocess.run([str(binary("vitserve-client")), f"--server={first.grpc_target}",
                             "health"], capture_output=True, text=True, timeout=60)
    assert health.returncode == 0, health.stdout + health.stderr
