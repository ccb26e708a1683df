"""A real Prometheus (Debian's 2.42) scrapes two vitserve processes under load, with the
project's scrape job, alert rules and the queries of its dashboard and prometheus-adapter rules.

Kubernetes discovery cannot run here: the scrape job is deploy/prometheus/scrape-config.yaml's
with static targets in place of `kubernetes_sd_configs`, labelled with the `namespace` and `pod`
that its relabelling would give. Everything else (metrics path, rule files, queries) is the
deployed files' own.
"""
import json
import re
import subprocess

import yaml

from conftest import E2E_MODEL, ServerProcess, binary
from prometheus_helpers import (DEPLOY, NAMESPACE, adapter_rules, expand_adapter_query,
                                prometheus_binary, start_prometheus)

PODS = ("vitserve-0", "vitserve-1")
# Grafana's $__rate_interval: at least four scrape intervals (1 s here).
RATE_INTERVAL = "20s"
# Dashboard panels of metrics that only a model on a GPU exports.
GPU_ONLY_METRICS = ("vitserve_gpu_memory_used_bytes",)


def test_alert_rules_check_and_unit_tests_pass():
    rules = DEPLOY / "prometheus" / "alerts.yaml"
    check = subprocess.run([prometheus_binary("promtool"), "check", "rules", str(rules)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = DEPLOY / "prometheus" / "alerts_test.yaml"
    result = subprocess.run([prometheus_binary("promtool"), "test", "rules", str(tests)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert of the rule file has a test group.
    alerts = {rule["alert"] for group in yaml.safe_load(rules.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    tested = {case["alertname"] for test in yaml.safe_load(tests.read_text())["tests"]
              for case in test["alert_rule_test"]}
    assert alerts == tested


def test_dashboard_panels_have_unique_ids_do_not_overlap_and_use_the_datasource_variable():
    panels = json.loads((DEPLOY / "grafana" / "vitserve-dashboard.json").read_text())["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    cells = {}
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f'{panel["title"]} overlaps {cells[(x, y)]}'
                cells[(x, y)] = panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def dashboard_queries():
    dashboard = json.loads((DEPLOY / "grafana" / "vitserve-dashboard.json").read_text())
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard.get("panels", []))
    variables = {v["name"]: v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                 for v in dashboard["templating"]["list"] if v["type"] == "query"}
    return exprs, variables


def grafana_expand(expr):
    return (expr.replace("$__rate_interval", RATE_INTERVAL)
            .replace("$namespace", NAMESPACE).replace("$model", ".*"))


def adapter_queries():
    """metricsQuery of every adapter rule, expanded as prometheus-adapter does for the pods."""
    matchers = f'namespace="{NAMESPACE}",pod=~"{"|".join(PODS)}"'
    return [(rule["name"]["as"], expand_adapter_query(rule, matchers, "pod"))
            for rule in adapter_rules()]


def test_prometheus_scrapes_two_servers_and_every_query_has_data(tmp_path):
    servers = [ServerProcess([f"--model={E2E_MODEL}", "--max-batch-size=8"],
                             tmp_path / f"vitserve{i}.log") for i in range(2)]
    prometheus = None
    load = []
    try:
        for server in servers:
            server.wait_ready()
        prometheus = start_prometheus(servers, PODS, tmp_path)

        # Load on both, long enough for several scrapes and rule evaluations.
        for server in servers:
            load.append(subprocess.Popen(
                [str(binary("vitserve-client")), "bench", f"--server={server.grpc_target}",
                 f"--model={E2E_MODEL}", "--concurrency=4", "--duration=8", "--input=raw"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for proc in load:
            assert proc.wait(timeout=120) == 0
        prometheus.wait_until(
            "recording rules with data",
            lambda: prometheus.query("vitserve:requests:rate5m")
            and prometheus.query("vitserve:request_duration_seconds:p99_5m"))

        empty = []
        exprs, variables = dashboard_queries()
        assert len(exprs) >= 20, exprs
        for expr in exprs:
            if any(metric in expr for metric in GPU_ONLY_METRICS):
                continue  # CPU servers export no GPU memory: checked to be that panel only.
            if not prometheus.query(grafana_expand(expr)):
                empty.append(("dashboard", expr))
        assert sum(any(m in e for m in GPU_ONLY_METRICS) for e in exprs) == 1
        for name, query in variables.items():
            # label_values(metric{matchers}, label) -> the label's values among the series.
            metric, label = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query).groups()
            values = prometheus.api(f"label/{label}/values", **{"match[]": grafana_expand(metric)})
            if not values:
                empty.append(("dashboard variable", name))
        for name, query in adapter_queries():
            result = prometheus.query(query)
            pods = sorted(sample["metric"].get("pod") for sample in result)
            if pods != list(PODS):
                empty.append(("adapter " + name, f"{query} -> pods {pods}"))
        for group in prometheus.api("rules")["groups"]:
            for rule in group["rules"]:
                assert rule["health"] == "ok", rule
                if rule["type"] == "recording" and not prometheus.query(rule["name"]):
                    empty.append(("recording rule", rule["name"]))
        assert not empty, "queries without data:\n" + "\n".join(map(str, empty))

        # Both pods' requests are in the fleet-wide rate, labelled for the adapter.
        per_pod = prometheus.query(f'sum by (pod) (vitserve_requests_total{{namespace="{NAMESPACE}"}})')
        assert sorted(s["metric"]["pod"] for s in per_pod) == list(PODS)
        assert all(float(s["value"][1]) > 0 for s in per_pod)
    finally:
        for proc in load:
            if proc.poll() is None:
                proc.kill()
        if prometheus is not None:
            prometheus.stop()
        for server in servers:
            server.stop()
