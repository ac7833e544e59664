#!/usr/bin/env python3
"""Container start latency and memory at scale of berth's manager against
Debian's containerd 1.6, both private daemons running side by side.

Run it through scripts/bench-manager, which builds the release binaries
(berth, berth-shim, berth-runtime, berth-fixtures) and runs this in a
private mount namespace. What it does:

1. Builds the offline test images with `berth-fixtures images DIR` (an OCI
   image layout: busybox, multilayer, index) and tars it. Everything lives in
   a run dir WORKDIR/run.TOKEN (default WORKDIR /var/tmp/berth-bench-manager);
   container ids carry TOKEN, so this run's cgroups are told apart from
   anyone else's.
2. Starts `berth serve --root RUN/berth-root --state RUN/berth-state` (shim
   and runtime found beside it; socket RUN/berth-state/berth.sock) and a
   private containerd (root, state and socket under RUN/ctd, CRI plugin
   disabled, its default runtime io.containerd.runc.v2 with Debian's runc;
   ctr gets --runc-root RUN/ctd/runc and --fifo-dir RUN/ctd/fifo so runc's
   state and the stdio FIFOs stay in the run dir too; on this machine the
   defaults under /run are on the same disk). Both use overlayfs.
   Loads the tarball: `berth load -i` (names it docker.io/library/busybox:
   latest) and `ctr images import --base-name docker.io/library/busybox`
   (names it docker.io/library/busybox:busybox and unpacks it), tagged
   docker.io/library/busybox:latest; both checked to be the fixture's
   busybox manifest, unpacked. Reads each daemon's idle RSS/PSS.
3. Latency: one untimed warm-up run each, then --rounds rounds; each round
   runs `berth run --rm --name ID busybox true` and `ctr run --rm
   docker.io/library/busybox:latest ID true` (the order alternates each
   round, so drift hits both alike), timed end to end as CLI processes.
   Also the host's CPU time over each run (all CPUs' non-idle jiffies from
   /proc/stat: client, daemon, shim, runtime, container and kernel; only
   meaningful on an otherwise idle machine, which is checked before and
   after). Prints median, p90, min and max ms and containerd/berth of the
   medians (>1: berth is faster; the issue's target is >= 2).
4. Scale: --containers (default 50) detached `sleep 1000` containers per
   tool, `berth run -d --name ID busybox sleep 1000` and `ctr run -d IMAGE
   ID sleep 1000`, one after another, alternating tools start by start;
   each start is timed and their sum reported, also over the first 20.
   After a settle, RSS and PSS (kB from /proc/PID/smaps_rollup; PSS splits
   shared pages among the processes mapping them, so it adds up) of the
   daemon and summed over its shims: berth-shim processes whose command
   line names the run dir, containerd-shim-runc-v2 processes whose command
   line names the private containerd's socket (in the run dir). The
   containers' own processes are left out (the same for both). Prints the
   table and containerd's total PSS (daemon + shims) over berth's (the
   issue's target: berth at most a third, >= 3). Then removes them, timed:
   `berth rm -f` with all ids; `ctr task kill -s KILL` each, `ctr task rm
   -f` and `ctr container rm` with all ids.

On exit (normal, Ctrl-C, SIGTERM or failure) it removes every container of
the run through its daemon, stops the daemons, deletes what containers are
left through the runtimes (berth-runtime --root RUN/berth-state/runtime/
default, runc --root RUN/ctd/runc), kills what processes are left in this
run's cgroups and every process whose command line names the run dir
(shims), removes shim sockets containerd 1.6 keeps in /run/containerd/s,
unmounts everything under RUN, removes the cgroups the run created
(/sys/fs/cgroup/CTRL/berth/default-ID and /sys/fs/cgroup/CTRL/bench/ID, and
bench/ itself if the run created it and it is empty) and deletes RUN; then
checks that no process, mount or cgroup of the run is left and says so.
A run killed with SIGKILL is cleaned up by the next one (same work dir).
"""
import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Daemons, Failed, host_busy, host_ticks, lock_workdir, log, mounts_under, unmount_under, wait_until  # noqa: E402

