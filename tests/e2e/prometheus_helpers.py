"""A real Prometheus (Debian's) for the e2e tests, scraping vitserve with the deployed job."""
import json
import pathlib
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import ROOT, free_port

DEPLOY = ROOT / "deploy"
NAMESPACE = "e2e"


def prometheus_binary(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: scripts/setup.sh installs Debian's `prometheus`")
    return path


class Prometheus:
    def __init__(self, config_path, data_dir, log_path):
        self.port = free_port()
        self._log = open(log_path, "w")
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [prometheus_binary("prometheus"), f"--config.file={config_path}",
             f"--storage.tsdb.path={data_dir}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT)

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def wait_until(self, what, condition, timeout_s=60):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(pathlib.Path(self.log_path).read_text())
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{what} after {timeout_s}s:\n"
                           + pathlib.Path(self.log_path).read_text()[-3000:])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


def scrape_config(servers, pods):
    """The deployed scrape job, with static targets in place of Kubernetes discovery."""
    job = yaml.safe_load((DEPLOY / "prometheus" / "scrape-config.yaml").read_text())
    [job] = job["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    job.pop("kubernetes_sd_configs")
    job.pop("relabel_configs")
    job["scrape_interval"] = "1s"
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [
        {"targets": [f"127.0.0.1:{server.http_port}"],
         "labels": {"namespace": NAMESPACE, "pod": pod}}
        for server, pod in zip(servers, pods)]
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yaml")],
        "scrape_configs": [job],
    }




def expand_adapter_query(rule, label_matchers, group_by):
    """A prometheus-adapter rule's metricsQuery, with its templates filled in as the adapter
    does: the series name from seriesQuery, the label matchers and the grouping labels."""
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
    return (rule["metricsQuery"].replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", label_matchers)
            .replace("<<.GroupBy>>", group_by))


def adapter_rules():
    return yaml.safe_load((DEPLOY / "prometheus" / "adapter-rules.yaml").read_text())["rules"]


def start_prometheus(servers, pods, tmp_path):
    """Prometheus scraping `servers` (labelled with `pods`) every second; returns it once every
    target is up."""
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(servers, pods)))
    check = subprocess.run([prometheus_binary("promtool"), "check", "config", str(config)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    prometheus = Prometheus(config, tmp_path / "tsdb", tmp_path / "prometheus.log")
    prometheus.wait_until(
        "every target up",
        lambda: sorted(t["labels"]["pod"] for t in prometheus.api("targets")["activeTargets"]
                       if t["health"] == "up") == sorted(pods))
    return prometheus
