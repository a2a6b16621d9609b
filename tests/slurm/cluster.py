"""A throwaway one-node Slurm cluster for the tests: munge, slurmctld and slurmd started as root from
configs in a temporary folder, with partitions `cpu` and `gpu` and one fake GPU (gres `gpu:fake:1`).

Tested with Slurm 22.05 from Debian's packages, as root, without systemd, in a sandbox without cgroups
(hence proctrack/linuxproc and task/none) and without an accounting database. Daemons are stopped by the
PIDs they wrote, never by name, so nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "apt-get install slurmctld slurmd slurm-client munge (see .ci/run)"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun", "munge", "unmunge")
SYSTEM_CONF = Path("/etc/slurm")
MUNGE_RUN = Path("/run/munge")
MUNGE_PIDFILE = MUNGE_RUN / "munged.pid"

SLURM_CONF = """\
ClusterName=ci
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
# No cgroups in a sandbox or container.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Else a job without --mem takes the whole node.
DefMemPerCPU=500
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Finished jobs stay in squeue/scontrol this long: the plugin's squeue status mode and the tests' job
# records both read them there (there is no accounting database).
MinJobAge={min_job_age}
# A cancelled job's processes get SIGKILL this soon after SIGTERM (default 30 s).
KillWait=5
ReturnToService=2
MpiDefault=none
GresTypes=gpu
NodeName={host} CPUs={cpus} RealMemory={mem_mb} Gres=gpu:fake:1 State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP
"""
# `File=` is required: without it slurmd reports 0 GPUs and the node goes INVAL.
GRES_CONF = """\
AutoDetect=off
NodeName={host} Name=gpu Type=fake File=/dev/null
"""


def _which(name: str) -> str | None:
    """Daemons live in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def skip_reason() -> str | None:
    """Why the Slurm tests cannot run here, or None when they can."""
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if missing:
        return f"Slurm is not installed (missing {', '.join(missing)}): {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "the Slurm tests start slurmctld/slurmd/munged and need root"
    conf = SYSTEM_CONF / "slurm.conf"
    if conf.exists() and not conf.is_symlink():
        return f"{conf} is a real cluster's config; the tests will not replace it"
    return None


def _run(*args: str, check: bool = True, timeout: float = 30) -> str:
    args = (_which(args[0]) or args[0], *args[1:])
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_pid(pid: int, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if the process outlives `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _read_pid(pidfile: Path, timeout: float = 10) -> int:
    """The PID a daemon wrote after forking (it may take a moment to appear)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(pidfile.read_text().split()[0])
        time.sleep(0.05)
    raise RuntimeError(f"no PID in {pidfile} after {timeout:.0f} s")


def _munge_works() -> bool:
    munge = subprocess.run(["munge", "-n"], capture_output=True, check=False)
    if munge.returncode != 0:
        return False
    return subprocess.run(["unmunge"], input=munge.stdout, capture_output=True, check=False).returncode == 0


def node_memory_mb() -> int:
    """RealMemory for slurm.conf: 90% of the machine (more than it has would drain the node)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.9)
    raise RuntimeError("MemTotal missing from /proc/meminfo")


_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w:/]*)=(\S*)")


def parse_job_records(text: str) -> list[dict[str, str]]:
    """`scontrol show job -o` output (one job per line, `Key=Value` fields) as dicts."""
    return [dict(_FIELD.findall(line)) for line in text.splitlines() if line.startswith("JobId=")]


def rule_of(record: dict[str, str]) -> str:
    """The rule name from the comment the Slurm plugin sets: rule_<name>[_wildcards_<values>]."""
    return record.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]


@dataclass
class Cluster:
    """A running one-node cluster; `stop()` undoes everything `start()` did."""

    root: Path
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    pids: dict[str, int] = field(default_factory=dict)
    links: list[Path] = field(default_factory=list)

    def write_configs(self, min_job_age: int) -> None:
        for sub in ("etc", "state", "spool", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        values = {
            "host": self.host,
            "root": self.root,
            "cpus": os.cpu_count() or 2,
            "mem_mb": node_memory_mb(),
            "min_job_age": min_job_age,
        }
        (self.root / "etc/slurm.conf").write_text(SLURM_CONF.format(**values))
        (self.root / "etc/gres.conf").write_text(GRES_CONF.format(**values))

    def link_configs(self) -> None:
        """The configs must sit at Slurm's default path: the jobstep plugin (0.6.1) strips SLURM_CONF
        from the environment of its inner `srun`, which then finds no config."""
        SYSTEM_CONF.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            link = SYSTEM_CONF / name
            if link.is_symlink():
                link.unlink()
            link.symlink_to(self.root / "etc" / name)
            self.links.append(link)

    def start_munge(self) -> None:
        """Reuse a munged that already answers (not ours to stop), else start one as user munge."""
        if _munge_works():
            return
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        MUNGE_PIDFILE.unlink(missing_ok=True)
        _run("runuser", "-u", "munge", "--", _which("munged") or "munged")
        self.pids["munged"] = _read_pid(MUNGE_PIDFILE)
        if not _munge_works():
            raise RuntimeError("munged started but `munge -n | unmunge` fails")

    def start_daemon(self, name: str) -> None:
        """slurmctld and slurmd daemonize and write their PID files into the temp folder."""
        _run(name)
        self.pids[name] = _read_pid(self.root / f"run/{name}.pid")

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = _run("sinfo", "-h", "-n", self.host, "-o", "%T", check=False).strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"node {self.host} is {state or 'unknown'}, not idle, after {timeout:.0f} s")

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still holds (all of them while younger than MinJobAge)."""
        return parse_job_records(_run("scontrol", "show", "job", "-o", check=False))

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job and wait for their processes to end, so none outlives slurmd."""
        _run("scancel", "--user", "root", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _run("squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING", check=False).strip():
                return
            time.sleep(0.5)

    def logs(self, lines: int = 20) -> str:
        """The tails of the daemon logs, for error messages."""
        tails = []
        for log in sorted((self.root / "log").glob("*.log")):
            tails.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-lines:]))
        return "\n".join(tails)

    def start(self, min_job_age: int = 3600) -> None:
        self.write_configs(min_job_age)
        self.start_munge()
        self.link_configs()
        try:
            self.start_daemon("slurmctld")
            self.start_daemon("slurmd")
            self.wait_idle()
        except Exception as error:
            raise RuntimeError(f"{error}\n{self.logs()}") from error

    def stop(self) -> None:
        """Cancel jobs, stop our daemons by PID (slurmd first), remove our config links."""
        if "slurmctld" in self.pids and _alive(self.pids["slurmctld"]):
            self.cancel_all()
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is not None:
                _stop_pid(pid)
        for link in self.links:
            if link.is_symlink() and Path(os.readlink(link)).is_relative_to(self.root):
                link.unlink()
        self.links.clear()


@contextlib.contextmanager
def running_cluster(root: Path, min_job_age: int = 3600) -> Iterator[Cluster]:
    """Start a cluster under `root`, yield it, and always stop it (also when starting failed)."""
    cluster = Cluster(root)
    try:
        cluster.start(min_job_age)
        yield cluster
    finally:
        cluster.stop()
