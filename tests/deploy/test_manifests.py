"""The Kubernetes manifests in deploy/ (issue #8 item 3): schema-valid offline, and consistent with each other.

kubernetes-validate bundles the Kubernetes OpenAPI schemas, so this runs in CI without a cluster. Strict mode
rejects unknown fields (a misspelt ``readinesProbe`` would otherwise be silently ignored by the API server).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cds_service.config import Settings
from cds_service.serving import GRACEFUL_TIMEOUT_S
from tests.deploy.service_process import REPO

DEPLOY = REPO / "deploy"
MANIFEST_FILES = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
# 1.30: the oldest release with the preStop `sleep` action the Deployment uses; and the newest bundled.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
# Variables read by something other than cds_service.config: the serving options (cds_service.serving).
NON_CDS_VARIABLES = {"WEB_CONCURRENCY", "CDS_WORKER_THREADS", "CDS_REQUEST_READ_TIMEOUT_S"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every manifest object, keyed by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in MANIFEST_FILES:
        for doc in _documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def test_there_are_manifests() -> None:
    names = {p.name for p in MANIFEST_FILES}
    assert {"deployment.yaml", "service.yaml", "pdb.yaml", "configmap.yaml", "secret.yaml",
            "migration-job.yaml"} <= names


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_manifest_is_schema_valid(path: Path, version: str) -> None:
    for doc in _documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_long_lived_manifest_and_not_the_job() -> None:
    kustomization = _documents(DEPLOY / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    assert all((DEPLOY / name).is_file() for name in listed)
    assert listed == {p.name for p in MANIFEST_FILES} - {"migration-job.yaml"}


def test_deployment_runs_n_replicas_with_probes_and_graceful_shutdown(objects: dict[Any, Any]) -> None:
    deployment = objects[("Deployment", "calcinosis-cds")]
    assert deployment["spec"]["replicas"] >= 2
    pod = _pod_spec(deployment)
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container.get("args", ["serve"]) == ["serve"], "replicas serve; they never migrate"
    # The server's graceful shutdown (GRACEFUL_TIMEOUT_S) plus the preStop pause must fit in the grace period.
    assert pod["terminationGracePeriodSeconds"] >= (GRACEFUL_TIMEOUT_S
                                                    + container["lifecycle"]["preStop"]["sleep"]["seconds"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/calcinosis-cds"} <= mounts, "metrics dir and spool need writable volumes"


def test_service_and_pdb_select_the_deployment_pods(objects: dict[Any, Any]) -> None:
    pod_labels = objects[("Deployment", "calcinosis-cds")]["spec"]["template"]["metadata"]["labels"]
    service_selector = objects[("Service", "calcinosis-cds")]["spec"]["selector"]
    pdb_selector = objects[("PodDisruptionBudget", "calcinosis-cds")]["spec"]["selector"]["matchLabels"]
    for selector in (service_selector, pdb_selector):
        assert selector.items() <= pod_labels.items()
    pod = _pod_spec(objects[("Deployment", "calcinosis-cds")])
    container_ports = {p["name"] for p in pod["containers"][0]["ports"]}
    assert all(p["targetPort"] in container_ports for p in objects[("Service", "calcinosis-cds")]["spec"]["ports"])


def test_migration_job_runs_db_upgrade_with_the_same_configuration(objects: dict[Any, Any]) -> None:
    job = objects[("Job", "calcinosis-cds-db-upgrade")]
    (container,) = _pod_spec(job)["containers"]
    assert container["args"] == ["calcinosis-cds", "db", "upgrade"]
    deployment_container = _pod_spec(objects[("Deployment", "calcinosis-cds")])["containers"][0]
    assert container["envFrom"] == deployment_container["envFrom"]
    assert container["image"] == deployment_container["image"]


def test_every_referenced_configmap_and_secret_exists(objects: dict[Any, Any]) -> None:
    for obj in objects.values():
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        pod = _pod_spec(obj)
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source \
                    else ("Secret", source["secretRef"])
                assert (kind, ref["name"]) in objects, ref
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in objects


def test_configuration_keys_are_settings_the_service_reads(objects: dict[Any, Any]) -> None:
    """A misspelt variable would be silently ignored; every key must be a CDS_* setting or a known extra."""
    known = {f"CDS_{f.name.upper()}" for f in fields(Settings)} | NON_CDS_VARIABLES
    config = objects[("ConfigMap", "calcinosis-cds-config")]["data"]
    secret = objects[("Secret", "calcinosis-cds-secrets")]["stringData"]
    for key in [*config, *secret]:
        assert key in known, f"{key} is not read by the service"
    assert "CDS_DATABASE_URL" in secret
    assert "CDS_DATABASE_URL" not in config
    assert config.get("CDS_DEV", "0") in ("0", "false"), "never --dev in production"


def test_secret_holds_placeholders_only(objects: dict[Any, Any]) -> None:
    secret = objects[("Secret", "calcinosis-cds-secrets")]
    assert "data" not in secret, "base64 data hides what is committed; use stringData placeholders"
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, f"{key} must be a placeholder"


def test_trusted_issuers_file_is_mounted_where_the_config_points(objects: dict[Any, Any]) -> None:
    path = Path(objects[("ConfigMap", "calcinosis-cds-config")]["data"]["CDS_TRUSTED_ISSUERS_FILE"])
    deployment = objects[("Deployment", "calcinosis-cds")]
    mounts = {m["name"]: m["mountPath"] for m in _pod_spec(deployment)["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}
    (name,) = [n for n, mount in mounts.items() if Path(mount) == path.parent]
    issuers_map = objects[("ConfigMap", volumes[name]["configMap"]["name"])]
    assert path.name in issuers_map["data"]


def test_metrics_and_admin_paths_are_not_routed_from_outside(objects: dict[Any, Any]) -> None:
    paths = [p["path"] for obj in objects.values() if obj["kind"] == "Ingress"
             for rule in obj["spec"]["rules"] for p in rule["http"]["paths"]]
    assert "/cds-services" in paths
    assert not any(p in ("/", "/metrics", "/admin", "/readyz", "/healthz") for p in paths)


def test_serving_variables_in_the_config_map_are_valid(objects: dict[Any, Any]) -> None:
    """The ConfigMap's serving options parse (the server would refuse to start otherwise); no obsolete names."""
    from cds_service.serving import serving_options

    config = objects[("ConfigMap", "calcinosis-cds-config")]["data"]
    assert "GUNICORN_THREADS" not in config
    options = serving_options({k: v for k, v in config.items() if k in NON_CDS_VARIABLES})
    assert options.workers >= 1
    assert options.threads >= 1