NS_CTD = "bench"          # containerd namespace (cgroups bench/ID)
NS_BERTH = "default"      # berth namespace (cgroups berth/default-ID)
BERTH_REF = "busybox"     # resolves to docker.io/library/busybox:latest
CTD_BASE = "docker.io/library/busybox"
CTD_IMPORTED = CTD_BASE + ":busybox"
CTD_REF = CTD_BASE + ":latest"
CGROOT = "/sys/fs/cgroup"
CTD_SHIM_SOCKETS = "/run/containerd/s"
CLI_TIMEOUT = 120


def run(argv, check=True, timeout=CLI_TIMEOUT, tool=None, **kw):
    """common.run with this driver's default timeout for CLI calls."""
    return common.run(argv, check=check, timeout=timeout, tool=tool, **kw)


# --- /proc, mounts, cgroups --------------------------------------------------

def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def pids_naming(text):
    """Pids (not ours) whose command line contains text."""
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            if any(text in a for a in cmdline(name)):
                out.append(int(name))
    return out


def smaps(pid):
    """{'Rss': kB, 'Pss': kB} of a live process."""
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in ("Rss:", "Pss:"):
                vals[parts[0][:-1]] = int(parts[1])
    return vals


def mem_sum(pids):
    rss = pss = 0
    for p in pids:
        m = smaps(p)
        rss += m["Rss"]
        pss += m["Pss"]
    return {"n": len(pids), "rss_kb": rss, "pss_kb": pss}


def cgroup_hierarchies():
    """The mounted cgroup hierarchies (v1 controllers, name=systemd, unified)."""
    out = []
    try:
        for n in sorted(os.listdir(CGROOT)):
            p = os.path.join(CGROOT, n)
            if os.path.isdir(p) and not os.path.islink(p) and os.path.exists(f"{p}/cgroup.procs"):
                out.append(p)
    except OSError:
        pass
    return out


def cgroups_with(parent, pred):
    """Cgroup dirs CTRL/parent/NAME (every hierarchy) whose NAME passes pred."""
    out = []
    for h in cgroup_hierarchies():
        d = os.path.join(h, parent)
        try:
            names = os.listdir(d)
        except OSError:
            continue
        out += [os.path.join(d, n) for n in names
                if os.path.isdir(os.path.join(d, n)) and pred(n)]
    return sorted(out)


def cgroup_procs(cg):
    pids = []
    for root, _dirs, _files in os.walk(cg):
        try:
            with open(os.path.join(root, "cgroup.procs")) as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return pids


def rmdir_cgroup(cg):
    """Removes a cgroup dir and its children, deepest first (only empty ones
    can go); True when it is gone."""
    for root, _dirs, _files in sorted(os.walk(cg), key=lambda t: -len(t[0])):
        for _ in range(20):
            try:
                os.rmdir(root)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)  # the last task may still be exiting
    return not os.path.exists(cg)


def alive(pid):
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def rmdir_if_empty(cg):
    """Removes a cgroup only if it has no children and no tasks."""
    try:
        os.rmdir(cg)
    except OSError:
        pass


def kill_pids(pids, what):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        time.sleep(0.05)
    if pids:
        log(f"  note: {what} {pids} still there 5 s after SIGKILL")


TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


# --- daemons -----------------------------------------------------------------

