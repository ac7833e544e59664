#!/usr/bin/env python3
"""Kubernetes CRI latency and memory of berth's manager (`berth serve`'s
runtime.v1 on <state>/cri.sock) against Debian's containerd 1.6 with its
built-in CRI plugin, both private daemons running side by side, driven by
one CRI client (berth-cri-bench) that talks to either socket.

Run it through scripts/bench-cri, which builds the release binaries (berth,
berth-shim, berth-runtime, berth-fixtures, berth-cri-bench) and runs this in
a private mount namespace. What it does:

1. Offline images: `berth-fixtures images DIR` (busybox) and a pause image
   made here, the same one-layer image berth builds for its own pods (berth's
   static pause program from its build, `/pause`, user 65535), both pushed
   with skopeo to a private docker-registry on a free 127.0.0.1 port (plain
   HTTP). Everything lives in a run dir WORKDIR/run.TOKEN (default WORKDIR
   /var/tmp/berth-bench-cri).
2. One CNI conflist in RUN/net.d, used by both runtimes (plugins from
   /usr/lib/cni): bridge `bcribench` (a gateway, ipMasq, hairpin) with
   host-local IPAM on 10.92.0.0/24 (its dataDir in the run dir), then
   portmap. The bridge and subnet are the benchmark's own: bridges and
   iptables are host-global, so nothing else's are touched.
3. `berth serve --root RUN/berth-root --state RUN/berth-state --config
   RUN/berth.toml` ([cri] cni_conf_dir = RUN/net.d, cni_bin_dirs; its CRI
   socket RUN/berth-state/cri.sock; pods use its built-in pause image) and
   `containerd --config RUN/ctd/containerd.toml` (root, state, grpc socket
   under RUN/ctd, CRI plugin enabled with sandbox_image = the registry's
   pause, the registry reached over plain HTTP through a hosts.toml under
   RUN/ctd/certs.d, network namespaces under its state dir, runc shim v2
   with Debian's runc and its root RUN/ctd/runc, cgroupfs, the same CNI
   conflist, restrict_oom_score_adj: this machine's root lacks
   CAP_SYS_RESOURCE, and runc fails setting the -998 containerd gives a
   pod's infra process). Both use overlayfs.
4. One `berth-cri-bench session` per daemon (one gRPC connection each, as a
   kubelet keeps one) pulls busybox through PullImage. Pods are made as a
   kubelet makes them: their own network namespace, PID namespace per
   container, a log directory, a cgroup parent of the benchmark's own
   (/berth-cri-bench-TOKEN/TOOL/pod<uid>, cgroupfs), kubelet-like container
   config (log path, namespace options, resources, masked paths).
   Latency: one untimed warm-up cycle each (containerd pulls its pause then,
   berth makes its pause image), then --rounds rounds; each round runs one
   cycle per daemon, the order alternating each round: RunPodSandbox,
   CreateContainer + StartContainer (busybox `sleep 1000`), ExecSync `true`,
   Exec `true` streamed (the Exec call and its streaming session on the URL
   it answers, `v4.channel.k8s.io` over WebSocket, or SPDY/3.1 with
   --stream spdy, timed to the exit status on the error channel: both
   daemons' streaming servers are on 127.0.0.1, containerd's through
   stream_server_address/port in its config), StopPodSandbox +
   RemovePodSandbox, each call timed inside the client (no process start). Prints median, p90, min and max ms per call and
   containerd/berth of the medians (>1: berth faster; the issue's target is
   >= 2).
5. Memory: --pods (default 10) pods of one `sleep 1000` container each per
   daemon (alternating daemons pod by pod), then after a settle the PSS (and
   RSS) from /proc/PID/smaps_rollup of the daemon and summed over its shims:
   berth-shim processes whose command line names the run dir,
   containerd-shim-runc-v2 processes whose command line names the private
   containerd's socket (each counted as it runs them: containerd one per
   pod, berth one per pod since f38a74a). Pause and container processes are
   left out. Prints the table and containerd's total PSS over berth's (the
   issue's target: >= 3). Then every pod is stopped and removed through the
   CRI (which runs the CNI DEL).

On exit (normal, Ctrl-C, SIGTERM or failure) it removes every pod of the
run through each CRI, stops the clients and daemons and the registry,
deletes what containers are left through the runtimes, kills what processes
are left in this run's cgroups and every process naming the run dir,
removes containerd's shim sockets in /run/containerd/s, unmounts everything
under the run dir (overlays, network namespaces), deletes iptables rules
that still name the network bcribench (there should be none: CNI DEL
removes them), the bridge, the cgroups /sys/fs/cgroup/*/berth-cri-bench-TOKEN
and the run dir; then checks that nothing of the run is left and says so.
A run killed with SIGKILL is cleaned up by the next one (same work dir).

For profiling, three environment variables: BENCH_BERTH_LOG sets berth's
log filter (default `warn`; `warn,berth_cri=debug,berth_core::task=debug`
logs each pod's phase timings), BENCH_KEEP_LOG=FILE keeps berth's log
after the run, BENCH_SMAPS_DUMP=PREFIX saves berth's /proc/PID/smaps idle
(PREFIX.idle) and with the pods up (PREFIX.pods).
"""
import argparse
import glob
import hashlib
import io
import json
import os
import secrets
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Daemons, Failed, host_busy, lock_workdir, log, mounts_under, unmount_under, wait_until  # noqa: E402
from manager import (cgroup_hierarchies, cgroup_procs, cmdline, kill_pids, mem_sum,  # noqa: E402
                     mib, pct, pids_naming, rmdir_cgroup, smaps)

