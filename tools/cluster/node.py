"""A whole single-node Kubernetes on this machine, built from Debian's ``kubernetes`` source package.

etcd + kube-apiserver + kube-controller-manager (``tools.cluster.controlplane``), kube-scheduler,
kube-proxy (iptables mode) and kubelet with dockershim on a private dockerd attached to a bridge made
here (``obflow0``, 10.244.0.1/24: node address and pod subnet; Services in 10.96.0.0/24), a DNS
responder for Service and Pod names (``tools.cluster.dns``), a pause image compiled from
Kubernetes' ``pause.c``, and RBAC with tokens (an admin token; service-account tokens from the
controller-manager). The node is this machine: pod and Service addresses are routable from here.

:func:`up` is idempotent (a running cluster is reused) and snapshots the host first; :func:`down`
stops everything and restores what the cluster changed — processes, mounts, the bridge, iptables,
sysctls, cgroups — and reports whatever it could not restore. ``python -m tools.cluster up|down``
(``make cluster-up`` / ``make cluster-down``) are the command-line faces of the two.

Binaries: ``scripts/kube/build.sh`` (cached in ~/.cache/obflow/kubernetes). Images: the private
dockerd keeps its data root in ~/.cache/obflow/cluster/docker, so images loaded once stay loaded.
Everything else of a running cluster lives in /var/lib/obflow-cluster and /run/obflow-cluster and is
removed by :func:`down`. docs/e2e.md says what this machine needs of each piece (the runc wrapper,
the proxy and masquerade settings, the sysctls kubelet changes) and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.cluster.controlplane import BIN_DIR, ControlPlane
from tools.cluster.daemons import Daemons

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
IMAGES = [
    "obflow/flink:0.1.0",
    "obflow/capture:0.1.0",
    "obflow/operator:0.1.0",
    "obflow/seekdb:0.1.0",
    "obflow/datahub-emulator:0.1.0",
]
"""obflow's images, loaded into the node for the e2e suite."""
CACHE = Path(os.environ.get("OBFLOW_KUBE_CACHE", Path.home() / ".cache/obflow/kubernetes")).parent / "cluster"
STATE = Path("/var/lib/obflow-cluster")
RUN = Path("/run/obflow-cluster")
DOCKER_HOST = f"unix://{RUN}/docker.sock"
BRIDGE = "obflow0"
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
API_PORT = 6443
NODE_NAME = "obflow-node"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "obflow-cluster/pause:3.2"
PAUSE_SOURCE = BIN_DIR.parent / "src" / "pause.c"
NODE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
DATA_DIR = STATE / "data"  # the pipelines' shared storage (a hostPath volume), also seen from here
KUBECONFIG = STATE / "control-plane" / "kubeconfig"

# sysctls that change by themselves: never "restored"
VOLATILE_SYSCTLS = (
    "kernel.ns_last_pid",
    "kernel.random.",
    "fs.aio-nr",
    "fs.dentry-state",
    "fs.file-nr",
    "fs.inode-",
    "fs.quota.",
    "net.netfilter.nf_conntrack_count",
)
# kubelet sets these once, at start, for its node's sake; the host keeps its own at once
HOST_OWNED_SYSCTLS = ("kernel.panic", "kernel.panic_on_oops")


