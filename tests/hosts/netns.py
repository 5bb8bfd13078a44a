"""Several hosts on one machine, made of Linux namespaces, for the path a multi-host job takes.

Each host is a network namespace with its own address on a private routed network, its own
hostname (a UTS namespace) and its own ``/dev/shm`` and node-local folders (a mount namespace
with tmpfs mounted over them), held open by one ``sleep`` process: every command of that host
runs under ``nsenter`` into that process's namespaces. So, as on a cluster,
``socket.gethostname()`` differs per host, each host's shared memory and run folder are its
own, and whatever goes from one host to another crosses a network.

The hosts are linked through a router namespace (a veth pair each, ``10.213.I.2/24`` on the host,
``.1`` on the router). The router counts the bytes forwarded between every ordered pair of
hosts (nftables counters), which is what :meth:`VirtualHosts.pair_bytes` reads. Nothing is
connected to the machine's own network: traffic stays inside namespaces made here.

MPI ranks reach the hosts the way MPICH's hydra does on a cluster, through its ``ssh``
launcher, with :attr:`VirtualHosts.rsh` (a script that runs the command in the named host's
namespaces) as ``-launcher-exec``.

Needs root with ``CAP_SYS_ADMIN`` and ``CAP_NET_ADMIN``, ``ip``, ``nft``, ``unshare`` and
``nsenter``; :func:`unavailable` says why not, for a skip. Everything is removed on exit, within
a bounded time, whatever failed: every process in the namespaces is killed, then the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUBNET = "10.213"  # 10.213.I.0/24 per host: private, and only inside the namespaces made here
TOOLS = ("ip", "nft", "unshare", "nsenter")


def unavailable() -> str | None:
    """Why virtual hosts cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (Debian: iproute2, nftables, util-linux)"
    probe = f"drprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass(frozen=True)
