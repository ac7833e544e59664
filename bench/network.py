#!/usr/bin/env python3
"""Published ports (`run -d -p`) of berth against Debian's podman 4.3 with
its CNI backend (bridge + portmap, as Debian configures it), both on the
same offline busybox image, interleaved in one run.

Run it through scripts/bench-network, which builds the release binaries and
runs this in a private mount namespace. What it does:

1. Builds the offline busybox image with `berth-fixtures images DIR` (an OCI
   layout) in a run dir WORKDIR/run.TOKEN (default WORKDIR
   /var/tmp/berth-bench-network); container names carry TOKEN.
2. Starts `berth serve --root RUN/berth-root --state RUN/berth-state` (a
   non-default root: its own bridge `berth-<hash>` and a /24 of its own) and
   `berth load`s the layout. Podman needs no daemon: every call gets
   `--root RUN/podman/root --runroot RUN/podman/run --tmpdir RUN/podman/tmp
   --cgroup-manager cgroupfs --events-backend file --storage-driver overlay
   --runtime R` and CONTAINERS_CONF=RUN/podman/containers.conf (k8s-file
   logs; RLIMIT_NOFILE 1024 as berth's spec, RLIMIT_NPROC 4096: podman's
   defaults, 1048576, are above this machine's hard limits and the runtime
   refuses them). Its network is Debian's /etc/cni/net.d/87-podman-bridge
   .conflist (`podman`: bridge cni-podman0, 10.88.0.0/16, portmap,
   firewall, tuning; netavark is not installed, so podman uses CNI). R is
   crun if `podman run --rm busybox true` works with it, else runc (crun
   1.8.1 refuses this machine's hybrid cgroup layout). The image comes in
   with `podman pull oci:RUN/images:busybox`, tagged docker.io/library/
   busybox:latest; both tools' manifest digests are checked to be the
   fixture's.
3. Start latency: one untimed warm-up each, then --rounds rounds (order
   alternating each round) of `run -d --name ID -p PORT:80 busybox sh -c
   'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h
   /www'` (PORT a free host port picked per start) timed from the CLI's
   start until an HTTP GET of http://127.0.0.1:PORT/ answers 200 "ok"
   (a new connection every 2 ms, each with a 1 s timeout); also the CLI's
   own time. Then `rm -f ID` (podman: `rm -f -t 0`, SIGKILL at once as
   berth's and docker's `rm -f`), timed. Prints median, p90, min, max and
   podman/berth of the medians (>1: berth is faster).
4. Transfer: one container per tool serving a 64 MiB file of random bytes
   (--size-mib; made with dd in the container before httpd starts) through
   its published port; one warm-up fetch each, then --fetches (default 5)
   interleaved fetches with a Python socket client (HTTP/1.0, recv_into a
   1 MiB buffer, length checked), timed from connect to the last byte.
   Prints MB/s (1e6 bytes/s) median per tool and podman/berth.

Cleanup on exit (normal, Ctrl-C, SIGTERM or failure): every container of
the run through its tool, the berth daemon, what containers the runtimes
still have, processes naming the run dir (shims, conmon), mounts under it,
the run's cgroups (berth/default-TOKEN-*, libpod_parent/libpod-ID and the
parents libpod_parent/conmon, libpod_parent and berth if the run made
them), berth's bridge, cni-podman0 if the run made it, the CNI leases and
result caches of the run's containers, network namespaces the run left in
/run/netns, podman's /dev/shm/libpod_lock, /var/lib/containers and
/var/lib/cni/networks/podman if the run made them, the shared iptables
chains the CNI plugins made (CNI-FORWARD/CNI-ADMIN of `firewall`,
CNI-HOSTPORT-* of `portmap`) if they were not there before and nothing but
their own jumps is left in them, and the run dir. Then it diffs
`iptables-save` (counters dropped) before and after and prints every line
added or removed, marking those naming this run's networks or containers.
"""
import argparse
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Daemons, Failed, host_busy, lock_workdir, log, unmount_under, wait_until  # noqa: E402
from manager import (cgroup_hierarchies, cgroup_procs, cgroups_with, cmdline,  # noqa: E402
                     kill_pids, mounts_under, pct, pids_naming, rmdir_cgroup, rmdir_if_empty)