class Berth:
    name = "berth"

    def __init__(self, run_dir, bin_dir):
        self.run_dir = run_dir
        self.bin = f"{bin_dir}/berth"
        self.runtime = f"{bin_dir}/berth-runtime"
        self.root = f"{run_dir}/berth-root"
        self.state = f"{run_dir}/berth-state"
        self.sock = f"{self.state}/berth.sock"
        self.runtime_root = f"{self.state}/runtime/{NS_BERTH}"
        env = dict(os.environ, BERTH_LOG="warn")
        env.pop("BERTH_ADDRESS", None)
        env.pop("BERTH_NAMESPACE", None)
        self.env = env
        self.pid = None
        self.up = False

    def start(self, d):
        # Containers' cgroups under /berth (berth/default-ID), where the
        # cleanup looks: berth's default for a root that is not
        # /var/lib/berth is /berth-<hash of the root>. The container ids
        # carry the run's token, so no other daemon's cgroup is touched.
        config = f"{self.run_dir}/berth.toml"
        with open(config, "w") as f:
            f.write('cgroup_parent = "/berth"\n')
        p = d.start("berth", [self.bin, "serve", "--config", config, "--root", self.root,
                              "--state", self.state], env=self.env)
        self.pid = p.pid
        self.up = True
        wait_until("berth serve", lambda: os.path.exists(self.sock)
                   and self.cli("version", check=False).returncode == 0, d, "berth", p)

    def cli(self, *args, check=True, timeout=CLI_TIMEOUT):
        return run([self.bin, "--address", self.sock, "-n", NS_BERTH, *args], check=check,
                   timeout=timeout, env=self.env, tool=self.name)

    def version(self):
        return " / ".join(self.cli("version").stdout.split("\n")).strip(" /")

    def load(self, tar, digest):
        self.cli("load", "-i", tar)
        imgs = json.loads(self.cli("images", "--json").stdout)
        mine = [i for i in imgs if i.get("name") == f"{CTD_BASE}:latest"]
        if not mine or mine[0].get("digest") != digest or mine[0].get("unpacked") is not True:
            raise Failed(self.name, f"after berth load, berth images --json shows {imgs}; "
                         f"expected {CTD_BASE}:latest = {digest}, unpacked")
        return f"{CTD_BASE}:latest", [i.get("name") for i in imgs]

    def run_rm_argv(self, cid):
        return [self.bin, "--address", self.sock, "run", "--rm", "--name", cid, BERTH_REF, "true"]

    def run_detached_argv(self, cid):
        return [self.bin, "--address", self.sock, "run", "-d", "--name", cid, BERTH_REF,
                "sleep", "1000"]

    def remove(self, ids):
        self.cli("rm", "-f", *ids, timeout=300)

    def ids(self):
        return self.cli("ps", "-a", "-q", timeout=30).stdout.split()

    def shims(self):
        return [p for p in pids_naming(self.run_dir)
                if os.path.basename((cmdline(p) or [""])[0]) == "berth-shim"]

    def cgroup_parent(self):
        return "berth"

    def cgroup_name(self, cid):
        return f"{NS_BERTH}-{cid}"

    def remove_all(self):
        """Best effort, through the daemon: every container of the namespace."""
        ids = self.ids()
        if ids:
            log(f"  berth: removing {len(ids)} containers left: {' '.join(ids)}")
            self.cli("rm", "-f", *ids, check=False, timeout=300)

    def runtime_cleanup(self):
        """After the daemon is gone: delete containers the runtime still has."""
        if not os.path.isdir(self.runtime_root):
            return []
        p = run([self.runtime, "--root", self.runtime_root, "list", "-q"], check=False, timeout=30)
        ids = p.stdout.split()
        for cid in ids:
            run([self.runtime, "--root", self.runtime_root, "delete", "-f", cid], check=False,
                timeout=30)
        return ids