def missing_prerequisites() -> list[str]:
    """What this machine lacks for the cluster, each with the command that provides it."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the cluster makes a bridge, iptables rules and mounts)")
    missing += [f"{name} (scripts/kube/build.sh {name})" for name in NODE_BINARIES if not (BIN_DIR / name).is_file()]
    if not PAUSE_SOURCE.is_file():
        missing.append(f"{PAUSE_SOURCE} (scripts/kube/build.sh keeps it from the sources)")
    tools = {"etcd": "etcd-server", "dockerd": "docker.io", "docker": "docker.io", "runc": "runc", "ip": "iproute2",
             "iptables-save": "iptables", "nft": "nftables", "gcc": "gcc libc6-dev", "kubectl": "kubernetes-client",
             "openssl": "openssl"}  # fmt: skip
    missing += [f"{tool} (apt-get install {package})" for tool, package in tools.items() if not shutil.which(tool)]
    try:
        import dnslib  # noqa: F401
    except ImportError:
        missing.append("dnslib (pip install dnslib)")
    if not Path("/sys/fs/cgroup/memory").is_dir():
        missing.append("cgroup v1 memory controller at /sys/fs/cgroup/memory (kubelet 1.20 with dockershim)")
    return missing


def run(*argv: str, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env={**os.environ, **(env or {})}
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def docker(*args: str, check: bool = True, timeout: float = 300) -> str:
    return run("docker", "-H", DOCKER_HOST, *args, check=check, timeout=timeout)


def kubectl(*args: str, check: bool = True) -> str:
    return run("kubectl", "--kubeconfig", str(KUBECONFIG), "--request-timeout=10s", *args, check=check, timeout=60)


# --- the host's state: taken before the cluster starts, restored after it stops ---------------------


@dataclass
class HostState:
    iptables: dict[str, str] = field(default_factory=dict)  # iptables-save / ip6tables-save output
    sysctls: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)

    @classmethod
    def read(cls) -> HostState:
        return cls(
            iptables={tool: run(tool) for tool in ("iptables-save", "ip6tables-save")},
            sysctls=read_sysctls(),
            mounts=sorted(read_mounts()),
            links=sorted(read_links()),
            cgroups=sorted(read_cgroups()),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=1))

    @classmethod
    def load(cls, path: Path) -> HostState:
        return cls(**json.loads(path.read_text()))


def read_sysctls() -> dict[str, str]:
    values = {}
    for line in run("sysctl", "-a", check=False).splitlines():
        key, sep, value = line.partition(" = ")
        if sep and not key.startswith(VOLATILE_SYSCTLS):
            values[key] = value
    return values


def write_sysctls(values: dict[str, str]) -> list[str]:
    problems = []
    for key, value in values.items():
        try:
            Path("/proc/sys", key.replace(".", "/")).write_text(value.replace("\t", " "))
        except OSError as exc:
            problems.append(f"sysctl {key}: could not write {value!r}: {exc}")
    return problems


def read_mounts() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def read_links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in run("ip", "-o", "link").splitlines()}


def read_cgroups() -> set[str]:
    root = Path("/sys/fs/cgroup")
    return {str(path) for controller in root.iterdir() if controller.is_dir() for path in controller.glob("*/")}


def differences(before: HostState, after: HostState) -> list[str]:
    """What differs between two snapshots of the host, in words."""
    found = []
    for tool in before.iptables:
        if _rules(before.iptables[tool]) != _rules(after.iptables[tool]):
            found.append(f"{tool} differs")
    for key in sorted(before.sysctls.keys() & after.sysctls.keys()):
        if before.sysctls[key] != after.sysctls[key]:
            found.append(f"sysctl {key} = {after.sysctls[key]} (was {before.sysctls[key]})")
    for name in ("mounts", "links", "cgroups"):
        added = sorted(set(getattr(after, name)) - set(getattr(before, name)))
        if added:
            found.append(f"{name} added: {', '.join(added[:10])}{' ...' if len(added) > 10 else ''}")
    return found


def _rules(saved: str) -> list[str]:
    """iptables-save output without its comments and packet counters."""
    return [line.split(" [")[0] for line in saved.splitlines() if line and not line.startswith("#")]


def leftover_processes() -> list[str]:
    """Processes that belong to a cluster (their command line names its directories)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if str(STATE) in command or str(RUN) in command:
                    found.append(f"{proc.name}: {command[:160]}")
    return found


# --- up --------------------------------------------------------------------------------------------