BRIDGE = "bcribench"
NETWORK = "bcribench"
SUBNET = "10.92.0.0/24"
CG_PREFIX = "berth-cri-bench-"
CRI_NS = "k8s.io"
CTD_SHIM_SOCKETS = "/run/containerd/s"
CNI_BIN = "/usr/lib/cni"
OPS = [("runp_ms", "RunPodSandbox"), ("create_start_ms", "CreateContainer+StartContainer"),
       ("create_ms", "  CreateContainer"), ("start_ms", "  StartContainer"),
       ("exec_ms", "ExecSync true"), ("exec_stream_ms", "Exec (streamed) true"),
       ("exec_call_ms", "  Exec call (URL)"), ("exec_stream_end_ms", "  to the session's end"),
       ("teardown_ms", "StopPodSandbox+RemovePodSandbox")]
CALL_TIMEOUT = 300


def run(argv, check=True, timeout=120, tool=None, **kw):
    return common.run(argv, check=check, timeout=timeout, tool=tool, **kw)


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- images ------------------------------------------------------------------

def pause_binary(bin_dir, run_dir):
    """berth's static pause program from its build (the newest of
    target/release/build/berth-cri-*/out/pause), else compiled here from
    manager/cri/pause/pause.c as build.rs does."""
    found = sorted(glob.glob(f"{bin_dir}/build/berth-cri-*/out/pause"), key=os.path.getmtime)
    if found:
        return found[-1]
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "manager/cri/pause/pause.c")
    out = f"{run_dir}/pause"
    run(["cc", "-static", "-Os", "-s", "-o", out, src])
    return out


def pause_layout(binary, layout):
    """The pause image as berth makes it (manager/cri/src/pause.rs), in an OCI
    layout under the ref name `bench`."""
    with open(binary, "rb") as f:
        data = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        ti = tarfile.TarInfo("pause")
        ti.size, ti.mode, ti.mtime = len(data), 0o755, 0
        t.addfile(ti, io.BytesIO(data))
    layer = buf.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    os.makedirs(f"{layout}/blobs/sha256")
    for b in (layer, config, manifest):
        with open(f"{layout}/blobs/sha256/{sha256(b)[7:]}", "wb") as f:
            f.write(b)
    with open(f"{layout}/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(f"{layout}/index.json", "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, f)
    return sha256(manifest)


def start_registry(d, run_dir):
    for attempt in range(3):
        port = free_port()
        cfg = f"{run_dir}/registry.yml"
        with open(cfg, "w") as f:
            f.write("version: 0.1\n"
                    "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {run_dir}/registry\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n")
        p = d.start("registry", ["docker-registry", "serve", cfg])

        def up():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
                return r.status == 200
        try:
            wait_until("docker-registry", up, d, "registry", p, timeout=15)
            return f"127.0.0.1:{port}"
        except Failed:
            d.stop_named("registry")
            if attempt == 2:
                raise
    return None


def push(layout, name, dest):
    run(["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests",
         "--dest-tls-verify=false", f"oci:{layout}:{name}", f"docker://{dest}"], timeout=300)


# --- the CNI network, iptables -------------------------------------------------

def write_conflist(conf_dir, ipam_dir):
    os.makedirs(conf_dir)
    with open(f"{conf_dir}/10-{NETWORK}.conflist", "w") as f:
        json.dump({
            "cniVersion": "1.0.0", "name": NETWORK,
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ipam_dir}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ]}, f, indent=1)


