"""The Kubernetes overlays render with `kubectl kustomize` and pass `kubernetes-validate --strict`.

kubectl is Debian 12's (package kubernetes-client, 1.20, kustomize v2.0.3), which scripts/setup.sh
unpacks into .tools/: it is the kubectl that a fresh Debian 12 machine can get. When the machine
also has a newer kubectl on PATH (kustomize v4 or v5, what a cluster operator runs), the overlays
must render to the same objects with it; a fresh Debian 12 has none, and that comparison is then
left out of the rendering test (not skipped as a test of its own: nothing else is left out).
"""
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu", "gpu")
DEBIAN_KUBECTL = ROOT / ".tools" / "kubernetes-client" / "usr" / "bin" / "kubectl"
VALIDATE = ROOT / ".venv" / "bin" / "kubernetes-validate"
# The oldest Kubernetes release still maintained by the big managed services, and two newer ones.
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0", "1.37.0")
KINDS = {"ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler",
         "PodDisruptionBudget", "PersistentVolumeClaim"}


def debian_kubectl():
    assert DEBIAN_KUBECTL.is_file(), f"{DEBIAN_KUBECTL} is missing: run scripts/setup.sh"
    return str(DEBIAN_KUBECTL)


def render(kubectl, overlay):
    result = subprocess.run([kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(rendered):
    """The rendered objects by (kind, name), in a form that two kustomize versions agree on: the
    generated ConfigMap's content hash (computed differently by each) and empty metadata maps
    dropped, lists of named items (containers, env, volumes, ports) sorted by name."""
    text = re.sub(r"vitserve-config-[a-z0-9]{10}\b", "vitserve-config-HASH", rendered)

    def normalise(value):
        if isinstance(value, dict):
            return {k: normalise(v) for k, v in value.items() if v != {} or k not in (
                "labels", "annotations")}
        if isinstance(value, list):
            items = [normalise(v) for v in value]
            if items and all(isinstance(v, dict) and "name" in v for v in items):
                items.sort(key=lambda v: v["name"])
            return items
        return value

    docs = [normalise(doc) for doc in yaml.safe_load_all(text) if doc]
    by_id = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    assert len(by_id) == len(docs), "two objects of the same kind and name"
    return by_id


def deployment(by_id):
    return by_id[("Deployment", "vitserve")]


def config_data(by_id):
    (data,) = [doc["data"] for (kind, _), doc in by_id.items() if kind == "ConfigMap"]
    return data


def newer_kubectl():
    """A kubectl on PATH other than Debian's 1.20, or None."""
    found = shutil.which("kubectl")
    if not found:
        return None
    version = subprocess.run([found, "version", "--client"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "KUBECONFIG": os.devnull})
    match = re.search(r"Kustomize Version: v(\d+)", version.stdout)
    return found if match and int(match.group(1)) >= 4 else None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_with_debian_kubectl_and_sets_its_variant(overlay):
    by_id = objects(render(debian_kubectl(), overlay))
    assert {kind for kind, _ in by_id} == KINDS
    pods = deployment(by_id)["spec"]["template"]
    container = next(c for c in pods["spec"]["containers"] if c["name"] == "vitserve")
    assert container["image"] == f"vitserve:{'cuda' if overlay == 'gpu' else 'cpu'}"
    # The variant label reaches the pods (Prometheus' scrape config copies it into `variant`) and
    # stays out of the selector, which a Deployment cannot change once created.
    assert pods["metadata"]["labels"]["app.kubernetes.io/variant"] == overlay
    selector = deployment(by_id)["spec"]["selector"]["matchLabels"]
    assert "app.kubernetes.io/variant" not in selector
    assert set(selector.items()) <= set(pods["metadata"]["labels"].items())
    # The pods read the generated ConfigMap under its hashed name.
    (config_name,) = [name for kind, name in by_id if kind == "ConfigMap"]
    env_from = [source["configMapRef"]["name"] for source in container.get("envFrom", [])
                if "configMapRef" in source]
    env_refs = [var["valueFrom"]["configMapKeyRef"]["name"] for var in container.get("env", [])
                if "configMapKeyRef" in var.get("valueFrom", {})]
    assert config_name in env_from + env_refs
    data = config_data(by_id)
    limits = container["resources"].get("limits", {})
    if overlay == "gpu":
        assert (data["VITSERVE_DEVICE"], data["VITSERVE_PRECISION"]) == ("cuda", "fp16")
        assert limits.get("nvidia.com/gpu") == "1"
        assert by_id[("HorizontalPodAutoscaler", "vitserve")]["spec"]["maxReplicas"] == 8
    else:
        assert (data["VITSERVE_DEVICE"], data["VITSERVE_PRECISION"]) == ("cpu", "fp32")
        assert "nvidia.com/gpu" not in limits
    # The base's setting that the overlays must keep.
    assert data["VITSERVE_SHUTDOWN_GRACE_SECONDS"] == "30"
    # What a cluster operator's kubectl makes of the same overlay (only where one is installed:
    # a fresh Debian 12 has none, and this part then has nothing to compare).
    kubectl = newer_kubectl()
    if kubectl is not None:
        assert objects(render(kubectl, overlay)) == by_id, f"{kubectl} renders other objects"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_passes_kubernetes_validate_strict(overlay, version, tmp_path):
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(render(debian_kubectl(), overlay))
    result = subprocess.run([str(VALIDATE), "--strict", "-k", version, str(manifest)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # One line per object, each passed: nothing was skipped for want of a schema.
    passed = re.findall(r"passed for resource (\S+)", result.stdout + result.stderr)
    assert len(passed) == len(objects(manifest.read_text())), result.stdout + result.stderr


def test_kubernetes_validate_strict_rejects_an_unknown_field(tmp_path):
    rendered = yaml.safe_load_all(render(debian_kubectl(), "cpu"))
    docs = [doc for doc in rendered if doc]
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of resources
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run([str(VALIDATE), "--strict", "-k", KUBERNETES_VERSIONS[0],
                             str(manifest)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "'resource' was unexpected" in result.stdout + result.stderr