def is_up() -> bool:
    if not KUBECONFIG.exists():
        return False
    ready = kubectl("get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                    check=False)  # fmt: skip
    return ready.strip() == "True"


def up(timeout: float = 180) -> Path:
    """Start the cluster (or find it running); returns the admin kubeconfig."""
    if is_up():
        return KUBECONFIG
    missing = missing_prerequisites()
    if missing:
        raise RuntimeError("the cluster cannot start here; missing: " + "; ".join(missing))
    if STATE.exists() or RUN.exists():
        down()  # the remains of a cluster that did not come up or was not taken down
    STATE.mkdir(parents=True)
    RUN.mkdir(parents=True)
    HostState.read().save(STATE / "host-state.json")
    try:
        _start(timeout)
    except BaseException:
        problems = down()
        if problems:
            print("cluster: after a failed start, " + "; ".join(problems), file=sys.stderr)
        raise
    return KUBECONFIG


def _start(timeout: float) -> None:
    daemons = Daemons(STATE / "daemons")
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")  # pod → Service → pod is routed here
    _start_dockerd(daemons)
    _ensure_pause_image()
    plane = ControlPlane(STATE / "control-plane", address=NODE_IP, port=API_PORT, in_cluster_clients=True).start()
    kubeconfig = str(plane.kubeconfig)
    DATA_DIR.mkdir(parents=True)
    DATA_DIR.chmod(0o777)  # a hostPath volume ignores fsGroup; the pods run as non-root users
    dns = [sys.executable, "-m", "tools.cluster.dns", "--kubeconfig", kubeconfig, "--address", NODE_IP,
           "--domain", CLUSTER_DOMAIN]  # fmt: skip
    daemons.spawn("dns", dns, env={"PYTHONPATH": str(REPO_ROOT)})
    daemons.spawn("kube-scheduler", [str(BIN_DIR / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
                                     "--leader-elect=false", "--port=0", "--secure-port=0"])  # fmt: skip
    daemons.spawn("kube-proxy", [
        str(BIN_DIR / "kube-proxy"), f"--kubeconfig={kubeconfig}", "--proxy-mode=iptables",
        f"--hostname-override={NODE_NAME}", f"--bind-address={NODE_IP}", f"--cluster-cidr={POD_CIDR}",
        # service traffic from a pod to a pod on the same bridge must come back through this host
        "--masquerade-all",
        # leave the host's conntrack settings and this process's OOM score alone
        "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0", "--oom-score-adj=0",
        "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
    ])  # fmt: skip
    kubelet_root = STATE / "kubelet"
    daemons.spawn("kubelet", [
        str(BIN_DIR / "kubelet"), f"--kubeconfig={kubeconfig}", "--container-runtime=docker",
        f"--docker-endpoint={DOCKER_HOST}", f"--pod-infra-container-image={PAUSE_IMAGE}",
        "--cgroup-driver=cgroupfs", "--cgroups-per-qos=false", "--enforce-node-allocatable=",
        f"--root-dir={kubelet_root}", f"--cert-dir={kubelet_root / 'pki'}",
        f"--volume-plugin-dir={kubelet_root / 'volume-plugins'}",
        f"--node-ip={NODE_IP}", f"--hostname-override={NODE_NAME}",
        f"--cluster-dns={NODE_IP}", f"--cluster-domain={CLUSTER_DOMAIN}",
        "--fail-swap-on=false", "--read-only-port=0", "--oom-score-adj=0",
        # images are loaded, never pulled: never collect them, never evict for a busy disk
        "--image-gc-high-threshold=100", "--image-gc-low-threshold=99",
        "--eviction-hard=memory.available<100Mi", "--serialize-image-pulls=false",
    ])  # fmt: skip
    deadline = time.monotonic() + timeout
    while not is_up():
        daemons.check_running()
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {NODE_NAME} not Ready within {timeout:.0f}s; see {daemons.directory}/kubelet.log")
        time.sleep(1)
    while "default" not in kubectl("get", "serviceaccounts", "-n", "default", "-o", "name", check=False):
        daemons.check_running()
        if time.monotonic() > deadline:
            raise TimeoutError("the controller-manager made no default ServiceAccount")
        time.sleep(0.5)
    before = HostState.load(STATE / "host-state.json").sysctls
    write_sysctls({key: before[key] for key in HOST_OWNED_SYSCTLS if key in before})


def _start_dockerd(daemons: Daemons) -> None:
    (CACHE / "docker").mkdir(parents=True, exist_ok=True)
    daemons.spawn("dockerd", [
        "dockerd", "--data-root", str(CACHE / "docker"), "--exec-root", str(RUN / "docker"), "-H", DOCKER_HOST,
        "--pidfile", str(RUN / "dockerd.pid"), f"--bridge={BRIDGE}", "--iptables=false", "--ip-forward=false",
        "--ip-masq=false", "--userland-proxy=false",  # hairpin: a pod reaches itself through its Service
        "--exec-opt", "native.cgroupdriver=cgroupfs",
        "--add-runtime", f"obflow-runc={HERE / 'runc-wrapper'}", "--default-runtime", "obflow-runc",
    ])  # fmt: skip
    deadline = time.monotonic() + 60
    while docker("version", "--format", "{{.Server.Version}}", check=False, timeout=10).strip() == "":
        daemons.check_running()
        if time.monotonic() > deadline:
            raise TimeoutError(f"dockerd did not answer within 60s; see {daemons.directory}/dockerd.log")
        time.sleep(0.5)


def _ensure_pause_image() -> None:
    if docker("image", "inspect", "-f", "{{.Id}}", PAUSE_IMAGE, check=False, timeout=30).strip():
        return
    with tempfile.TemporaryDirectory() as work:
        run("gcc", "-Os", "-static", "-o", f"{work}/pause", str(PAUSE_SOURCE))
        run("tar", "-C", work, "-cf", f"{work}/pause.tar", "pause")
        docker("import", "--change", 'ENTRYPOINT ["/pause"]', f"{work}/pause.tar", PAUSE_IMAGE)


# --- down ------------------------------------------------------------------------------------------


def down() -> list[str]:
    """Stop the cluster and restore the host; returns what still differs from before it started."""
    problems: list[str] = []
    with contextlib.suppress(RuntimeError):
        # kubelet first (it would restart the containers), then the pods' containers
        Daemons(STATE / "daemons").stop(only="kubelet")
    if (RUN / "docker.sock").exists():
        containers = docker("ps", "-aq", check=False, timeout=30).split()
        if containers:
            docker("rm", "-f", *containers, check=False, timeout=180)
    for directory in (STATE / "daemons", STATE / "control-plane"):
        try:
            Daemons(directory).stop()
        except RuntimeError as exc:
            problems.append(str(exc))
    _kill_leftovers()
    _unmount_under(STATE, RUN, CACHE)
    if BRIDGE in read_links():
        run("ip", "link", "delete", BRIDGE, check=False)
    state_file = STATE / "host-state.json"
    if state_file.exists():
        before = HostState.load(state_file)
        problems += _restore(before)
        problems += differences(before, HostState.read())
    problems += leftover_processes()
    shutil.rmtree(STATE, ignore_errors=True)
    shutil.rmtree(RUN, ignore_errors=True)
    return problems


def _kill_leftovers() -> None:
    """containerd shims of containers that outlived their dockerd."""
    for line in leftover_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":")[0]), 9)
    time.sleep(0.5)