def iptables_lines():
    """iptables-save lines (any table) that name this benchmark's network or
    subnet: CNI writes `name: "bcribench" id: ...` comments on its rules."""
    p = subprocess.run(["iptables-save"], capture_output=True, text=True)
    out, table = [], None
    for ln in p.stdout.splitlines():
        if ln.startswith("*"):
            table = ln[1:]
        elif NETWORK in ln or SUBNET in ln:
            out.append((table, ln))
    return out


def iptables_cleanup():
    """Deletes rules that still name the network (CNI DEL should have), then
    the CNI-* chains they jumped to when empty and unreferenced."""
    lines = iptables_lines()
    chains = set()
    for table, ln in lines:
        if not ln.startswith("-A "):
            continue
        args = shlex.split(ln)
        if "-j" in args:
            target = args[args.index("-j") + 1]
            if target.startswith("CNI-"):
                chains.add((table, target))
        subprocess.run(["iptables", "-t", table, "-D", *args[1:]], capture_output=True)
    for table, chain in sorted(chains):
        subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
        subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)
    return lines


def link_exists(name):
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


# --- daemons -----------------------------------------------------------------

class Berth:
    name = "berth"

    def __init__(self, run_dir, bin_dir):
        self.run_dir = run_dir
        self.bin = f"{bin_dir}/berth"
        self.runtime = f"{bin_dir}/berth-runtime"
        self.root = f"{run_dir}/berth-root"
        self.state = f"{run_dir}/berth-state"
        self.api_sock = f"{self.state}/berth.sock"
        self.sock = f"{self.state}/cri.sock"
        self.runtime_root = f"{self.state}/runtime/{CRI_NS}"
        env = dict(os.environ, BERTH_LOG=os.environ.get("BENCH_BERTH_LOG", "warn"))
        env.pop("BERTH_ADDRESS", None)
        env.pop("BERTH_NAMESPACE", None)
        self.env = env
        self.pid = None

    def start(self, d, registry, conf_dir):
        config = f"{self.run_dir}/berth.toml"
        with open(config, "w") as f:
            f.write(f'[registry]\ninsecure = ["{registry}"]\n'
                    f'[cri]\ncni_conf_dir = "{conf_dir}"\ncni_bin_dirs = ["{CNI_BIN}"]\n')
        p = d.start("berth", [self.bin, "serve", "--config", config, "--root", self.root,
                              "--state", self.state], env=self.env)
        self.pid = p.pid
        wait_until("berth serve", lambda: os.path.exists(self.sock) and run(
            [self.bin, "--address", self.api_sock, "version"], check=False,
            env=self.env).returncode == 0, d, "berth", p)

    def version(self):
        p = run([self.bin, "--address", self.api_sock, "version"], env=self.env)
        return " / ".join(p.stdout.split("\n")).strip(" /")

    def shims(self):
        return [p for p in pids_naming(self.run_dir)
                if os.path.basename((cmdline(p) or [""])[0]) == "berth-shim"]

    def runtime_cleanup(self):
        if not os.path.isdir(self.runtime_root):
            return []
        ids = run([self.runtime, "--root", self.runtime_root, "list", "-q"], check=False,
                  timeout=30).stdout.split()
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
        self.cfg = f"{self.base}/containerd.toml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        self.pid = None

    def start(self, d, registry, conf_dir):
        certs = f"{self.base}/certs.d"
        os.makedirs(f"{certs}/{registry}", exist_ok=True)
        with open(f"{certs}/{registry}/hosts.toml", "w") as f:
            f.write(f'server = "http://{registry}"\n'
                    f'[host."http://{registry}"]\n  capabilities = ["pull", "resolve"]\n')
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        with open(self.cfg, "w") as f:
            f.write(f'version = 2\nroot = "{self.root}"\nstate = "{self.state}"\n'
                    f'[grpc]\n  address = "{self.sock}"\n'
                    f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
                    f'[{cri}]\n'
                    f'  sandbox_image = "{registry}/bench/pause:bench"\n'
                    '  netns_mounts_under_state_dir = true\n'
                    '  enable_selinux = false\n'
                    # The machine's root lacks CAP_SYS_RESOURCE: the -998
                    # containerd gives a pod's infra process cannot be set
                    # (runc fails at it); clamped to containerd's own (0).
                    '  restrict_oom_score_adj = true\n'
                    # Its defaults, said: the streaming server (Exec's URL)
                    # on 127.0.0.1, a free port.
                    '  stream_server_address = "127.0.0.1"\n'
                    '  stream_server_port = "0"\n'
                    f'[{cri}.containerd]\n  snapshotter = "overlayfs"\n'
                    '  default_runtime_name = "runc"\n'
                    f'[{cri}.containerd.runtimes.runc]\n'
                    '  runtime_type = "io.containerd.runc.v2"\n'
                    f'[{cri}.containerd.runtimes.runc.options]\n'
                    '  BinaryName = "runc"\n'
                    f'  Root = "{self.runc_root}"\n  SystemdCgroup = false\n'
                    f'[{cri}.cni]\n  bin_dir = "{CNI_BIN}"\n  conf_dir = "{conf_dir}"\n'
                    '  max_conf_num = 1\n'
                    f'[{cri}.registry]\n  config_path = "{certs}"\n')
        p = d.start("containerd", ["containerd", "--config", self.cfg], env=self.env)
        self.pid = p.pid
        wait_until("containerd", lambda: os.path.exists(self.sock) and run(
            ["ctr", "--address", self.sock, "version"], check=False,
            env=self.env).returncode == 0, d, "containerd", p)

    def version(self):
        return run(["containerd", "--version"]).stdout.strip()

    def shims(self):
        return [p for p in pids_naming(self.sock)
                if os.path.basename((cmdline(p) or [""])[0]) == "containerd-shim-runc-v2"]

    def runtime_cleanup(self):
        root = f"{self.runc_root}/{CRI_NS}"
        if not os.path.isdir(root):
            return []
        ids = run(["runc", "--root", root, "list", "-q"], check=False, timeout=30).stdout.split()
        for cid in ids:
            run(["runc", "--root", root, "delete", "-f", cid], check=False, timeout=30)
        return ids

    def shim_sockets(self):
        """The sockets containerd 1.6 put in /run/containerd/s for this run's
        shims (each bundle's `address` file names its shim's)."""
        out = []
        tasks = f"{self.state}/io.containerd.runtime.v2.task/{CRI_NS}"
        for cid in os.listdir(tasks) if os.path.isdir(tasks) else []:
            try:
                with open(f"{tasks}/{cid}/address") as f:
                    addr = f.read().strip().removeprefix("unix://")
            except OSError:
                continue
            if addr.startswith(CTD_SHIM_SOCKETS + "/"):
                out.append(addr)
        return out


