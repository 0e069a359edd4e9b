"""deploy/: every environment variable the manifests set is one the configuration knows
(sidecar.shell.config.VARIABLES) or, for the transformation container, one pyterum reads; the
sidecar gets every required Iterum variable; probes and scraping use the HTTP endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.shell import config

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCKERFILE = DEPLOY.parent / "Dockerfile"
KNOWN = config.known_names()  # with the _FILE variants of the secrets
REQUIRED = {v for v in config.VARIABLES if v.default is None}
# what pyterum 0.6.6 reads (protocol §2.3); ENC_MSG_SIZE_LENGTH must never be set
PYTERUM = {"DATA_VOLUME_PATH", "TRANSFORMATION_STEP_INPUT", "TRANSFORMATION_STEP_OUTPUT",
           "ITERUM_CONFIG", "ITERUM_CONFIG_PATH"}


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def pod_specs() -> list[dict[str, Any]]:
    specs = []
    for doc in documents():
        spec = doc.get("spec", {})
        if doc["kind"] in ("Job", "Deployment", "StatefulSet"):
            specs.append(spec["template"]["spec"])
        elif doc["kind"] == "Pod":
            specs.append(spec)
    return specs


def containers() -> list[dict[str, Any]]:
    return [c for spec in pod_specs()
            for c in spec.get("initContainers", []) + spec["containers"]]


def env_names(container: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container.get("env", [])]


def test_there_is_a_step_with_two_containers_sharing_the_volume() -> None:
    [spec] = pod_specs()
    names = [c["name"] for c in spec["containers"]]
    assert names == ["sidecar", "transformation-step"]
    [volume] = [v for v in spec["volumes"] if "emptyDir" in v]
    for c in spec["containers"]:
        assert {"name": volume["name"], "mountPath": "/data-volume"} in c["volumeMounts"]


def test_every_sidecar_variable_is_one_the_configuration_knows() -> None:
    sidecars = [c for c in containers() if c["name"] == "sidecar"]
    assert sidecars
    for c in sidecars:
        names = env_names(c)
        assert not set(names) - KNOWN, f"unknown to sidecar/shell/config: {set(names) - KNOWN}"
        missing = {v.name for v in REQUIRED
                   if v.name not in names and not (v.file_variant and v.file_name in names)}
        assert not missing, f"missing: {missing}"
        for v in REQUIRED:  # a secret in the environment or in a file, not both
            assert not (v.name in names and v.file_name in names), v.name
        assert len(names) == len(set(names))


def test_secret_files_are_mounted_read_only_in_the_sidecar_only() -> None:
    [spec] = pod_specs()
    secrets = {v["name"] for v in spec["volumes"] if "secret" in v}
    assert secrets
    [sidecar] = [c for c in spec["containers"] if c["name"] == "sidecar"]
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    env = {e["name"]: e.get("value", "") for e in sidecar["env"]}
    for name in secrets:
        assert mounts[name]["readOnly"] is True
        for var, path in env.items():
            if var.endswith("_FILE"):
                assert path.startswith(mounts[name]["mountPath"] + "/"), var
    for c in spec["containers"]:
        if c["name"] != "sidecar":
            assert not secrets & {m["name"] for m in c.get("volumeMounts", [])}


def test_every_transformation_variable_is_one_pyterum_reads() -> None:
    others = [c for c in containers() if c["name"] != "sidecar"]
    assert others
    for c in others:
        assert set(env_names(c)) <= PYTERUM, set(env_names(c)) - PYTERUM


def test_probes_and_scraping_use_the_sidecar_http_endpoint() -> None:
    [sidecar] = [c for c in containers() if c["name"] == "sidecar"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    default = next(v.default for v in config.VARIABLES if v.name == "SIDECAR_HTTP_PORT")
    port = int(env.get("SIDECAR_HTTP_PORT") or default)
    [declared] = sidecar["ports"]
    assert declared["containerPort"] == port
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    [job] = [d for d in documents() if d["kind"] == "Job"]
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_both_containers_share_a_uid_and_group() -> None:
    [spec] = pod_specs()
    ctx = spec["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == ctx["fsGroup"] == 10001
    assert f"USER {ctx['runAsUser']}:{ctx['runAsGroup']}" in DOCKERFILE.read_text()
    for c in spec["containers"]:
        assert "runAsUser" not in c.get("securityContext", {})  # the pod's, for both