def _unmount_under(*roots: Path) -> None:
    for mount in sorted(read_mounts(), key=len, reverse=True):
        if any(mount == str(root) or mount.startswith(f"{root}/") for root in roots):
            run("umount", "-l", mount, check=False)


def _restore(before: HostState) -> list[str]:
    problems = []
    # iptables: drop everything the cluster made (kube-proxy's and kubelet's chains, tables that did
    # not exist), then load what was there
    run("nft", "flush", "ruleset", check=False)
    for tool, saved in before.iptables.items():
        if _rules(saved):
            restore = tool.replace("-save", "-restore")
            result = subprocess.run([restore], input=saved, text=True, capture_output=True, check=False)
            if result.returncode != 0:
                problems.append(f"{restore}: {result.stderr.strip()}")
    now = read_sysctls()
    problems += write_sysctls({key: value for key, value in before.sysctls.items() if now.get(key, value) != value})
    created = set(read_cgroups()) - set(before.cgroups)
    for cgroup in sorted(created, key=len, reverse=True):
        for path in sorted(Path(cgroup).glob("**/"), key=lambda p: len(str(p)), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
    return problems


# --- images ----------------------------------------------------------------------------------------


def crash(container_id: str) -> None:
    """SIGKILL a pod's container (``docker://ID``, from the pod's status)."""
    docker("kill", "--signal", "KILL", container_id.removeprefix("docker://"))


def build_daemon() -> str:
    """The DOCKER_HOST scripts/docker/build.sh builds into: the caller's Docker, else the private one."""
    if run("docker", "version", "--format", "{{.Server.Version}}", check=False, timeout=30).strip():
        return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return run(str(REPO_ROOT / "scripts/docker/dockerd.sh"), "start").strip()


def load_images(images: list[str]) -> dict[str, str]:
    """Build obflow's images from the repo (up-to-date ones are not rebuilt) and copy each into the
    node's dockerd unless it has that very image already; returns what was done per image."""
    subprocess.run([str(REPO_ROOT / "scripts/docker/build.sh")], check=True, stdout=subprocess.DEVNULL)
    source = build_daemon()
    done = {}
    for image in images:
        wanted = run("docker", "-H", source, "image", "inspect", "-f", "{{.Id}}", image).strip()
        if docker("image", "inspect", "-f", "{{.Id}}", image, check=False).strip() == wanted:
            done[image] = "present"
            continue
        started = time.monotonic()
        save = subprocess.Popen(["docker", "-H", source, "save", image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", DOCKER_HOST, "load", "-q"], stdin=save.stdout, check=True,
                       stdout=subprocess.DEVNULL, timeout=900)  # fmt: skip
        if save.wait(60) != 0:
            raise RuntimeError(f"docker save {image} failed")
        done[image] = f"loaded in {time.monotonic() - started:.0f}s"
    return done