NS_BERTH = "default"
IMAGE = "docker.io/library/busybox:latest"
CLI_TIMEOUT = 120
HTTPD = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"
PODMAN_NET_FILES = ["/dev/shm/libpod_lock", "/var/lib/containers", "/var/lib/cni/networks/podman"]
SHARED_CHAINS = {"filter": ["CNI-FORWARD", "CNI-ADMIN"],
                 "nat": ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"]}


def run(argv, check=True, timeout=CLI_TIMEOUT, tool=None, **kw):
    return common.run(argv, check=check, timeout=timeout, tool=tool, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def http_get(port, path="/", timeout=1.0, buf=None):
    """(status, body length, first bytes of the body) of one HTTP/1.0 GET."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        buf = buf or bytearray(1 << 20)
        view = memoryview(buf)
        head = b""
        while b"\r\n\r\n" not in head:
            n = s.recv_into(view)
            if n == 0:
                raise ConnectionError(f"closed after {len(head)} bytes of header")
            head += bytes(view[:n])
        hdr, _, rest = head.partition(b"\r\n\r\n")
        status = int(hdr.split(b" ", 2)[1])
        first = rest[:16]
        total = len(rest)
        while True:
            n = s.recv_into(view)
            if n == 0:
                break
            total += n
        m = re.search(rb"(?i)content-length:\s*(\d+)", hdr)
        if m and int(m.group(1)) != total:
            raise ConnectionError(f"short body: {total} of {m.group(1)} bytes")
        return status, total, first


def wait_http(port, deadline_s=30):
    """Polls until GET / answers 200 "ok"; seconds since the call."""
    t0 = time.perf_counter()
    last = None
    while time.perf_counter() - t0 < deadline_s:
        try:
            st, _n, first = http_get(port)
            if st == 200 and first.startswith(b"ok"):
                return time.perf_counter()
            last = f"status {st}"
        except OSError as e:
            last = str(e)
        time.sleep(0.002)
    raise Failed(None, f"127.0.0.1:{port} did not answer in {deadline_s}s (last: {last})")


def iptables_lines():
    out = run(["iptables-save"]).stdout
    lines, table = [], ""
    for ln in out.splitlines():
        if ln.startswith("#"):
            continue
        if ln.startswith("*"):
            table = ln[1:]
            continue
        if ln == "COMMIT":
            continue
        lines.append(f"{table}: " + re.sub(r" \[\d+:\d+\]$", "", ln))
    return lines


def links():
    return set(os.listdir("/sys/class/net"))


def listdir(p):
    try:
        return set(os.listdir(p))
    except OSError:
        return set()


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
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("BERTH_ADDRESS", "BERTH_NAMESPACE")}
        self.env["BERTH_LOG"] = "warn"
        self.up = False
        self.bridge = None
        self.subnet = None

    def start(self, d):
        config = f"{self.run_dir}/berth.toml"
        with open(config, "w") as f:
            f.write('cgroup_parent = "/berth"\n')
        p = d.start("berth", [self.bin, "serve", "--config", config, "--root", self.root,
                              "--state", self.state], env=self.env)
        self.pid = p.pid
        self.up = True
        wait_until("berth serve", lambda: os.path.exists(self.sock)
                   and self.cli("version", check=False).returncode == 0, d, "berth", p)

    def base(self):
        return [self.bin, "--address", self.sock, "-n", NS_BERTH]

    def cli(self, *args, check=True, timeout=CLI_TIMEOUT):
        return run([*self.base(), *args], check=check, timeout=timeout, env=self.env,
                   tool=self.name)

    def version(self):
        return " / ".join(self.cli("version").stdout.split("\n")).strip(" /")

    def load(self, layout, digest):
        tar = f"{self.run_dir}/images.tar"
        run(["tar", "-C", layout, "-cf", tar, "."])
        self.cli("load", "-i", tar)
        imgs = json.loads(self.cli("images", "--json").stdout)
        mine = [i for i in imgs if i.get("name") == IMAGE]
        if not mine or mine[0].get("digest") != digest:
            raise Failed(self.name, f"berth images --json: {imgs}; expected {IMAGE} = {digest}")

    def network(self):
        try:
            v = json.loads(self.cli("network", "inspect", "bridge").stdout)[0]
            self.bridge = v["Options"]["com.docker.network.bridge.name"]
            self.subnet = v["IPAM"]["Config"][0]["Subnet"]
        except Exception as e:  # noqa: BLE001
            log(f"  note: berth network inspect bridge: {e}")
        return f"bridge {self.bridge}, subnet {self.subnet}"

    def run_argv(self, cid, port, cmd):
        return [*self.base(), "run", "-d", "--name", cid, "-p", f"{port}:80", "busybox",
                "sh", "-c", cmd]

    def rm_argv(self, cid):
        return [*self.base(), "rm", "-f", cid]

    def ids(self):
        return self.cli("ps", "-a", "-q", timeout=30).stdout.split()

    def remove_all(self):
        ids = self.ids()
        if ids:
            log(f"  berth: removing {len(ids)} containers left: {' '.join(ids)}")
            self.cli("rm", "-f", *ids, check=False, timeout=300)

    def runtime_cleanup(self):
        if not os.path.isdir(self.runtime_root):
            return []
        ids = run([self.runtime, "--root", self.runtime_root, "list", "-q"], check=False,
                  timeout=30).stdout.split()
        for cid in ids:
            run([self.runtime, "--root", self.runtime_root, "delete", "-f", cid], check=False,
                timeout=30)
        return ids


class Podman:
    name = "podman"

    def __init__(self, run_dir):
        self.dir = f"{run_dir}/podman"
        self.conf = f"{self.dir}/containers.conf"
        self.runtime = "runc"
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf)
        self.up = False
        self.long_ids = set()

    def setup(self):
        os.makedirs(f"{self.dir}/tmp", exist_ok=True)
        nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
        with open(self.conf, "w") as f:
            f.write('[containers]\nlog_driver = "k8s-file"\n'
                    f'default_ulimits = ["nofile=1024:1024", "nproc={nproc}:{nproc}"]\n'
                    '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        self.up = True

    def base(self):
        return ["podman", "--root", f"{self.dir}/root", "--runroot", f"{self.dir}/run",
                "--tmpdir", f"{self.dir}/tmp", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--storage-driver", "overlay",
                "--runtime", self.runtime]

    def cli(self, *args, check=True, timeout=CLI_TIMEOUT):
        return run([*self.base(), *args], check=check, timeout=timeout, env=self.env,
                   tool=self.name)

    def load(self, layout, digest):
        self.cli("pull", "-q", f"oci:{layout}:busybox")
        self.cli("tag", self.cli("images", "-q").stdout.split()[0], IMAGE)
        got = self.cli("image", "inspect", "--format", "{{.Digest}}", IMAGE).stdout.strip()
        if got != digest:
            raise Failed(self.name, f"podman has {IMAGE} = {got}, expected {digest}")

    def pick_runtime(self):
        """crun if it runs a container here, else runc (with the reason)."""
        for rt in ("crun", "runc"):
            self.runtime = rt
            p = self.cli("run", "--rm", IMAGE, "true", check=False)
            if p.returncode == 0:
                return rt, None
            why = (p.stderr or p.stdout).strip().splitlines()[-1:]
            log(f"  podman --runtime {rt} cannot run busybox here: {' '.join(why)}")
        raise Failed(self.name, "neither crun nor runc runs a container under podman")

    def version(self):
        v = self.cli("version", "--format", "{{.Client.Version}}").stdout.strip()
        info = self.cli("info", "--format",
                        "{{.Host.NetworkBackend}} {{.Host.OCIRuntime.Name}} "
                        "{{.Host.OCIRuntime.Version}}").stdout.split("\n")[0]
        return f"podman {v}, network backend + runtime: {info}"

    def run_argv(self, cid, port, cmd):
        return [*self.base(), "run", "-d", "--name", cid, "-p", f"{port}:80", IMAGE,
                "sh", "-c", cmd]

    def rm_argv(self, cid):
        return [*self.base(), "rm", "-f", "-t", "0", cid]

    def ids(self):
        out = self.cli("ps", "-a", "--no-trunc", "--format", "{{.ID}}", timeout=30).stdout.split()
        self.long_ids |= set(out)
        return out

    def remove_all(self):
        ids = self.ids()
        if ids:
            log(f"  podman: removing {len(ids)} containers left")
            self.cli("rm", "-f", "-t", "0", *ids, check=False, timeout=300)

    def runtime_cleanup(self):
        out = []
        for rt, root in (("runc", "/run/runc"), ("crun", "/run/crun")):
            for cid in self.long_ids:
                if os.path.exists(f"{root}/{cid}"):
                    run([rt, "delete", "-f", cid], check=False, timeout=30)
                    out.append(cid)
        return out


class Run:
    def __init__(self, run_dir, token, bin_dir):
        self.dir = run_dir
        self.token = token
        self.d = Daemons(run_dir)
        self.berth = Berth(run_dir, bin_dir)
        self.podman = Podman(run_dir)
        self.tools = [self.berth, self.podman]
        self.ipt_before = iptables_lines()
        self.links_before = links()
        self.netns_before = listdir("/run/netns")
        self.results_before = listdir("/var/lib/cni/results")
        self.files_before = {p for p in PODMAN_NET_FILES if os.path.exists(p)}
        self.new_parents = [os.path.join(h, p) for h in cgroup_hierarchies()
                            for p in ("berth", "libpod_parent/conmon", "libpod_parent")
                            if not os.path.exists(os.path.join(h, p))]

    def cid(self, what):
        return f"{self.token}-{what}"

    def my_cgroups(self):
        ids = self.podman.long_ids
        return (cgroups_with("berth", lambda n: n.startswith(f"{NS_BERTH}-{self.token}-"))
                + cgroups_with("libpod_parent", lambda n: n.startswith("libpod-")
                               and n[len("libpod-"):].split(".")[0] in ids))

    def cleanup(self):
        log("cleanup:")
        for t in self.tools:
            if t.up:
                try:
                    t.remove_all()
                except Exception as e:  # noqa: BLE001
                    log(f"  note: {t.name}: removing containers failed: {e}")
        self.d.stop_all()
        for t in self.tools:
            left = t.runtime_cleanup()
            if left:
                log(f"  {t.name}: its runtime still had {left}: deleted them")
        stray = sorted({p for cg in self.my_cgroups() for p in cgroup_procs(cg)})
        if stray:
            log(f"  killing {len(stray)} processes left in this run's cgroups")
            kill_pids(stray, "container processes")
        left = pids_naming(self.dir)
        if left:
            log(f"  killing {len(left)} processes naming the run dir: "
                + "; ".join(" ".join(cmdline(p))[:100] for p in left))
            kill_pids(left, "processes")
        n = unmount_under(self.dir)
        if n:
            log(f"  unmounted {len(n)} mounts under {self.dir}")
        gone = [cg for cg in self.my_cgroups() if rmdir_cgroup(cg)]
        if gone:
            log(f"  removed {len(gone)} cgroup dirs of this run")
        for p in self.new_parents:
            rmdir_if_empty(p)
        # Network state on the host.
        for ns in listdir("/run/netns") - self.netns_before:
            path = f"/run/netns/{ns}"
            subprocess.run(["umount", path], capture_output=True)
            try:
                os.unlink(path)
                log(f"  removed network namespace {path}")
            except OSError:
                pass
        for b in [self.berth.bridge] + ["cni-podman0"]:
            if b and b in links() and b not in self.links_before:
                if listdir(f"/sys/class/net/{b}/brif"):
                    log(f"  note: bridge {b} still has ports: left in place")
                    continue
                run(["ip", "link", "del", b], check=False)
                log(f"  deleted bridge {b}")
        ids = self.podman.long_ids
        for r in listdir("/var/lib/cni/results") - self.results_before:
            if any(i in r for i in ids):
                os.unlink(f"/var/lib/cni/results/{r}")
        for p in sorted(set(PODMAN_NET_FILES) - self.files_before):
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.exists(p):
                os.unlink(p)
            else:
                continue
            log(f"  removed {p} (podman made it)")
        if os.path.isdir("/var/lib/cni/networks/podman"):
            for f in os.listdir("/var/lib/cni/networks/podman"):
                try:
                    with open(f"/var/lib/cni/networks/podman/{f}") as fh:
                        if fh.readline().strip() in ids:
                            os.unlink(f"/var/lib/cni/networks/podman/{f}")
                except OSError:
                    pass
        self.drop_shared_chains()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.verify()

    def drop_shared_chains(self):
        before = "\n".join(self.ipt_before)
        now = iptables_lines()
        for table, chains in SHARED_CHAINS.items():
            for ch in chains:
                if f"{table}: :{ch} " in before or not any(
                        ln.startswith(f"{table}: :{ch} ") for ln in now):
                    continue
                own = [ln for ln in now if ln.startswith(f"{table}: -A {ch} ")]
                if any(not re.search(r"-j (CNI-ADMIN|CNI-HOSTPORT-\w+|MARK|MASQUERADE)$", ln)
                       and "--mark" not in ln for ln in own) or len(own) > 2:
                    log(f"  note: shared chain {table}/{ch} is in use (rules in it): left")
                    continue
                jumps = [ln for ln in now if ln.endswith(f"-j {ch}")
                         or f"-j {ch} " in ln]
                for ln in jumps:
                    rule = ln.split(": ", 1)[1].replace("-A ", "-D ", 1)
                    subprocess.run(["sh", "-c", f"iptables -t {table} {rule}"],
                                   capture_output=True)
                subprocess.run(["iptables", "-t", table, "-F", ch], capture_output=True)
                if subprocess.run(["iptables", "-t", table, "-X", ch],
                                  capture_output=True).returncode == 0:
                    log(f"  removed shared chain {table}/{ch} (a CNI plugin made it this run)")

    def verify(self):
        problems = []
        left = pids_naming(self.dir)
        if left:
            problems.append(f"processes {left}")
        if mounts_under(self.dir):
            problems.append(f"mounts {mounts_under(self.dir)}")
        if self.my_cgroups():
            problems.append(f"cgroups {self.my_cgroups()}")
        if os.path.exists(self.dir):
            problems.append(f"run dir {self.dir}")
        new_links = {x for x in links() - self.links_before
                     if x in (self.berth.bridge, "cni-podman0")}
        if new_links:
            problems.append(f"bridges {sorted(new_links)}")
        ns = listdir("/run/netns") - self.netns_before
        if ns:
            problems.append(f"network namespaces {sorted(ns)}")
        after = iptables_lines()
        added = [x for x in after if x not in self.ipt_before]
        removed = [x for x in self.ipt_before if x not in after]
        marks = [m for m in (self.berth.bridge, self.berth.subnet, "cni-podman0", "10.88.",
                             '"podman"', self.token) if m] + [i[:12] for i in self.podman.long_ids]
        mine = [x for x in added if any(m in x for m in marks)]
        log(f"  iptables-save before/after: {len(added)} lines added, {len(removed)} removed "
            f"({len(mine)} added naming this run's bridges, subnets or containers)")
        for sign, xs in (("+", added), ("-", removed)):
            for x in xs:
                net = re.search(r'name: \\"([^\\]+)\\"', x)
                whose = ("   <- this run" if x in mine else
                         f"   (not this run: CNI network {net.group(1)!r})" if net else "")
                log(f"    {sign} {x}{whose}")
        if mine:
            problems.append(f"{len(mine)} iptables lines of this run")
        if problems:
            log("  LEFT OVER: " + "; ".join(problems))
        else:
            log(f"  nothing of the run is left (processes, mounts, cgroups, bridges, netns, "
                f"iptables lines naming it, {self.dir})")
        self.ipt_added, self.ipt_removed = added, removed
        return not problems


def timed_start(t, cid, port, cmd):
    """(seconds to first HTTP answer, seconds of the CLI)."""
    argv = t.run_argv(cid, port, cmd)
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=t.env, timeout=CLI_TIMEOUT)
    t1 = time.perf_counter()
    if p.returncode != 0:
        raise Failed(t.name, f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    if t.name == "podman":
        t.long_ids.add(p.stdout.strip().splitlines()[-1])
    try:
        t2 = wait_http(port)
    except Failed as e:
        raise Failed(t.name, f"after {' '.join(argv)}: {e}") from e
    return t2 - t0, t1 - t0


def timed_rm(t, cid):
    argv = t.rm_argv(cid)
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=t.env, timeout=CLI_TIMEOUT)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise Failed(t.name, f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return dt


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--fetches", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--workdir", default="/var/tmp/berth-bench-network")
    ap.add_argument("--bin-dir", default="target/release")
    a = ap.parse_args()
    if a.rounds < 1 or a.fetches < 1 or a.size_mib < 1:
        ap.error("--rounds, --fetches and --size-mib must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench-network needs root")
    for tool in ("podman", "conmon", "iptables-save", "ip", "tar"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install podman iptables iproute2 tar")
    bin_dir = os.path.abspath(a.bin_dir)
    for b in ("berth", "berth-shim", "berth-runtime", "berth-fixtures"):
        if not os.access(f"{bin_dir}/{b}", os.X_OK):
            sys.exit(f"{bin_dir}/{b} missing: cargo build --release --workspace")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    workdir = os.path.abspath(a.workdir)
    lock = lock_workdir(workdir, "bench-network")  # held for the run
    for name in os.listdir(workdir):
        stale = os.path.join(workdir, name)
        if name.startswith("run.") and os.path.isdir(stale):
            log(f"cleaning stale {stale} (processes naming it, mounts, the dir)")
            kill_pids(pids_naming(stale), "stale processes")
            unmount_under(stale)
            shutil.rmtree(stale, ignore_errors=True)
    token = secrets.token_hex(3)
    run_dir = os.path.join(workdir, f"run.{token}")
    os.mkdir(run_dir, 0o700)
    r = Run(run_dir, token, bin_dir)
    code = 1
    try:
        code = bench(a, r, bin_dir)
    except Failed as e:
        log(f"\n{e.tool or 'setup'} FAILED:\n{e}")
        if e.tool == "berth":
            log(f"berth daemon log (tail):\n{r.d.log_tail('berth')}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        clean = r.cleanup()
        lock.close()
    if not clean and code == 0:
        code = 2
    return code


def bench(a, r, bin_dir):
    berth, podman = r.berth, r.podman
    tools = r.tools
    log(f"run dir {r.dir} (container names {r.token}-*)")
    out = run([f"{bin_dir}/berth-fixtures", "images", f"{r.dir}/images"]).stdout
    digest = dict(ln.split("\t") for ln in out.splitlines() if "\t" in ln)["busybox"]
    layout = f"{r.dir}/images"
    berth.start(r.d)
    berth.load(layout, digest)
    log(f"berth: {berth.version()}; {berth.network()}")
    podman.setup()
    podman.load(layout, digest)
    rt, _ = podman.pick_runtime()
    log(f"podman: {podman.version()}; network `podman` from "
        "/etc/cni/net.d/87-podman-bridge.conflist (cni-podman0, 10.88.0.0/16)")
    log(f"  {run([rt, '--version']).stdout.splitlines()[0]} (podman's runtime)")
    log(f"both: busybox {digest}")
    busy = host_busy()
    log(f"CPU busy in the 2 s before the rounds: {busy:.0%} of {os.cpu_count()} CPUs"
        + ("  (something else is running: times will be noisy)" if busy > 0.1 else ""))

    # Start latency.
    log(f"start: 1 warm-up each, then {a.rounds} rounds of `run -d -p PORT:80 busybox sh -c "
        f"'{HTTPD}'` until GET 127.0.0.1:PORT answers, then `rm -f`; order alternating")
    for t in tools:
        cid = r.cid(f"warm-{t.name}")
        timed_start(t, cid, free_port(), HTTPD)
        timed_rm(t, cid)
    first = {t.name: [] for t in tools}
    cli = {t.name: [] for t in tools}
    rm = {t.name: [] for t in tools}
    for i in range(a.rounds):
        line = []
        for t in (tools if i % 2 == 0 else tools[::-1]):
            cid = r.cid(f"r{i}-{t.name}")
            ans, c = timed_start(t, cid, free_port(), HTTPD)
            d = timed_rm(t, cid)
            first[t.name].append(ans)
            cli[t.name].append(c)
            rm[t.name].append(d)
            line.append(f"{t.name} {ans * 1e3:6.1f} ms (cli {c * 1e3:5.1f}, rm {d * 1e3:5.1f})")
        log(f"  round {i + 1:2}: " + ", ".join(line))
    for t in tools:
        if t.ids():
            raise Failed(t.name, f"{t.name} still lists containers after rm -f: {t.ids()}")

    # Transfer.
    size = a.size_mib << 20
    serve = (f"mkdir -p /www && dd if=/dev/urandom of=/www/big bs=1M count={a.size_mib} "
             f"2>/dev/null && echo ok > /www/index.html && exec httpd -f -p 80 -h /www")
    ports = {}
    for t in tools:
        ports[t.name] = free_port()
        timed_start(t, r.cid(f"xfer-{t.name}"), ports[t.name], serve)
    buf = bytearray(1 << 20)
    mbs = {t.name: [] for t in tools}

    def fetch(t):
        t0 = time.perf_counter()
        st, n, _ = http_get(ports[t.name], "/big", timeout=30, buf=buf)
        dt = time.perf_counter() - t0
        if st != 200 or n != size:
            raise Failed(t.name, f"GET /big from {t.name}: status {st}, {n} of {size} bytes")
        return n / dt / 1e6

    log(f"transfer: {a.size_mib} MiB over 127.0.0.1:PORT, 1 warm-up each, then {a.fetches} "
        "fetches per tool, interleaved")
    for t in tools:
        fetch(t)
    for i in range(a.fetches):
        line = []
        for t in (tools if i % 2 == 0 else tools[::-1]):
            v = fetch(t)
            mbs[t.name].append(v)
            line.append(f"{t.name} {v:7.0f} MB/s")
        log(f"  fetch {i + 1}: " + ", ".join(line))
    for t in tools:
        timed_rm(t, r.cid(f"xfer-{t.name}"))

    # Results.
    log("")
    log(f"start to first HTTP answer through -p, {a.rounds} rounds (ms)")
    log(f"{'tool':<8}{'median':>8}{'p90':>8}{'min':>8}{'max':>8}{'cli med':>9}{'rm med':>8}"
        f"{'rm p90':>8}")
    med = {}
    for t in tools:
        xs = [x * 1e3 for x in first[t.name]]
        rs = [x * 1e3 for x in rm[t.name]]
        med[t.name] = (statistics.median(xs), statistics.median(rs),
                       statistics.median(cli[t.name]) * 1e3)
        log(f"{t.name:<8}{med[t.name][0]:>8.1f}{pct(xs, 90):>8.1f}{min(xs):>8.1f}{max(xs):>8.1f}"
            f"{med[t.name][2]:>9.1f}{med[t.name][1]:>8.1f}{pct(rs, 90):>8.1f}")
    sr = med["podman"][0] / med["berth"][0]
    rr = med["podman"][1] / med["berth"][1]
    log(f"podman/berth: start to first answer {sr:.2f}x, `run -d` CLI "
        f"{med['podman'][2] / med['berth'][2]:.2f}x, rm -f {rr:.2f}x (>1: berth faster)")
    tm = {t.name: statistics.median(mbs[t.name]) for t in tools}
    log(f"transfer of {a.size_mib} MiB, median of {a.fetches}: "
        + ", ".join(f"{k} {v:.0f} MB/s (min {min(mbs[k]):.0f}, max {max(mbs[k]):.0f})"
                    for k, v in tm.items())
        + f"; berth/podman {tm['berth'] / tm['podman']:.2f}x (>1: berth faster)")
    print(json.dumps({
        "rounds": a.rounds, "fetches": a.fetches, "size_mib": a.size_mib,
        "podman_runtime": rt,
        "first_answer_ms": {k: [round(x * 1e3, 2) for x in v] for k, v in first.items()},
        "cli_ms": {k: [round(x * 1e3, 2) for x in v] for k, v in cli.items()},
        "rm_ms": {k: [round(x * 1e3, 2) for x in v] for k, v in rm.items()},
        "start_podman_over_berth": round(sr, 3), "rm_podman_over_berth": round(rr, 3),
        "transfer_mb_s": {k: [round(x) for x in v] for k, v in mbs.items()},
        "transfer_berth_over_podman": round(tm["berth"] / tm["podman"], 3),
    }), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
