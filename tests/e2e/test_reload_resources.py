"""A model unloaded and reloaded many times (the KServe repository API) must give back what each
load took: its executor threads, its files and its memory. A server that reloads models for
weeks otherwise grows until it is killed."""
import json
import os

from conftest import SMALL_CLASSIFIER, add_model, http_post, sample_images


def resources(pid):
    """(threads, open files, resident MiB) of process `pid`, from /proc."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    files = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return threads, files, rss_kib / 1024


def test_unload_and_load_cycles_return_threads_files_and_memory(start_server, tmp_path):
    repo = tmp_path / "repo"
    # A cycle takes a fraction of a second, and each load holds about 50 MB of weights (two
    # instances), so a leaked model is plain to see.
    add_model(repo, "m", SMALL_CLASSIFIER)
    server = start_server(f"--model-repository={repo}", "--device=cpu")
    pid = server.proc.pid
    base = f"http://{server.rest_url}/v2/repository/models/m"
    image = sample_images()[0].read_bytes()

    def cycle():
        assert http_post(f"{base}/unload")[0] == 200
        assert http_post(f"{base}/load")[0] == 200
        status, body = http_post(f"http://{server.rest_url}/v1/models/m:classify", image)
        assert status == 200 and json.loads(body)["results"][0]["classes"], body

    for _ in range(10):  # Allocator caches and gRPC's thread pool settle first.
        cycle()
    threads, files, rss = resources(pid)
    for _ in range(40):
        cycle()
    threads_after, files_after, rss_after = resources(pid)
    assert threads_after <= threads + 4, (threads, threads_after)
    assert files_after <= files + 4, (files, files_after)
    # 40 leaked loads would hold about 2 GB of weights.
    assert rss_after <= rss * 1.25 + 64, (rss, rss_after)
