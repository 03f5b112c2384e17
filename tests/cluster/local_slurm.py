"""A single-node SLURM cluster on this machine, for testing the workflow's SLURM profile.

    python tests/cluster/local_slurm.py install          apt-get install slurm-wlm munge (root)
    python tests/cluster/local_slurm.py start DIR        write the config into DIR, start the daemons
    python tests/cluster/local_slurm.py stop DIR         stop exactly the daemons started in DIR

The cluster has one node, `localhost`, with every CPU of the machine, no accounting database,
and one fake GPU (`gres.conf` points it at /dev/null) so that GPU requests are scheduled for
real. Its config lives in DIR; /etc/slurm/slurm.conf is made a link to it while the cluster
runs, because SLURM's job steps drop every SLURM_* variable (SLURM_CONF included) and then
find the controller only through the default path. An existing /etc/slurm/slurm.conf that
is not such a link is never touched: `start` refuses instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# biofa local test cluster"
DAEMONS = ("munged", "slurmctld", "slurmd")
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "srun")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot run here; the message says why (used as a pytest skip reason)."""


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None
            and not Path("/usr/sbin", name).exists()]


def install() -> None:
    """Install Debian's slurm-wlm and munge; needs root and apt-get."""
    if not missing_binaries():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterUnavailable("installing SLURM needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], env=env)
    if result.returncode != 0:  # a stale package index: refresh it once
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], env=env,
                       check=True)


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512
    raise ClusterUnavailable("cannot read the machine's memory from /proc/meminfo")


def write_config(folder: Path) -> Path:
    """slurm.conf and gres.conf of a one-node cluster whose state lives in `folder`."""
    for sub in ("state", "spool", "log", "munge"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    (folder / "munge").chmod(0o755)  # munged refuses a socket folder others cannot enter
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        MARKER,
        "ClusterName=biofa-test",
        "SlurmctldHost=localhost",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder}/munge/munge.socket",
        f"StateSaveLocation={folder}/state",
        f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid",
        f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/log/slurmctld.log",
        f"SlurmdLogFile={folder}/log/slurmd.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "SlurmctldPort=6817",
        "SlurmdPort=6818",
        "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "MinJobAge=600",  # squeue keeps finished jobs this long: the status check needs them
        "ReturnToService=2",
        "MailProg=/bin/true",
        "GresTypes=gpu",
        f"NodeName=localhost CPUs={os.cpu_count()} RealMemory={_memory_mb()} Gres=gpu:1 "
        "State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    (folder / "gres.conf").write_text("NodeName=localhost Name=gpu File=/dev/null\n")
    return conf


def _link_default_conf(conf: Path) -> None:
    if DEFAULT_CONF.is_symlink() or DEFAULT_CONF.exists():
        ours = DEFAULT_CONF.is_symlink() and (not DEFAULT_CONF.exists()
                                              or DEFAULT_CONF.read_text().startswith(MARKER))
        if not ours:
            raise ClusterUnavailable(f"{DEFAULT_CONF} belongs to another SLURM installation; "
                                     "this test cluster will not replace it")
        DEFAULT_CONF.unlink()
    DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
    DEFAULT_CONF.symlink_to(conf)


def _unlink_default_conf(conf: Path) -> None:
    if DEFAULT_CONF.is_symlink() and os.readlink(DEFAULT_CONF) == str(conf):
        DEFAULT_CONF.unlink()


def _start(folder: Path, name: str, argv: list[str]) -> int:
    log = open(folder / "log" / f"{name}.out", "ab")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    (folder / f"{name}.daemon").write_text(str(process.pid))
    return process.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(condition, timeout: float, what: str, folder: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                     for p in sorted((folder / "log").glob("*")))
    raise ClusterUnavailable(f"{what} within {timeout:.0f} s\n{logs}")


def node_state() -> str:
    result = subprocess.run(["sinfo", "--noheader", "--nodes=localhost", "--format=%T"],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def start(folder: Path, timeout: float = 60) -> None:
    """Write the config, start munged, slurmctld and slurmd, wait until the node is idle."""
    if missing := missing_binaries():
        raise ClusterUnavailable(f"SLURM is not installed (missing {', '.join(missing)}); "
                                 "run `python tests/cluster/local_slurm.py install` as root")
    if os.geteuid() != 0:
        raise ClusterUnavailable("the test cluster runs its daemons as root")
    folder = folder.resolve()
    conf = write_config(folder)
    _link_default_conf(conf)
    try:
        key = folder / "munge" / "munge.key"
        if not key.exists():
            subprocess.run([_binary("mungekey"), "--create", f"--keyfile={key}"], check=True,
                           capture_output=True)
        key.chmod(0o600)
        _start(folder, "munged", [
            _binary("munged"), "--foreground", "--force", f"--socket={folder}/munge/munge.socket",
            f"--key-file={key}", f"--pid-file={folder}/munge/munged.pid",
            f"--log-file={folder}/log/munged.log", f"--seed-file={folder}/munge/munge.seed"])
        _wait(lambda: (folder / "munge" / "munge.socket").exists(), 15, "munged did not start",
              folder)
        _start(folder, "slurmctld", [_binary("slurmctld"), "-D", "-i", "-f", str(conf)])
        _start(folder, "slurmd", [_binary("slurmd"), "-D", "-N", "localhost", "-f", str(conf)])
        _wait(lambda: node_state() == "idle", timeout, "the node did not become idle", folder)
    except BaseException:
        stop(folder)
        raise


def stop(folder: Path) -> None:
    """Stop the daemons started in `folder` (by the pids recorded at start) and unlink the config."""
    folder = folder.resolve()
    pids = []
    for name in reversed(DAEMONS):
        path = folder / f"{name}.daemon"
        if path.exists():
            pid = int(path.read_text())
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            path.unlink()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:  # reap them when they are our children (the pytest fixture)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    _unlink_default_conf(folder / "slurm.conf")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="apt-get install slurm-wlm munge")
    for name in ("start", "stop"):
        commands.add_parser(name).add_argument("dir", type=Path, help="folder of the cluster's "
                                               "config, state and logs")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install()
        elif args.command == "start":
            start(args.dir)
            print(f"SLURM is up: node localhost idle; config {args.dir.resolve()}/slurm.conf")
        else:
            stop(args.dir)
    except ClusterUnavailable as error:
        print(f"local SLURM: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
