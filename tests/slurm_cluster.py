"""A throwaway single-node Slurm cluster on loopback, for tests of the Slurm profile.

Everything lives in one folder: a private munge key and socket, slurm.conf,
gres.conf, cgroup.conf, state, spool and logs. The daemons run in the
foreground as children of the test, in their own UTS namespace whose hostname
is `localhost`, so that `CommunicationParameters=NoCtldInAddrAny,NoInAddrAny`
binds slurmctld, slurmd and every srun to 127.0.0.1 and nothing else. Ports
are picked free at start; the system's munge and Slurm (if any) are untouched.

The node declares fake GPUs (gres `gpu`, files that are links to /dev/null):
Slurm then schedules `--gpus=1` for real and sets CUDA_VISIBLE_DEVICES per job,
which is what the workflow's Slurm profile asks for. No cgroups are used
(containers rarely delegate them), so CPU, memory and device limits are
scheduled but not enforced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
TOOLS = ("slurmctld", "slurmd", "slurmstepd", "sbatch", "srun", "squeue", "scontrol", "munged")
CLIENTS = ("srun", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
NODE = "node1"
PARTITION = "debug"


def missing_tools() -> list[str]:
    """Slurm and munge programs not found on PATH (sbin included)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [tool for tool in TOOLS if shutil.which(tool, path=path) is None]


def _tool(name: str) -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(f"{name} not found; install {' '.join(PACKAGES)}")
    return found


def install_packages(timeout_s: float = 900) -> str | None:
    """Install Debian's Slurm and munge when missing; the reason it can't, or None.

    Needs root and apt-get. Runs `apt-get update` first only when apt knows no
    candidate for slurmctld (images often ship without package lists).
    """
    if not missing_tools():
        return None
    if os.geteuid() != 0:
        return f"needs root to install {' '.join(PACKAGES)} (missing: {', '.join(missing_tools())})"
    if shutil.which("apt-get") is None:
        return f"no apt-get to install {' '.join(PACKAGES)} (missing: {', '.join(missing_tools())})"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + timeout_s

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            args,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
        )

    try:
        policy = run("apt-cache", "policy", "slurmctld").stdout
        if "Candidate: (none)" in policy or "Candidate:" not in policy:
            run("apt-get", "update")
        result = run("apt-get", "install", "-y", "--no-install-recommends", *PACKAGES)
    except subprocess.TimeoutExpired:
        return f"apt-get did not finish installing {' '.join(PACKAGES)} in {timeout_s:.0f} s"
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
        return f"apt-get install {' '.join(PACKAGES)} failed: {tail}"
    if missing_tools():
        return f"still missing after apt-get install: {', '.join(missing_tools())}"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _namespace_prefix() -> tuple[list[str], str]:
    """How to start a daemon so that its hostname resolves to loopback.

    Preferred: a UTS namespace with hostname `localhost`. Without the right to
    create one, the real hostname is used only if it already resolves to 127.x.
    """
    unshare = shutil.which("unshare")
    if unshare:
        probe = subprocess.run(
            [unshare, "--uts", "sh", "-c", "hostname localhost"], capture_output=True
        )
        if probe.returncode == 0:
            return [
                unshare,
                "--uts",
                "sh",
                "-c",
                'hostname localhost && exec "$0" "$@"',
            ], "localhost"
    host = socket.gethostname()
    try:
        address = socket.gethostbyname(host)
    except OSError:
        address = ""
    if address.startswith("127."):
        return [], host
    raise RuntimeError(
        f"cannot keep Slurm on loopback: no UTS namespace (unshare --uts) and hostname "
        f"{host!r} resolves to {address or 'nothing'}"
    )