class Host:
    """One virtual host: its name (hostname and /etc/hosts name), address and namespaces' holder."""

    name: str
    ip: str
    netns: str
    pid: int

    def argv(self, command: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> list[str]:
        """``command`` run on this host, in ``cwd`` (default: this process's)."""
        wd = os.fspath(cwd) if cwd is not None else os.getcwd()
        return ["nsenter", "-t", str(self.pid), "-n", "-u", "-m", f"--wd={wd}", "--", *command]

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.argv(command, kwargs.pop("cwd", None)), **kwargs)

    def run(self, command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(self.argv(command, kwargs.pop("cwd", None)), **kwargs)


class VirtualHosts:
    """The hosts made by :func:`virtual_hosts`, by name."""

    def __init__(self, tag: str, folder: Path, hosts: list[Host], router: str) -> None:
        self.tag, self.folder, self.hosts, self.router = tag, folder, {h.name: h for h in hosts}, router
        self.rsh = folder / "rsh"
        self._write_rsh()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def _write_rsh(self) -> None:
        cases = "\n".join(f"    {h.name}) pid={h.pid} ;;" for h in self.hosts.values())
        self.rsh.write_text(
            "#!/bin/sh\n"
            "# an ssh for MPICH's hydra: rsh [OPTIONS] HOST COMMAND... runs COMMAND on that virtual host\n"
            'while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done\n'
            'host=$1; shift\ncase "$host" in\n'
            f"{cases}\n"
            '    *) echo "rsh: no virtual host $host" >&2; exit 255 ;;\nesac\n'
            'exec nsenter -t "$pid" -n -u -m -- sh -c "$*"\n'
        )
        self.rsh.chmod(0o755)

    def pair_bytes(self) -> dict[tuple[str, str], int]:
        """Bytes (IP packets, headers included) forwarded so far from each host to each other host."""
        out = _ip(["netns", "exec", self.router, "nft", "-j", "list", "table", "inet", "pairs"]).stdout
        by_ip = {h.ip: h.name for h in self.hosts.values()}
        counts: dict[tuple[str, str], int] = {}
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if rule is None:
                continue
            match = {e["match"]["left"]["payload"]["field"]: e["match"]["right"] for e in rule["expr"] if "match" in e}
            (counter,) = [e["counter"] for e in rule["expr"] if "counter" in e]
            counts[by_ip[match["saddr"]], by_ip[match["daddr"]]] = counter["bytes"]
        return counts


def _ip(args: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"ip {shlex.join(args)}: {done.stderr.strip()}")
    return done


def _link(tag: str, router: str, index: int, netns: str) -> str:
    """A veth pair from host ``index`` (``eth0``) to the router; returns the host's address."""
    inside, outside = f"{tag}h{index}a", f"{tag}h{index}b"
    ip, gateway = f"{SUBNET}.{index}.2", f"{SUBNET}.{index}.1"
    _ip(["link", "add", inside, "type", "veth", "peer", "name", outside])
    _ip(["link", "set", inside, "netns", netns])
    _ip(["link", "set", outside, "netns", router])
    for args in (
        ["link", "set", inside, "name", "eth0"],
        ["addr", "add", f"{ip}/24", "dev", "eth0"],
        ["link", "set", "eth0", "up"],
        ["link", "set", "lo", "up"],
        ["route", "add", "default", "via", gateway],
    ):
        _ip(["-n", netns, *args])
    _ip(["-n", router, "addr", "add", f"{gateway}/24", "dev", outside])
    _ip(["-n", router, "link", "set", outside, "up"])
    return ip


def _count_pairs(router: str, ips: list[str]) -> None:
    rules = ["add table inet pairs", "add chain inet pairs forward { type filter hook forward priority 0 ; }"]
    rules += [f"add rule inet pairs forward ip saddr {a} ip daddr {b} counter" for a in ips for b in ips if a != b]
    done = subprocess.run(
        ["ip", "netns", "exec", router, "nft", "-f", "-"], input="\n".join(rules) + "\n", capture_output=True, text=True
    )
    if done.returncode != 0:
        raise OSError(f"nft in the router namespace: {done.stderr.strip()}")


def _hold(name: str, netns: str, hosts_file: Path, local: Sequence[Path], shm_mb: int, pid_file: Path) -> int:
    """Start the process that holds host ``name``'s UTS and mount namespaces; returns its pid."""
    mounts = [f"mount -t tmpfs -o size={shm_mb}m tmpfs /dev/shm", f"mount --bind {hosts_file} /etc/hosts"]
    mounts += [f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(d))}" for d in local]
    script = f"hostname {name} && {' && '.join(mounts)} && echo $$ > {pid_file} && exec sleep 86400"
    subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "unshare",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "--",
            "sh",
            "-c",
            script,
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text().strip():
        if time.monotonic() > deadline:
            raise OSError(f"virtual host {name}: its namespaces were not ready in 20 s")
        time.sleep(0.05)
    return int(pid_file.read_text())


def _kill_all(netns: str, budget: float) -> None:
    """Kill every process in ``netns`` (Ray's, MPI's, the holder) until none is left or ``budget`` s pass."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
        pids = [int(p) for p in listed.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@contextlib.contextmanager
def virtual_hosts(names: Sequence[str], *, local: Sequence[Path] = (), shm_mb: int = 1024) -> Iterator[VirtualHosts]:
    """Hosts ``names`` (``h0``, ``h1``, ...) on a private network, each with its own ``/dev/shm`` and
    its own empty tmpfs over every folder of ``local`` (which must exist: node-local folders)."""
    tag = f"dr{os.getpid() % 100000}"  # interface names are at most 15 characters
    folder = Path(tempfile.mkdtemp(prefix="dr-hosts-", dir="/tmp"))
    router = f"{tag}-router"
    made: list[str] = []
    try:
        _ip(["netns", "add", router])
        made.append(router)
        _ip(["-n", router, "link", "set", "lo", "up"])
        _ip(["netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        ips = {name: f"{SUBNET}.{i}.2" for i, name in enumerate(names)}
        hosts_file = folder / "hosts"
        hosts_file.write_text("127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in ips.items()))
        hosts = []
        for i, name in enumerate(names):
            netns = f"{tag}-{name}"
            _ip(["netns", "add", netns])
            made.append(netns)
            ip = _link(tag, router, i, netns)
            pid = _hold(name, netns, hosts_file, local, shm_mb, folder / f"{name}.pid")
            hosts.append(Host(name, ip, netns, pid))
        _count_pairs(router, list(ips.values()))
        yield VirtualHosts(tag, folder, hosts, router)
    finally:
        for netns in reversed(made):
            _kill_all(netns, budget=15)
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
