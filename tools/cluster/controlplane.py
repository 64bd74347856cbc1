"""A real Kubernetes control plane on loopback: etcd + kube-apiserver (+ kube-controller-manager).

The binaries come from ``scripts/kube/build.sh`` (built from Debian's ``kubernetes`` source package and
cached in ``~/.cache/obflow/kubernetes/bin``). There is no scheduler or kubelet, so Pods stay Pending;
everything else is the real thing: schema validation, the status subresource, RBAC, Events, owner
references and the controller-manager's garbage collector and Deployment → ReplicaSet controllers.

    python -m tools.cluster.controlplane [DIR]   # start one and print its kubeconfig; Ctrl-C stops it
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from obflow.net import free_port
from tools.cluster.daemons import Daemons

BIN_DIR = Path(os.environ.get("OBFLOW_KUBE_CACHE", Path.home() / ".cache/obflow/kubernetes")) / "bin"
SERVICE_RANGE = "10.96.0.0/24"
ADMIN_TOKEN_USER = "obflow-admin"
BIND_ATTEMPTS = 3


def missing_prerequisites() -> list[str]:
    """What must be installed or built first, each with the command that does it."""
    missing = [
        f"{name} (scripts/kube/build.sh)"
        for name in ("kube-apiserver", "kube-controller-manager")
        if not (BIN_DIR / name).is_file()
    ]
    if not shutil.which("etcd"):
        missing.append("etcd (apt-get install etcd-server)")
    if not shutil.which("openssl"):
        missing.append("openssl (apt-get install openssl)")
    return missing


class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`kubeconfig` is an admin kubeconfig."""

    def __init__(
        self,
        workdir: Path,
        controller_manager: bool = True,
        address: str = "127.0.0.1",
        port: int = 0,
        in_cluster_clients: bool = False,
    ) -> None:
        self.workdir = workdir
        # pods that call the API: service-account tokens come with the CA (and every namespace gets
        # the kube-root-ca.crt ConfigMap)
        self.in_cluster_clients = in_cluster_clients
        self.with_controller_manager = controller_manager
        self.address = address
        self.fixed_port = port  # 0: a free port, picked by each start attempt
        self.daemons = Daemons(workdir)
        self.token = os.urandom(16).hex()
        self.port = port
        self.url = ""
        self.kubeconfig = workdir / "kubeconfig"

    def start(self, timeout: float = 60) -> ControlPlane:
        """Start every process and wait for the API server; on any failure stop what did start."""
        problems = missing_prerequisites()
        if problems:
            raise RuntimeError("cannot start the control plane; missing: " + ", ".join(problems))
        for attempt in range(1, BIND_ATTEMPTS + 1):
            try:
                self._start(timeout)
                return self
            except RuntimeError as exc:
                self.stop()
                # a port picked free was taken before the process bound it: pick others
                if "address already in use" not in str(exc) or attempt == BIND_ATTEMPTS:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> None:
        self.port = self.fixed_port or free_port()
        self.url = f"https://{self.address}:{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_credentials()
        etcd_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                "etcd",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                str(BIN_DIR / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.port}",
                "--insecure-port=0",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={self.workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--allow-privileged=true",
                # logs, exec and port-forward reach a kubelet at its node's address, not its name
                "--kubelet-preferred-address-types=InternalIP,Hostname",
            ],
        )
        self._wait_ready(timeout)
        self._write_kubeconfig()
        if self.with_controller_manager:
            self._spawn(
                "kube-controller-manager",
                [
                    str(BIN_DIR / "kube-controller-manager"),
                    f"--kubeconfig={self.kubeconfig}",
                    "--leader-elect=false",
                    "--port=0",
                    "--secure-port=0",
                    f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                    *([f"--root-ca-file={self.ca_file}"] if self.in_cluster_clients else []),
                    "--use-service-account-credentials=false",
                    f"--service-cluster-ip-range={SERVICE_RANGE}",
                ],
            )

    def _write_credentials(self) -> None:
        (self.workdir / "tokens.csv").write_text(f'{self.token},{ADMIN_TOKEN_USER},1,"system:masters"\n')
        subprocess.run(
            ["openssl", "genrsa", "-out", str(self.workdir / "sa.key"), "2048"], check=True, capture_output=True
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(self.workdir / "sa.key"), "-pubout", "-out", str(self.workdir / "sa.pub")],
            check=True,
            capture_output=True,
        )

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "obflow-test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": ADMIN_TOKEN_USER, "user": {"token": self.token}}],
            "contexts": [{"name": "obflow-test", "context": {"cluster": "obflow-test", "user": ADMIN_TOKEN_USER}}],
            "current-context": "obflow-test",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    @property
    def ca_file(self) -> Path:
        """The apiserver's self-made certificate, which holds its CA too."""
        return self.workdir / "certs" / "apiserver.crt"

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.daemons.spawn(name, argv)

    def _wait_ready(self, timeout: float) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.daemons.check_running()
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready within {timeout:.0f}s; see {self.workdir}/kube-apiserver.log")

    def stop(self) -> None:
        """Stop every process, also when another Python process started them."""
        self.daemons.stop(timeout=10)


def main() -> int:
    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="obflow-kube-"))
    plane = ControlPlane(workdir).start()
    print(f"kube-apiserver ready at {plane.url}\nexport KUBECONFIG={plane.kubeconfig}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