class Containerd:
    name = "containerd"

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.base = f"{run_dir}/ctd"
        self.root = f"{self.base}/root"
        self.state = f"{self.base}/state"
        self.sock = f"{self.base}/ctd.sock"
        self.runc_root = f"{self.base}/runc"
        self.fifo_dir = f"{self.base}/fifo"
        self.cfg = f"{self.base}/containerd.toml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        self.pid = None
        self.up = False

    def start(self, d):
        os.makedirs(self.fifo_dir, exist_ok=True)
        with open(self.cfg, "w") as f:
            f.write(f'version = 2\nroot = "{self.root}"\nstate = "{self.state}"\n'
                    f'[grpc]\n  address = "{self.sock}"\n'
                    '[plugins."io.containerd.grpc.v1.cri"]\n  disable = true\n')
        p = d.start("containerd", ["containerd", "--config", self.cfg], env=self.env)
        self.pid = p.pid
        self.up = True
        wait_until("containerd", lambda: os.path.exists(self.sock)
                   and self.ctr("version", check=False).returncode == 0, d, "containerd", p)

    def ctr_argv(self, *args):
        return ["ctr", "--address", self.sock, "-n", NS_CTD, *args]

    def ctr(self, *args, check=True, timeout=CLI_TIMEOUT):
        return run(self.ctr_argv(*args), check=check, timeout=timeout, env=self.env,
                   tool=self.name)

    def version(self):
        return run(["containerd", "--version"]).stdout.strip()

    def load(self, tar, digest):
        self.ctr("images", "import", "--base-name", CTD_BASE, tar)
        self.ctr("images", "tag", CTD_IMPORTED, CTD_REF)
        # REF TYPE DIGEST STATUS SIZE UNPACKED
        rows = [ln.split() for ln in self.ctr("images", "check").stdout.splitlines()[1:] if ln]
        mine = [r for r in rows if r[0] == CTD_REF]
        if not mine or mine[0][2] != digest or "complete" not in mine[0] or mine[0][-1] != "true":
            raise Failed(self.name, f"ctr images check does not show {CTD_REF} = {digest} "
                         f"complete and unpacked: {rows}")
        return CTD_REF, [r[0] for r in rows]

    def run_opts(self):
        return ["--runc-root", self.runc_root, "--fifo-dir", self.fifo_dir]

    def run_rm_argv(self, cid):
        return self.ctr_argv("run", "--rm", *self.run_opts(), CTD_REF, cid, "true")

    def run_detached_argv(self, cid):
        return self.ctr_argv("run", "-d", *self.run_opts(), CTD_REF, cid, "sleep", "1000")

    def remove(self, ids):
        for cid in ids:
            self.ctr("task", "kill", "-s", "KILL", cid)
        self.ctr("task", "rm", "-f", *ids, timeout=300)
        self.ctr("container", "rm", *ids, timeout=300)

    def ids(self):
        return self.ctr("container", "ls", "-q", timeout=30).stdout.split()

    def shims(self):
        return [p for p in pids_naming(self.sock)
                if os.path.basename((cmdline(p) or [""])[0]) == "containerd-shim-runc-v2"]

    def cgroup_parent(self):
        return NS_CTD

    def cgroup_name(self, cid):
        return cid

    def remove_all(self):
        tasks = [ln.split()[0] for ln in
                 self.ctr("task", "ls", check=False, timeout=30).stdout.splitlines()[1:] if ln]
        for cid in tasks:
            self.ctr("task", "kill", "-s", "KILL", cid, check=False, timeout=30)
        if tasks:
            log(f"  containerd: removing {len(tasks)} tasks left: {' '.join(tasks)}")
            self.ctr("task", "rm", "-f", *tasks, check=False, timeout=300)
        ids = self.ids()
        if ids:
            log(f"  containerd: removing {len(ids)} containers left: {' '.join(ids)}")
            self.ctr("container", "rm", *ids, check=False, timeout=300)

    def runtime_cleanup(self):
        root = f"{self.runc_root}/{NS_CTD}"
        if not os.path.isdir(root):
            return []
        p = run(["runc", "--root", root, "list", "-q"], check=False, timeout=30)
        ids = p.stdout.split()
        for cid in ids:
            run(["runc", "--root", root, "delete", "-f", cid], check=False, timeout=30)
        return ids

    def shim_sockets(self):
        """The sockets containerd 1.6 put in /run/containerd/s for this run's
        shims (each bundle's `address` file names its shim's)."""
        out = []
        tasks = f"{self.state}/io.containerd.runtime.v2.task/{NS_CTD}"
        for cid in os.listdir(tasks) if os.path.isdir(tasks) else []:
            try:
                with open(f"{tasks}/{cid}/address") as f:
                    addr = f.read().strip().removeprefix("unix://")
            except OSError:
                continue
            if addr.startswith(CTD_SHIM_SOCKETS + "/"):
                out.append(addr)
        return out


# --- the run -----------------------------------------------------------------