class Session:
    """A berth-cri-bench session on one CRI socket: one command a line in,
    one JSON line out."""

    def __init__(self, tool, bench_bin, run_dir, token, image, stream):
        self.tool = tool
        logf = open(f"{run_dir}/client-{tool.name}.log", "ab")
        self.p = subprocess.Popen(
            [bench_bin, "--socket", tool.sock, "--image", image, "--prefix", f"{token}-{tool.name}",
             "--log-dir", f"{run_dir}/logs/{tool.name}",
             "--cgroup-parent", f"/{CG_PREFIX}{token}/{tool.name}", "--stream", stream,
             "session"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, text=True,
            start_new_session=True)
        logf.close()
        self.log = f"{run_dir}/client-{tool.name}.log"

    def call(self, cmd, timeout=CALL_TIMEOUT):
        if self.p.poll() is not None:
            raise Failed(self.tool.name, f"berth-cri-bench on {self.tool.name} exited "
                         f"({self.p.returncode}): {open(self.log).read()[-2000:]}")
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            raise Failed(self.tool.name, f"{self.tool.name}: `{cmd}` got no answer in {timeout}s")
        line = self.p.stdout.readline()
        if not line:
            raise Failed(self.tool.name, f"berth-cri-bench on {self.tool.name} closed its output "
                         f"on `{cmd}`: {open(self.log).read()[-2000:]}")
        v = json.loads(line)
        if not v.get("ok"):
            raise Failed(self.tool.name, f"{self.tool.name}: `{cmd}` failed: {v.get('error')}")
        return v

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.flush()
                self.p.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()


# --- the run -----------------------------------------------------------------

def my_cgroups(token):
    return [os.path.join(h, CG_PREFIX + token) for h in cgroup_hierarchies()
            if os.path.isdir(os.path.join(h, CG_PREFIX + token))]


class Run:
    def __init__(self, run_dir, token, bin_dir):
        self.dir = run_dir
        self.token = token
        self.bin_dir = bin_dir
        self.d = Daemons(run_dir)
        self.berth = Berth(run_dir, bin_dir)
        self.ctd = Containerd(run_dir)
        self.tools = [self.berth, self.ctd]
        self.sessions = {}
        self.made_bridge = False

    def cleanup(self):
        log("cleanup:")
        if os.environ.get("BENCH_KEEP_LOG"):
            shutil.copy(f"{self.dir}/berth.log", os.environ["BENCH_KEEP_LOG"])
        # A fresh client each: a session cut short by Ctrl-C may still owe
        # an answer.
        for s in self.sessions.values():
            s.close()
        for t in self.tools:
            if t.pid is None or not os.path.exists(t.sock):
                continue
            p = run([f"{self.bin_dir}/berth-cri-bench", "--socket", t.sock, "--prefix",
                     f"{self.token}-{t.name}", "down"], check=False, timeout=300)
            try:
                v = json.loads(p.stdout.splitlines()[-1])
            except (IndexError, ValueError):
                v = {"ok": False, "error": p.stdout + p.stderr}
            if not v.get("ok"):
                log(f"  note: {t.name}: removing pods through the CRI failed: {v.get('error')}")
            elif v["removed"]:
                log(f"  {t.name}: removed {v['removed']} pods left through the CRI")
        sockets = self.ctd.shim_sockets()
        self.d.stop_all()
        for t in self.tools:
            left = t.runtime_cleanup()
            if left:
                log(f"  {t.name}: the runtime still had {left}: deleted them")
        stray = sorted({p for cg in my_cgroups(self.token) for p in cgroup_procs(cg)})
        if stray:
            log(f"  killing {len(stray)} processes left in this run's cgroups")
            kill_pids(stray, "container processes")
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
        rules = iptables_cleanup()
        if rules:
            log(f"  deleted {len(rules)} iptables lines naming {NETWORK} that CNI DEL left: "
                + "; ".join(ln for _, ln in rules[:5]))
        if self.made_bridge and link_exists(BRIDGE):
            run(["ip", "link", "del", BRIDGE], check=False)
            log(f"  removed the bridge {BRIDGE}")
        gone = [cg for cg in my_cgroups(self.token) if rmdir_cgroup(cg)]
        if gone:
            log(f"  removed the run's cgroup {CG_PREFIX}{self.token} in {len(gone)} hierarchies")
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.verify()

    def verify(self):
        problems = []
        hits = [f"{p} {' '.join(cmdline(p))}" for p in pids_naming(self.dir)]
        if hits:
            problems.append(f"processes: {hits}")
        if mounts_under(self.dir):
            problems.append(f"mounts: {mounts_under(self.dir)}")
        if my_cgroups(self.token):
            problems.append(f"cgroups: {my_cgroups(self.token)}")
        rules = iptables_lines()
        if rules:
            problems.append(f"iptables: {rules}")
        if self.made_bridge and link_exists(BRIDGE):
            problems.append(f"bridge {BRIDGE}")
        if os.path.exists(self.dir):
            problems.append(f"run dir {self.dir}")
        if problems:
            log("  LEFT OVER: " + "; ".join(problems))
        else:
            log(f"  nothing of the run is left (no process naming {self.dir}, no mount under it, "
                f"no cgroup {CG_PREFIX}{self.token}, no iptables rule naming {NETWORK} or "
                f"{SUBNET}, no bridge {BRIDGE})")
        return not problems


def reap_stale(workdir, bin_dir):
    """Cleans what an earlier run killed with SIGKILL left in WORKDIR/run.*.
    Called with the work dir's lock held, so no live run owns any of them."""
    stale = [n for n in os.listdir(workdir)
             if n.startswith("run.") and os.path.isdir(os.path.join(workdir, n))]
    for name in stale:
        run_dir = os.path.join(workdir, name)
        token = name[len("run."):]
        log(f"cleaning stale {run_dir}")
        sockets = Containerd(run_dir).shim_sockets()
        for t in (Berth(run_dir, bin_dir), Containerd(run_dir)):
            t.runtime_cleanup()
        kill_pids(pids_naming(run_dir), "stale processes")
        cgs = my_cgroups(token)
        kill_pids(sorted({p for cg in cgs for p in cgroup_procs(cg)}), "stale container processes")
        for s in sockets:
            if os.path.exists(s):
                os.unlink(s)
        unmount_under(run_dir)
        for cg in cgs:
            rmdir_cgroup(cg)
        shutil.rmtree(run_dir, ignore_errors=True)
    if stale:
        iptables_cleanup()
        if link_exists(BRIDGE):
            run(["ip", "link", "del", BRIDGE], check=False)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20,
                    help="timed pod cycles per daemon (default %(default)s)")
    ap.add_argument("--pods", type=int, default=10,
                    help="pods of one container per daemon for the memory measure "
                         "(default %(default)s)")
    ap.add_argument("--stream", choices=("ws", "spdy"), default="ws",
                    help="the streamed exec's protocol, v4.channel.k8s.io over WebSocket or "
                         "SPDY/3.1 (default %(default)s)")
    ap.add_argument("--workdir", default="/var/tmp/berth-bench-cri",
                    help="parent of the run dir (default %(default)s)")
    ap.add_argument("--bin-dir", default="target/release",
                    help="berth, berth-shim, berth-runtime, berth-fixtures and berth-cri-bench "
                         "(default %(default)s)")
    a = ap.parse_args()
    if a.rounds < 1 or a.pods < 1:
        ap.error("--rounds and --pods must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench-cri needs root (pods: namespaces, cgroups, mounts, iptables)")
    for tool in ("containerd", "ctr", "runc", "containerd-shim-runc-v2", "docker-registry",
                 "skopeo", "iptables-save", "ip"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: scripts/install-deps bench")
    for plugin in ("bridge", "host-local", "portmap", "loopback"):
        if not os.access(f"{CNI_BIN}/{plugin}", os.X_OK):
            sys.exit(f"{CNI_BIN}/{plugin} missing: apt-get install containernetworking-plugins")
    bin_dir = os.path.abspath(a.bin_dir)
    for b in ("berth", "berth-shim", "berth-runtime", "berth-fixtures", "berth-cri-bench"):
        if not os.access(f"{bin_dir}/{b}", os.X_OK):
            sys.exit(f"{bin_dir}/{b} missing: cargo build --release --workspace")
    workdir = os.path.abspath(a.workdir)
    # Ctrl-C raises KeyboardInterrupt even when started in the background
    # of a shell without job control (which ignores SIGINT for it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    lock = lock_workdir(workdir, "bench-cri")  # held for the run
    reap_stale(workdir, bin_dir)
    if link_exists(BRIDGE) or iptables_lines():
        sys.exit(f"the bridge {BRIDGE} or iptables rules naming {NETWORK}/{SUBNET} exist outside "
                 "of any run of this benchmark: remove them first")
    token = secrets.token_hex(3)
    run_dir = os.path.join(workdir, f"run.{token}")
    os.mkdir(run_dir, 0o700)
    r = Run(run_dir, token, bin_dir)
    r.made_bridge = True  # it did not exist (checked above): whoever makes it, it is the run's
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
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        clean = r.cleanup()
        lock.close()
    if not clean and code == 0:
        code = 2
    return code


def summary(xs):
    return {"median": statistics.median(xs), "p90": pct(xs, 90), "min": min(xs), "max": max(xs)}


def bench(a, r, bin_dir):
    d, tools = r.d, r.tools
    log(f"run dir {r.dir} (pods {r.token}-TOOL-*, cgroups /{CG_PREFIX}{r.token}/TOOL)")

    # 1. Images in a private registry.
    t0 = time.monotonic()
    out = run([f"{bin_dir}/berth-fixtures", "images", f"{r.dir}/images"]).stdout
    digests = dict(ln.split("\t") for ln in out.splitlines() if "\t" in ln)
    pause_bin = pause_binary(bin_dir, r.dir)
    pause_digest = pause_layout(pause_bin, f"{r.dir}/pause")
    registry = start_registry(d, r.dir)
    image = f"{registry}/bench/busybox:latest"
    push(f"{r.dir}/images", "busybox", image)
    push(f"{r.dir}/pause", "bench", f"{registry}/bench/pause:bench")
    log(f"registry {registry}: busybox {digests['busybox']}, pause {pause_digest} "
        f"(from {pause_bin}) in {time.monotonic() - t0:.1f} s")

    # 2. The network and the daemons.
    conf_dir = f"{r.dir}/net.d"
    write_conflist(conf_dir, f"{r.dir}/ipam")
    versions = {}
    for t in tools:
        t0 = time.monotonic()
        t.start(d, registry, conf_dir)
        versions[t.name] = t.version()
        log(f"{t.name} up in {time.monotonic() - t0:.2f} s (pid {t.pid}): {versions[t.name]}")
    versions["runc"] = run(["runc", "--version"]).stdout.splitlines()[0]
    log(f"  {versions['runc']} (containerd's io.containerd.runc.v2)")

    # 3. Clients, pulls, warm-up.
    for t in tools:
        r.sessions[t.name] = Session(t, f"{bin_dir}/berth-cri-bench", r.dir, r.token, image,
                                     a.stream)
    for t in tools:
        v = r.sessions[t.name].call("pull")
        log(f"{t.name}: PullImage {image} in {v['ms']:.0f} ms -> {v['image_ref']}")
    time.sleep(1)
    idle = {t.name: smaps(t.pid) for t in tools}
    if os.environ.get("BENCH_SMAPS_DUMP"):
        shutil.copy(f"/proc/{r.berth.pid}/smaps", os.environ["BENCH_SMAPS_DUMP"] + ".idle")
    warm = {}
    for t in tools:
        v = r.sessions[t.name].call("cycle warm")
        warm[t.name] = v
        if v["exec_exit"]:
            raise Failed(t.name, f"{t.name}: warm-up ExecSync `true` in {v['exec_container']} "
                         f"exited {v['exec_exit']}: {v['exec_output']!r}")
        if not v["exec_stream_ok"]:
            raise Failed(t.name, f"{t.name}: warm-up streamed Exec `true` ({a.stream}) in "
                         f"{v['exec_container']} gave status {v['exec_stream_status']!r}")
        log(f"{t.name}: warm-up cycle: RunPodSandbox {v['runp_ms']:.0f} ms (first pod: "
            f"{'pulls the pause image' if t.name == 'containerd' else 'makes its pause image'}), "
            f"create+start {v['create_start_ms']:.0f} ms, ExecSync {v['exec_ms']:.0f} ms, "
            f"Exec streamed ({a.stream}) {v['exec_stream_ms']:.0f} ms, "
            f"teardown {v['teardown_ms']:.0f} ms")

    busy = host_busy()
    log(f"CPU busy in the 2 s before the rounds: {busy:.0%} of {os.cpu_count()} CPUs")
    if busy > 0.1:
        log("  note: something else is running; times will be noisy")

    # 4. Latency.
    log(f"latency: {a.rounds} rounds of a pod cycle per daemon, interleaved, order alternating")
    res = {t.name: [] for t in tools}
    for i in range(a.rounds):
        order = tools if i % 2 == 0 else tools[::-1]
        line = []
        for t in order:
            v = r.sessions[t.name].call(f"cycle r{i}")
            res[t.name].append(v)
            bad = f" (exit {v['exec_exit']})" if v["exec_exit"] else ""
            sbad = "" if v["exec_stream_ok"] else f" ({v['exec_stream_status']!r})"
            line.append(f"{t.name} runp {v['runp_ms']:5.1f} c+s {v['create_start_ms']:5.1f} "
                        f"exec {v['exec_ms']:5.1f}{bad} stream {v['exec_stream_ms']:5.1f}{sbad} "
                        f"down {v['teardown_ms']:5.1f}")
        log(f"  round {i + 1:2}: " + " | ".join(line))
    log(f"CPU busy in the 2 s after the rounds: {host_busy():.0%}")

    # 5. Memory.
    n = a.pods
    log(f"memory: {n} pods of one `sleep 1000` container per daemon, alternating pod by pod")
    up_ms = {t.name: [] for t in tools}
    for i in range(n):
        for t in (tools if i % 2 == 0 else tools[::-1]):
            up_ms[t.name] += r.sessions[t.name].call("up 1")["ms"]
    time.sleep(2)
    rules_up = len(iptables_lines())
    log(f"  iptables lines naming {NETWORK}/{SUBNET} with {2 * n} pods up: {rules_up}")
    mem = {}
    for t in tools:
        shims = t.shims()
        mem[t.name] = {"daemon": smaps(t.pid), "shims": mem_sum(shims)}
    if os.environ.get("BENCH_SMAPS_DUMP"):
        shutil.copy(f"/proc/{r.berth.pid}/smaps", os.environ["BENCH_SMAPS_DUMP"] + ".pods")
    removal = {}
    for t in tools:
        v = r.sessions[t.name].call("down")
        removal[t.name] = v["ms"]
        if v["removed"] != n:
            raise Failed(t.name, f"{t.name}: down removed {v['removed']} pods, expected {n}")
    time.sleep(0.5)
    left_rules = iptables_lines()
    log("removed through the CRI: " + ", ".join(
        f"{t.name} {removal[t.name] / 1e3:.2f} s ({len(t.shims())} shims left)" for t in tools)
        + f"; iptables lines naming {NETWORK}/{SUBNET} after: {len(left_rules)}")

    # 6. Results.
    log("")
    log(f"CRI latency, {a.rounds} rounds (ms, timed in the client, one connection per daemon; "
        f"streamed exec over {a.stream})")
    log(f"{'call':<34}{'tool':<12}{'median':>8}{'p90':>8}{'min':>8}{'max':>8}")
    stats = {}
    for key, label in OPS:
        stats[key] = {}
        for t in tools:
            s = summary([v[key] for v in res[t.name]])
            stats[key][t.name] = s
            log(f"{label:<34}{t.name:<12}{s['median']:>8.1f}{s['p90']:>8.1f}{s['min']:>8.1f}"
                f"{s['max']:>8.1f}")
    exec_failed = {t.name: [{"round": i + 1, "exit": v["exec_exit"], "output": v["exec_output"],
                             "container": v["exec_container"]}
                            for i, v in enumerate(res[t.name]) if v["exec_exit"]] for t in tools}
    for t in tools:
        if exec_failed[t.name]:
            f = exec_failed[t.name][0]
            log(f"  {t.name}: ExecSync `true` exited non-zero in {len(exec_failed[t.name])} of "
                f"{a.rounds} rounds (first: round {f['round']}, exit {f['exit']}, output "
                f"{f['output']!r}, container {f['container']}); their times are counted")
    stream_failed = {t.name: [{"round": i + 1, "status": v["exec_stream_status"]}
                              for i, v in enumerate(res[t.name]) if not v["exec_stream_ok"]]
                     for t in tools}
    for t in tools:
        if stream_failed[t.name]:
            f = stream_failed[t.name][0]
            log(f"  {t.name}: the streamed Exec `true` gave no Success status in "
                f"{len(stream_failed[t.name])} of {a.rounds} rounds (first: round {f['round']}, "
                f"{f['status']!r}); their times are counted")
    ratios = {k: stats[k]["containerd"]["median"] / stats[k]["berth"]["median"] for k, _ in OPS}
    log("containerd/berth (medians; >1 means berth is faster, target >= 2): " + ", ".join(
        f"{label.strip()} {ratios[k]:.2f}x" for k, label in OPS))
    log("")
    log(f"memory with {n} pods of one container each (MiB, smaps_rollup)")
    log(f"{'tool':<12}{'idle PSS':>9}{'daemon RSS':>11}{'daemon PSS':>11}{'shims':>6}"
        f"{'shims RSS':>10}{'shims PSS':>10}{'total PSS':>10}{'start s':>8}")
    totals = {}
    for t in tools:
        m = mem[t.name]
        tot = m["daemon"]["Pss"] + m["shims"]["pss_kb"]
        totals[t.name] = tot
        log(f"{t.name:<12}{mib(idle[t.name]['Pss']):>9.1f}{mib(m['daemon']['Rss']):>11.1f}"
            f"{mib(m['daemon']['Pss']):>11.1f}{m['shims']['n']:>6}{mib(m['shims']['rss_kb']):>10.1f}"
            f"{mib(m['shims']['pss_kb']):>10.1f}{mib(tot):>10.1f}{sum(up_ms[t.name]) / 1e3:>8.2f}")
    mratio = totals["containerd"] / totals["berth"]
    log(f"containerd/berth total PSS (daemon + shims): {mratio:.2f}x  (target >= 3: berth at most "
        "a third)")
    print(json.dumps({
        "rounds": a.rounds, "pods": n, "versions": versions, "image": image,
        "latency_ms": {t.name: [{k: v[k] for k, _ in OPS} for v in res[t.name]] for t in tools},
        "latency": stats,
        "exec_nonzero": exec_failed,
        "stream_protocol": a.stream,
        "exec_stream_not_success": stream_failed,
        "containerd_over_berth": {k: round(v, 3) for k, v in ratios.items()},
        "warmup": {k: {kk: v[kk] for kk, _ in OPS} for k, v in warm.items()},
        "idle_daemon_kb": idle,
        "memory_kb": mem,
        "total_pss_kb": totals,
        "total_pss_containerd_over_berth": round(mratio, 3),
        "up_ms": up_ms,
        "removal_ms": removal,
        "iptables_lines": {"pods_up": rules_up, "after_removal": len(left_rules)},
    }), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
