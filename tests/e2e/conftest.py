"""The real API server fixtures of the operator tests, for the cluster DNS test (tests/e2e/test_dns.py)."""

from tests.support.apiserver import control_plane, kube, namespace

__all__ = ["control_plane", "kube", "namespace"]
