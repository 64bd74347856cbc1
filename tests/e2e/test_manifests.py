"""The e2e suite's manifests, checked offline: valid Kubernetes objects, a DataPipeline the operator
accepts, and storage paths that line up from kind-config.yaml to the pods to this machine."""

from __future__ import annotations

import yaml

from obflow_operator.spec import runtime_config
from obflow_operator.validation import parse_spec
from tests.e2e.suite import MANIFESTS, NODE_DATA_ON_HOST
from tests.support.repo import REPO_ROOT


def test_backing_manifests_are_valid_kubernetes_objects() -> None:
    import kubernetes_validate

    documents = list(yaml.safe_load_all((MANIFESTS / "backing.yaml").read_text()))
    assert {d["kind"] for d in documents} == {"PersistentVolume", "PersistentVolumeClaim", "Deployment", "Service",
                                              "Secret"}  # fmt: skip
    for document in documents:
        kubernetes_validate.validate(document, "1.25.0", strict=True)


def test_the_sample_pipeline_is_accepted_and_its_files_land_where_the_suite_reads_them() -> None:
    manifest = yaml.safe_load((MANIFESTS / "pipeline.yaml").read_text())
    spec = parse_spec(manifest["spec"])
    config = runtime_config(manifest["metadata"]["name"], spec)
    backing = {d["kind"]: d for d in yaml.safe_load_all((MANIFESTS / "backing.yaml").read_text())}
    assert spec.storage.claim_name == backing["PersistentVolumeClaim"]["metadata"]["name"]
    node_path = backing["PersistentVolume"]["spec"]["hostPath"]["path"]
    kind = yaml.safe_load((REPO_ROOT / "kind-config.yaml").read_text())
    (mount,) = kind["nodes"][0]["extraMounts"]
    assert mount == {"hostPath": str(NODE_DATA_ON_HOST), "containerPath": node_path}
    # pods see the claim at storage.mountPath; the suite reads <host dir>/<name>/output
    assert config.output.path == f"{spec.storage.mount_path}/shop/output"
