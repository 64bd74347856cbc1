"""Tooling that stands up what the tests run against and changes the host to do it (a Kubernetes control
plane, a whole single-node cluster); the tests use it, it is not a test."""
