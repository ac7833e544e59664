"""Helpers the benchmark drivers share: logging, quiet commands, mounts,
host CPU load and background daemons with pid files."""
import fcntl
import os
import subprocess
import sys
import time


def lock_workdir(workdir, name):
    """Makes workdir and takes its lock for this run (exits when another
    `name` holds it): holding the lock makes every run.* dir in it stale.
    Keep the returned file open for as long as the run lasts."""
    os.makedirs(workdir, exist_ok=True)
    lock = open(os.path.join(workdir, "lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"another {name} is running in {workdir}")
    return lock


def log(msg=""):
    try:
        print(msg, flush=True)
    except OSError:  # stdout gone (a closed pipe): keep going, cleanup matters more
        pass


class Failed(RuntimeError):
    def __init__(self, tool, msg):
        super().__init__(msg)
        self.tool = tool


def run(argv, check=True, timeout=None, tool=None, **kw):
    """Runs argv quietly; on failure raises with its output."""
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise Failed(tool, f"{' '.join(argv)} did not finish in {timeout}s") from e
    if check and p.returncode != 0:
        raise Failed(tool, f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def mounts_under(path):
    """Mount points at or under path in this mount namespace, deepest first."""
    out = []
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")  # \040 and friends
            if mp == path or mp.startswith(prefix):
                out.append(mp)
    return sorted(out, key=len, reverse=True)


def unmount_under(path):
    left = mounts_under(path)
    for mp in left:
        if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mp], capture_output=True)
    return left


def host_ticks():
    """(all jiffies, busy jiffies) summed over CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    total = sum(v[:8])  # guest time is already counted in user
    return total, total - v[3] - v[4]


def host_busy(seconds=2.0):
    """Fraction of all CPUs busy (anything but idle and iowait) over a sample."""
    t0, b0 = host_ticks()
    time.sleep(seconds)
    t1, b1 = host_ticks()
    return (b1 - b0) / max(1, t1 - t0)


class Daemons:
    """Background processes, each in its own session (a Ctrl-C does not reach
    them: they are stopped here, in order), with a pid file for reap_stale."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.procs = []  # (name, Popen)
        os.makedirs(f"{run_dir}/pids", exist_ok=True)

    def start(self, name, argv, env=None):
        # Appended to: a daemon restarted each round keeps one log.
        logf = open(f"{self.run_dir}/{name}.log", "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env)
        logf.close()
        with open(f"{self.run_dir}/pids/{name}", "w") as f:
            f.write(str(p.pid))
        self.procs.append((name, p))
        return p

    def check(self, name, p):
        if p.poll() is not None:
            raise Failed(name, f"{name} exited ({p.returncode}):\n{self.log_tail(name)}")

    def log_tail(self, name, n=30):
        try:
            with open(f"{self.run_dir}/{name}.log", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, name, p, grace=10):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{name} ignored SIGTERM for {grace}s: killing it")
                p.kill()
                p.wait()
        try:
            os.unlink(f"{self.run_dir}/pids/{name}")
        except OSError:
            pass

    def stop_named(self, name):
        for n, p in list(self.procs):
            if n == name:
                self.stop(n, p)
                self.procs.remove((n, p))

    def stop_all(self):
        for name, p in reversed(self.procs):
            self.stop(name, p)
        self.procs = []


def wait_until(what, cond, daemons, name, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemons.check(name, proc)
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    raise Failed(name, f"{what} not ready after {timeout}s:\n{daemons.log_tail(name)}")