class Run:
    """Everything this run creates and must remove."""

    def __init__(self, run_dir, token, bin_dir):
        self.dir = run_dir
        self.token = token
        self.d = Daemons(run_dir)
        self.berth = Berth(run_dir, bin_dir)
        self.ctd = Containerd(run_dir)
        self.tools = [self.berth, self.ctd]
        # Parents that did not exist before: removed at the end when empty.
        self.new_parents = [os.path.join(h, t.cgroup_parent()) for h in cgroup_hierarchies()
                            for t in self.tools
                            if not os.path.exists(os.path.join(h, t.cgroup_parent()))]
        self.cgroups_before = self.all_children()
        with open(f"{run_dir}/cgroup-parents", "w") as f:
            f.write("".join(p + "\n" for p in self.new_parents))

    def all_children(self):
        """Every cgroup under berth/ and bench/, anyone's."""
        return set(cgroups_with("berth", lambda n: True) + cgroups_with(NS_CTD, lambda n: True))

    def cid(self, what):
        return f"{self.token}-{what}"

    def my_cgroups(self):
        return (cgroups_with("berth", lambda n: n.startswith(f"{NS_BERTH}-{self.token}-"))
                + cgroups_with(NS_CTD, lambda n: n.startswith(f"{self.token}-")))

    def cleanup(self):
        log("cleanup:")
        for t in self.tools:
            if t.up:
                try:
                    t.remove_all()
                except Exception as e:  # noqa: BLE001 - the daemon may be gone
                    log(f"  note: {t.name}: removing containers through the daemon failed: {e}")
        sockets = self.ctd.shim_sockets()
        self.d.stop_all()
        for t in self.tools:
            left = t.runtime_cleanup()
            if left:
                log(f"  {t.name}: the runtime still had {left}: deleted them")
        stray = [p for cg in self.my_cgroups() for p in cgroup_procs(cg)]
        if stray:
            log(f"  killing {len(set(stray))} processes left in this run's cgroups")
            kill_pids(sorted(set(stray)), "container processes")
        left = pids_naming(self.dir)
        if left:
            log(f"  killing {len(left)} processes naming the run dir: "
                + "; ".join(" ".join(cmdline(p))[:100] for p in left))
            kill_pids(left, "processes")
        for s in sockets:
            if os.path.exists(s):
                os.unlink(s)
                log(f"  removed containerd shim socket {s}")
        left = unmount_under(self.dir)
        if left:
            log(f"  unmounted {len(left)} mounts under {self.dir}")
        gone = [cg for cg in self.my_cgroups() if rmdir_cgroup(cg)]
        if gone:
            log(f"  removed {len(gone)} cgroups of this run "
                f"({len({os.path.basename(c) for c in gone})} names)")
        for p in self.new_parents:
            rmdir_if_empty(p)
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.verify()

    def verify(self):
        problems = []
        pat = "berth-shim|containerd-shim|berth serve|containerd --config"
        hits = [ln for ln in subprocess.run(["pgrep", "-af", pat], capture_output=True,
                                            text=True).stdout.splitlines() if self.dir in ln]
        hits += [f"{p} {' '.join(cmdline(p))}" for p in pids_naming(self.dir)
                 if not any(ln.startswith(f"{p} ") for ln in hits)]
        if hits:
            problems.append(f"processes: {hits}")
        if mounts_under(self.dir):
            problems.append(f"mounts: {mounts_under(self.dir)}")
        if self.my_cgroups():
            problems.append(f"cgroups: {self.my_cgroups()}")
        still = [p for p in self.new_parents if os.path.exists(p) and not any(
            os.path.isdir(os.path.join(p, n)) for n in os.listdir(p))]
        if still:
            problems.append(f"cgroup parents this run created: {still}")
        if os.path.exists(self.dir):
            problems.append(f"run dir {self.dir}")
        others = sorted({os.path.relpath(c, CGROOT).split("/", 1)[1]
                         for c in self.all_children() - self.cgroups_before})
        if others:
            log(f"  note: cgroups someone else made during the run (not this run's ids): {others}")
        if problems:
            log("  LEFT OVER: " + "; ".join(problems))
        else:
            log(f"  nothing of the run is left (no process naming {self.dir}, no mount under "
                f"it, no cgroup berth/{NS_BERTH}-{self.token}-* or {NS_CTD}/{self.token}-*)")
        return not problems