def slurm_conf(
    root: Path,
    *,
    host: str,
    ctld_port: int,
    slurmd_port: int,
    cpus: int,
    memory_mb: int,
    gpus: int,
) -> str:
    """slurm.conf for one node on 127.0.0.1, no accounting, no cgroups."""
    gres = f" Gres=gpu:{gpus}" if gpus else ""
    return f"""\
# Written by tests/slurm_cluster.py: a single-node cluster on 127.0.0.1 only.
ClusterName=attnbench-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/run/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
# No cgroups (containers rarely delegate them): processes tracked via /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Finished jobs stay visible to squeue for 5 min (the executor polls squeue).
MinJobAge=300
ReturnToService=2
# The node declares what the workflow's profile asks for, not this host's hardware.
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} RealMemory={memory_mb}{gres} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def gres_conf(root: Path, gpus: int) -> str:
    """Fake GPUs: device files that are links to /dev/null (Slurm wants char devices)."""
    if not gpus:
        return "AutoDetect=off\n"
    return f"AutoDetect=off\nNodeName={NODE} Name=gpu File={root}/dev/fakegpu[0-{gpus - 1}]\n"


CGROUP_CONF = """\
# Written by tests/slurm_cluster.py. No cgroup plugin is configured in slurm.conf
# (proctrack/linuxproc, task/none); this file only keeps slurmd from looking for
# the system's one.
CgroupPlugin=autodetect
IgnoreSystemd=yes
"""


@dataclass
class SlurmCluster:
    """One munged, one slurmctld and one slurmd, all children of this process."""

    root: Path
    cpus: int = 16
    memory_mb: int = 65536
    gpus: int = 2
    host: str = "localhost"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm clients (sbatch, squeue, Snakemake) of this cluster."""
        path = os.pathsep.join(
            [str(self.root / "bin"), os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]
        )
        return dict(os.environ, SLURM_CONF=str(self.conf), PATH=path)

    def write_configs(self) -> None:
        self.root.chmod(0o755)  # munged wants its socket's folders searchable by all
        for sub in ("munge/key", "munge/run", "state", "spool", "log", "run", "dev", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge/key/munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.root / "munge/key").chmod(0o700)
        (self.root / "munge/run").chmod(0o755)
        for i in range(self.gpus):
            link = self.root / f"dev/fakegpu{i}"
            if not link.is_symlink():
                link.symlink_to("/dev/null")
        prefix, self.host = _namespace_prefix()
        self._prefix = prefix
        self.conf.write_text(
            slurm_conf(
                self.root,
                host=self.host,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                cpus=self.cpus,
                memory_mb=self.memory_mb,
                gpus=self.gpus,
            )
        )
        (self.root / "gres.conf").write_text(gres_conf(self.root, self.gpus))
        (self.root / "cgroup.conf").write_text(CGROUP_CONF)
        self._write_shims()

    def _write_shims(self) -> None:
        """Client commands that find this cluster's slurm.conf from inside a job.

        The slurm-jobstep executor plugin (0.6.1) drops every SLURM_* variable,
        SLURM_CONF included, before it calls srun inside the job; real clusters
        don't notice (/etc/slurm/slurm.conf or configless), this private one
        would. The shims, first on the jobs' PATH, put SLURM_CONF back.
        """
        for name in CLIENTS:
            shim = self.root / "bin" / name
            shim.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_tool(name)} "$@"\n')
            shim.chmod(0o755)

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.root / f"log/{name}.out", "wb") as out:
            self.procs[name] = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def start(self, timeout_s: float = 60) -> None:
        """Write the configs, start the daemons and wait until the node is idle."""
        self.write_configs()
        munge = self.root / "munge"
        self._spawn(
            "munged",
            [
                _tool("munged"),
                "--foreground",
                "--force",
                f"--socket={munge}/run/munge.socket",
                f"--key-file={munge}/key/munge.key",
                f"--pid-file={munge}/run/munged.pid",
                f"--seed-file={munge}/key/munged.seed",
                f"--log-file={self.root}/log/munged.log",
            ],
        )
        self._wait(lambda: (munge / "run/munge.socket").exists(), timeout_s, "munged socket")
        self._spawn("slurmctld", [*self._prefix, _tool("slurmctld"), "-D", "-f", str(self.conf)])
        self._wait(self._ctld_up, timeout_s, "slurmctld to answer")
        self._spawn(
            "slurmd", [*self._prefix, _tool("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)]
        )
        self.wait_idle(timeout_s)

    def _ctld_up(self) -> bool:
        return self.run("scontrol", "ping", check=False).returncode == 0

    def node_state(self) -> str:
        out = self.run("sinfo", "-h", "-N", "-n", NODE, "-o", "%T", check=False).stdout
        return out.strip().lower()

    def wait_idle(self, timeout_s: float = 60) -> None:
        """Wait until the node accepts jobs (state idle)."""
        self._wait(lambda: self.node_state() == "idle", timeout_s, f"node {NODE} to be idle")

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}\n"
                        + self.logs()
                    )
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"no {what} after {timeout_s:.0f} s\n" + self.logs())

    def run(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(
            [_tool(args[0]), *args[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def jobs(self) -> dict[str, str]:
        """Job id -> state, for every job slurmctld still knows (MinJobAge)."""
        out = self.run("squeue", "--states=all", "-h", "-o", "%i|%T", check=False).stdout
        return dict(line.split("|", 1) for line in out.split() if "|" in line)

    def logs(self, lines: int = 40) -> str:
        """The tail of every daemon log, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self, timeout_s: float = 30) -> None:
        """Cancel every job, let their steps end, then stop the daemons."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.run("scancel", "--full", f"--partition={PARTITION}", check=False)
                deadline = time.monotonic() + timeout_s
                active = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}
                while time.monotonic() < deadline and active & set(self.jobs().values()):
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_cluster(root: Path, **kwargs) -> Iterator[SlurmCluster]:
    """Start a cluster under `root`, yield it, always tear it down."""
    with SlurmCluster(root, **kwargs) as cluster:
        yield cluster