def reap_stale(workdir, bin_dir):
    """Cleans what an earlier run killed with SIGKILL left in WORKDIR/run.*:
    processes naming that run dir, the cgroups of its token, the dir. Called
    with the work dir's lock held, so no live run owns any of them."""
    for name in os.listdir(workdir):
        run_dir = os.path.join(workdir, name)
        if not name.startswith("run.") or not os.path.isdir(run_dir):
            continue
        token = name[len("run."):]
        log(f"cleaning stale {run_dir}")
        sockets = Containerd(run_dir).shim_sockets()
        for t in (Berth(run_dir, bin_dir), Containerd(run_dir)):
            t.runtime_cleanup()
        kill_pids(pids_naming(run_dir), "stale processes")
        cgs = (cgroups_with("berth", lambda n: n.startswith(f"{NS_BERTH}-{token}-"))
               + cgroups_with(NS_CTD, lambda n: n.startswith(f"{token}-")))
        kill_pids(sorted({p for cg in cgs for p in cgroup_procs(cg)}), "stale container processes")
        for cg in cgs:
            rmdir_cgroup(cg)
        try:
            with open(f"{run_dir}/cgroup-parents") as f:
                parents = f.read().split()
        except OSError:
            parents = []
        for cg in parents:
            rmdir_if_empty(cg)
        for s in sockets:
            if os.path.exists(s):
                os.unlink(s)
        unmount_under(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


def timed(argv, env, what):
    """Runs a CLI to completion: (wall seconds, host busy ms)."""
    t0, b0 = time.perf_counter(), host_ticks()[1]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=env, timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise Failed(what, f"{' '.join(argv)} did not finish in {CLI_TIMEOUT}s") from e
    dt, busy = time.perf_counter() - t0, (host_ticks()[1] - b0) * TICK_MS
    if p.returncode != 0:
        raise Failed(what, f"{' '.join(argv)} exited {p.returncode} after {dt * 1e3:.0f} ms:\n"
                     f"{p.stdout}{p.stderr}")
    return dt, busy


def pct(xs, q):
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def mib(kb):
    return kb / 1024


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20,
                    help="timed `run --rm busybox true` per tool (default %(default)s)")
    ap.add_argument("--containers", type=int, default=50,
                    help="detached sleep containers per tool in the scale phase (default %(default)s)")
    ap.add_argument("--workdir", default="/var/tmp/berth-bench-manager",
                    help="parent of the run dir (default %(default)s)")
    ap.add_argument("--bin-dir", default="target/release",
                    help="berth, berth-shim, berth-runtime and berth-fixtures (default %(default)s)")
    a = ap.parse_args()
    if a.rounds < 1 or a.containers < 1:
        ap.error("--rounds and --containers must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench-manager needs root (containers: namespaces, cgroups, mounts)")
    for tool in ("containerd", "ctr", "runc", "containerd-shim-runc-v2", "pgrep", "tar"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install containerd runc procps tar")
    bin_dir = os.path.abspath(a.bin_dir)
    for b in ("berth", "berth-shim", "berth-runtime", "berth-fixtures"):
        if not os.access(f"{bin_dir}/{b}", os.X_OK):
            sys.exit(f"{bin_dir}/{b} missing: cargo build --release --workspace")
    workdir = os.path.abspath(a.workdir)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    lock = lock_workdir(workdir, "bench-manager")  # held for the run
    reap_stale(workdir, bin_dir)
    token = secrets.token_hex(3)
    run_dir = os.path.join(workdir, f"run.{token}")
    os.mkdir(run_dir, 0o700)
    r = Run(run_dir, token, bin_dir)
    code = 1
    try:
        code = bench(a, r, bin_dir)
    except Failed as e:
        log(f"\n{e.tool or 'setup'} FAILED:\n{e}")
        for name in ("berth", "containerd"):
            if e.tool == name:
                log(f"{name} daemon log (tail):\n{r.d.log_tail(name)}")
        code = 1
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        clean = r.cleanup()
        lock.close()
    if not clean and code == 0:
        code = 2
    return code


def bench(a, r, bin_dir):
    berth, ctd, d = r.berth, r.ctd, r.d
    tools = r.tools
    log(f"run dir {r.dir} (container ids {r.token}-*)")

    # 1. The image.
    t0 = time.monotonic()
    out = run([f"{bin_dir}/berth-fixtures", "images", f"{r.dir}/images"]).stdout
    digests = dict(ln.split("\t") for ln in out.splitlines() if "\t" in ln)
    tar = f"{r.dir}/images.tar"
    run(["tar", "-C", f"{r.dir}/images", "-cf", tar, "."])
    log(f"fixture images ({', '.join(digests)}) in {tar}, {os.path.getsize(tar) / 1e6:.1f} MB, "
        f"in {time.monotonic() - t0:.1f} s; busybox {digests['busybox']}")

    # 2. The daemons.
    versions = {}
    for t in tools:
        t0 = time.monotonic()
        t.start(d)
        versions[t.name] = t.version()
        log(f"{t.name} up in {time.monotonic() - t0:.2f} s (pid {t.pid}): {versions[t.name]}")
    versions["ctr"] = run(["ctr", "--version"]).stdout.strip()
    versions["runc"] = run(["runc", "--version"]).stdout.splitlines()[0]
    log(f"  {versions['ctr']}; {versions['runc']} (containerd's runtime io.containerd.runc.v2)")
    refs = {}
    for t in tools:
        t0 = time.monotonic()
        ref, names = t.load(tar, digests["busybox"])
        refs[t.name] = ref
        log(f"{t.name}: loaded in {time.monotonic() - t0:.2f} s: {', '.join(names)}; "
            f"running {ref} (busybox, unpacked)")
    time.sleep(1)
    idle = {t.name: smaps(t.pid) for t in tools}
    for t in tools:
        log(f"{t.name} daemon idle (image loaded, no container yet): RSS "
            f"{mib(idle[t.name]['Rss']):.1f} MiB, PSS {mib(idle[t.name]['Pss']):.1f} MiB")

    busy = host_busy()
    log(f"CPU busy in the 2 s before the rounds: {busy:.0%} of {os.cpu_count()} CPUs")
    if busy > 0.1:
        log("  note: something else is running; times will be noisy")

    # 3. Latency.
    log(f"latency: 1 warm-up each, then {a.rounds} rounds of `run --rm busybox true`, "
        "interleaved, order alternating")
    first = {}
    for t in tools:
        first[t.name] = timed(t.run_rm_argv(r.cid("warm")), t.env, t.name)[0]
    lat = {t.name: [] for t in tools}
    cpu = {t.name: [] for t in tools}
    for i in range(a.rounds):
        order = tools if i % 2 == 0 else tools[::-1]
        line = []
        for t in order:
            dt, busy_ms = timed(t.run_rm_argv(r.cid(f"lat{i}")), t.env, t.name)
            lat[t.name].append(dt)
            cpu[t.name].append(busy_ms)
            line.append(f"{t.name} {dt * 1e3:6.1f} ms (host CPU {busy_ms:4.0f} ms)")
        log(f"  round {i + 1:2}: " + ", ".join(line))
    for t in tools:
        left = t.ids()
        if left:
            raise Failed(t.name, f"{t.name} still lists containers after run --rm: {left}")
    log(f"CPU busy in the 2 s after the rounds: {host_busy():.0%}")

    # 4. Scale.
    n = a.containers
    log(f"scale: {n} detached `sleep 1000` containers per tool, one after another, "
        "alternating tools")
    starts = {t.name: [] for t in tools}
    started = {t.name: [] for t in tools}
    for i in range(n):
        for t in (tools if i % 2 == 0 else tools[::-1]):
            cid = r.cid(f"s{i}")
            dt, _ = timed(t.run_detached_argv(cid), t.env, t.name)
            starts[t.name].append(dt)
            started[t.name].append(cid)
        if (i + 1) % 10 == 0:
            log(f"  {i + 1:3} each: " + ", ".join(
                f"{t.name} {sum(starts[t.name]):6.2f} s" for t in tools))
    time.sleep(2)  # let the shims settle after their last start
    mem = {}
    for t in tools:
        shims = t.shims()
        ids = t.ids()
        if len(ids) != n:
            raise Failed(t.name, f"{t.name} lists {len(ids)} containers, expected {n}: {ids}")
        if len(shims) != n:
            log(f"  note: {t.name} has {len(shims)} shim processes for {n} containers")
        mem[t.name] = {"daemon": smaps(t.pid), "shims": mem_sum(shims)}
    removal = {}
    for t in tools:
        t0 = time.perf_counter()
        t.remove(started[t.name])
        removal[t.name] = time.perf_counter() - t0
        left = t.ids()
        if left:
            raise Failed(t.name, f"{t.name} still lists {left} after removing them")
    time.sleep(0.5)
    shims_left = {t.name: len(t.shims()) for t in tools}
    cg_left = r.my_cgroups()
    log(f"removed: " + ", ".join(f"{t.name} {removal[t.name]:.2f} s ({shims_left[t.name]} shims "
                                 "left)" for t in tools)
        + f"; cgroups of the run left after removal: {len(cg_left)}"
        + (f" (e.g. {cg_left[:3]})" if cg_left else ""))

    # 5. Results.
    log("")
    log(f"latency of `run --rm busybox true`, {a.rounds} rounds (ms; host CPU = all CPUs' "
        "busy time during the run)")
    log(f"{'tool':<12}{'median':>8}{'p90':>8}{'min':>8}{'max':>8}{'host CPU':>10}{'warm-up':>9}")
    med = {}
    for t in tools:
        ts = [x * 1e3 for x in lat[t.name]]
        med[t.name] = statistics.median(ts)
        log(f"{t.name:<12}{med[t.name]:>8.1f}{pct(ts, 90):>8.1f}{min(ts):>8.1f}{max(ts):>8.1f}"
            f"{statistics.median(cpu[t.name]):>10.0f}{first[t.name] * 1e3:>9.1f}")
    lratio = med["containerd"] / med["berth"]
    cratio = statistics.median(cpu["containerd"]) / max(1e-9, statistics.median(cpu["berth"]))
    log(f"containerd/berth (median): {lratio:.2f}x  (>1 means berth is faster; target >= 2); "
        f"host CPU: {cratio:.2f}x")
    log("")
    log(f"scale: {n} detached sleep containers per tool, started one after another "
        "(memory in MiB, from smaps_rollup)")
    log(f"{'tool':<12}{f'{n} starts s':>12}{'first 20 s':>11}{'idle RSS':>10}{'daemon RSS':>11}"
        f"{'daemon PSS':>11}{'shims':>6}{'shims RSS':>10}{'shims PSS':>10}{'PSS/shim':>9}"
        f"{'total PSS':>10}")
    totals = {}
    for t in tools:
        m = mem[t.name]
        tot = m["daemon"]["Pss"] + m["shims"]["pss_kb"]
        totals[t.name] = tot
        log(f"{t.name:<12}{sum(starts[t.name]):>12.2f}{sum(starts[t.name][:20]):>11.2f}"
            f"{mib(idle[t.name]['Rss']):>10.1f}{mib(m['daemon']['Rss']):>11.1f}"
            f"{mib(m['daemon']['Pss']):>11.1f}{m['shims']['n']:>6}{mib(m['shims']['rss_kb']):>10.1f}"
            f"{mib(m['shims']['pss_kb']):>10.1f}{mib(m['shims']['pss_kb']) / max(1, m['shims']['n']):>9.2f}"
            f"{mib(tot):>10.1f}")
    mratio = totals["containerd"] / totals["berth"]
    rss_tot = {t.name: mem[t.name]["daemon"]["Rss"] + mem[t.name]["shims"]["rss_kb"] for t in tools}
    sratio = sum(starts["containerd"]) / sum(starts["berth"])
    log(f"containerd/berth total PSS (daemon + shims): {mratio:.2f}x  (target >= 3: berth at most "
        f"a third); total RSS: {rss_tot['containerd'] / rss_tot['berth']:.2f}x; "
        f"{n} starts: {sratio:.2f}x")
    print(json.dumps({
        "rounds": a.rounds, "containers": n, "versions": versions, "refs": refs,
        "latency_ms": {k: [round(x * 1e3, 2) for x in v] for k, v in lat.items()},
        "latency_median_ms": {k: round(v, 2) for k, v in med.items()},
        "latency_host_cpu_ms": {k: [round(x) for x in v] for k, v in cpu.items()},
        "warmup_ms": {k: round(v * 1e3, 2) for k, v in first.items()},
        "latency_containerd_over_berth": round(lratio, 3),
        "start_s": {k: [round(x, 4) for x in v] for k, v in starts.items()},
        "starts_total_s": {k: round(sum(v), 3) for k, v in starts.items()},
        "first20_total_s": {k: round(sum(v[:20]), 3) for k, v in starts.items()},
        "idle_daemon_kb": idle,
        "memory_kb": mem,
        "total_pss_kb": totals,
        "total_pss_containerd_over_berth": round(mratio, 3),
        "removal_s": {k: round(v, 3) for k, v in removal.items()},
    }), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
