#!/usr/bin/env python3
"""Image pull+unpack throughput of berth's manager against Debian's
containerd (`ctr image pull`), from the same local registry, cold each time,
each pull on a fresh filesystem.

Run it through scripts/bench-pull, which builds target/release/berth and
runs this in a private mount namespace. What it does:

1. Builds (once; cached in WORKDIR/layout) an OCI image layout of about
   200 MB unpacked in 5 gzip layers and ~18k entries from the host's own
   files (bench/bigimage.py), and prints its sizes.
2. Starts Debian's docker-registry on a free 127.0.0.1 port with its storage
   in a temporary run dir (WORKDIR/run.*), and pushes the layout to it with
   `skopeo copy --preserve-digests` as 127.0.0.1:PORT/bench/big:latest.
3. Each round, berth then containerd (interleaved, so machine noise hits
   both alike), each pull on a fresh filesystem: a sparse image file
   (--fs-size, default 3G) in the run dir is formatted with `mkfs.ext4`'s
   defaults (with a journal, as a normal host has; --no-fs-journal formats it
   without) and loop-mounted at RUN/fs-TOOL; the tool's daemon is started
   with its root on it (`berth serve --root`, containerd's `root`; sockets
   and state stay in the run dir; containerd's CRI plugin is disabled; never
   the system ones). Its stores are checked empty, both filesystems are
   synced (so earlier writeback is not charged to this pull), then the CLI
   pull is timed end to end: `berth pull --plain-http REF --json` and
   `ctr image pull --plain-http REF`; both fetch and unpack into overlayfs.
   The clock is also read after a syncfs of the tool's filesystem that
   follows the pull ("+syncfs"): berth syncs the unpacked files before it
   commits them, containerd 1.6 does not, so that column compares equal
   durability (the loop device passes the flush on to the image file). Each
   pull is then checked (image present and unpacked), the daemon stopped and
   the filesystem unmounted (which detaches its loop device) and deleted.
   The page cache is not dropped: the registry's blobs are read from memory,
   so this measures the puller, not the network.
   Why a fresh filesystem: on an ext4 without a journal (this benchmark's
   first host) the inode allocator skips every recently freed inode after
   reading its inode-table block (find_inode_bit -> recently_deleted), so
   creating ~18k files right after earlier rounds deleted ~36k was several
   times slower, by an amount that depended on the filesystem's history, not
   on the tool (the same berth pull: 0.87 s on a fresh root, 2.5-4.5 s after
   churn). --reuse-fs keeps the old method for comparison: both daemons
   started once, roots in the run dir on the host's filesystem, and each
   round first removes the image and everything it left (berth: rmi + gc;
   containerd: image rm --sync, then content/snapshot leftovers).
4. Prints median and min seconds, MB/s (1 MB = 10^6 bytes) of unpacked
   bytes (the uncompressed layer tars) and of compressed bytes (what crosses
   the wire), the median CPU seconds the pull cost (the CLI process plus the
   daemon, from rusage and /proc/PID/stat; the registry's and the kernel
   workers' shares are left out), the median "+syncfs" seconds, and
   containerd seconds / berth seconds (>1: berth is faster), plain and with
   the syncfs.

Everything started is stopped, every loop mount unmounted and its loop
device detached, and the run dir removed on exit, Ctrl-C or failure;
WORKDIR/layout stays unless --clean.
"""
import argparse
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bigimage  # noqa: E402
from common import Daemons, host_busy, lock_workdir, log, mounts_under, run, unmount_under, wait_until  # noqa: E402

NS = "bench"
REPO = "bench/big"
SNAPSHOTTER = "overlayfs"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_bytes(path):
    """Apparent size of the regular files under path."""
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(d, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(d, f)):
                total += st.st_size
    return total


def loops_under(path):
    """Loop devices (host-wide) whose backing file is at or under path."""
    out = []
    prefix = path.rstrip("/") + "/"
    for dev in sorted(os.listdir("/sys/block")):
        try:
            with open(f"/sys/block/{dev}/loop/backing_file") as f:
                backing = f.read().strip()
        except OSError:
            continue
        backing = backing.removesuffix(" (deleted)")
        if backing == path or backing.startswith(prefix):
            out.append(f"/dev/{dev}")
    return out


def detach_loops_under(path, wait=3.0):
    """Detaches what loop devices are left backed by files under path. A loop
    mount (`mount -o loop`) detaches its device itself when it is unmounted;
    this waits a moment for that, then detaches by hand (a device still in
    use is only flagged to detach when released)."""
    deadline = time.monotonic() + wait
    while loops_under(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = loops_under(path)
    for dev in left:
        subprocess.run(["losetup", "-d", dev], capture_output=True)
    return left


def reap_stale(workdir):
    """Stops what an earlier, killed run left in WORKDIR/run.*: only processes
    whose command line names that run dir, by pid, then what loop devices its
    image files still back. Called with the work dir's lock held, so no live
    run owns any of them."""
    for name in os.listdir(workdir):
        run_dir = os.path.join(workdir, name)
        if not name.startswith("run.") or not os.path.isdir(run_dir):
            continue
        piddir = os.path.join(run_dir, "pids")
        for pf in os.listdir(piddir) if os.path.isdir(piddir) else []:
            try:
                pid = int(open(os.path.join(piddir, pf)).read())
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except (OSError, ValueError):
                continue
            if run_dir in cmd:
                log(f"stopping stale {pf} (pid {pid}) of {run_dir}")
                os.kill(pid, signal.SIGKILL)
        unmount_under(run_dir)
        # Its loop mounts lived in its own mount namespace, which goes away
        # with its last process; their devices then detach themselves.
        left = detach_loops_under(run_dir)
        if left:
            log(f"detached stale loop devices {left} of {run_dir}")
        shutil.rmtree(run_dir, ignore_errors=True)


def start_registry(d, run_dir):
    for attempt in range(3):
        port = free_port()
        data = f"{run_dir}/registry"
        cfg = f"{run_dir}/registry.yml"
        with open(cfg, "w") as f:
            f.write("version: 0.1\n"
                    "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {data}\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n")
        p = d.start("registry", ["docker-registry", "serve", cfg])

        def up():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
                return r.status == 200
        try:
            wait_until("docker-registry", up, d, "registry", p, timeout=15)
            return f"127.0.0.1:{port}"
        except RuntimeError:
            d.stop_named("registry")
            if attempt == 2:
                raise


def fs_used(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class FreshFs:
    """A sparse image file RUN/fs-NAME.img, formatted ext4 and loop-mounted
    at RUN/fs-NAME; made anew for every pull."""

    def __init__(self, run_dir, name, size, journal):
        self.img = f"{run_dir}/fs-{name}.img"
        self.mnt = f"{run_dir}/fs-{name}"
        self.size = size
        self.mkfs = ["mkfs.ext4", "-q", "-F"] + ([] if journal else ["-O", "^has_journal"])
        self.base_used = 0
        self.summary = None  # of the first one made

    def create(self):
        """Makes and mounts the filesystem; returns the tool's root on it."""
        self.destroy()
        run(["truncate", "-s", self.size, self.img])
        run(self.mkfs + [self.img])
        if self.summary is None:
            self.summary = ext4_summary(self.img)
        os.makedirs(self.mnt)
        run(["mount", "-t", "ext4", "-o", "loop", self.img, self.mnt])
        self.base_used = fs_used(self.mnt)
        return f"{self.mnt}/root"

    def used(self):
        """Bytes allocated on it since it was made."""
        return fs_used(self.mnt) - self.base_used

    def destroy(self):
        """Unmounts it (overlay leftovers first), detaches its loop device and
        deletes it; the daemon using it must be stopped."""
        left = unmount_under(self.mnt)
        if mounts_under(self.mnt):
            raise RuntimeError(f"could not unmount {mounts_under(self.mnt)}")
        stray = [mp for mp in left if mp != self.mnt]
        if stray:
            log(f"  note: unmounted {len(stray)} leftover mounts under {self.mnt}: {stray}")
        loops = detach_loops_under(self.img)
        if loops:
            log(f"  note: {loops} stayed attached to {self.img} after umount: detached")
        if os.path.isdir(self.mnt):
            os.rmdir(self.mnt)
        if os.path.exists(self.img):
            os.unlink(self.img)


def ext4_summary(dev):
    """'features ...; journal N' of an ext4 device or image, from dumpe2fs -h."""
    p = run(["dumpe2fs", "-h", dev], check=False)
    info = {}
    for ln in p.stdout.splitlines():
        k, sep, v = ln.partition(":")
        if sep:
            info[k.strip()] = v.strip()
    feats = info.get("Filesystem features", "?").split()
    journal = ("journal " + info.get("Total journal size", info.get("Journal size", "?"))
               if "has_journal" in feats else "NO journal")
    return f"{journal}; features {' '.join(feats)}"


def host_fs(path):
    """Source, type, options and (for ext4) journal of the filesystem holding path."""
    p = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", path], check=False)
    fields = p.stdout.split()
    if len(fields) < 3:
        return "?"
    src, fstype, opts = fields[:3]
    desc = f"{src} {fstype} ({opts})"
    if fstype == "ext4" and src.startswith("/dev/"):
        desc += ", " + ext4_summary(src).split(";")[0]
    return desc


class Berth:
    name = "berth"

    def __init__(self, run_dir, binary, config=None):
        self.bin = binary
        self.root = f"{run_dir}/berth-root"
        self.state = f"{run_dir}/berth-state"
        self.sock = f"{self.state}/berth.sock"
        env = dict(os.environ, BERTH_LOG="warn")
        env.pop("BERTH_ADDRESS", None)
        env.pop("BERTH_NAMESPACE", None)
        self.env = env
        self.extra = ["--config", config] if config else []
        self.pid = None

    def start(self, d, root=None):
        """Starts `berth serve` with a fresh state dir and its root at root
        (default: RUN/berth-root)."""
        self.root = root or self.root
        unmount_under(self.state)
        shutil.rmtree(self.state, ignore_errors=True)
        p = d.start("berth", [self.bin, "serve", "--root", self.root, "--state", self.state]
                    + self.extra, env=self.env)
        wait_until("berth serve", lambda: os.path.exists(self.sock)
                   and self.cli("version", check=False).returncode == 0, d, "berth", p)
        self.pid = p.pid
        mode = os.stat(self.sock).st_mode & 0o777
        if mode != 0o600:
            log(f"note: {self.sock} has mode {mode:o}, not 600")

    def stop(self, d):
        d.stop_named("berth")

    def cli(self, *args, check=True):
        return run([self.bin, "--address", self.sock, "-n", NS, *args], check=check, env=self.env)

    def version(self):
        return " / ".join(self.cli("version").stdout.split("\n")).strip(" /")

    def make_cold(self, ref):
        p = self.cli("rmi", ref, check=False)
        if p.returncode != 0 and "not found" not in p.stderr:
            raise RuntimeError(f"berth rmi {ref} failed:\n{p.stderr}")
        self.cli("gc", "--json")
        content = json.loads(self.cli("content", "--json").stdout)
        snaps = json.loads(self.cli("snapshots", "--snapshotter", SNAPSHOTTER, "--json").stdout)
        if content or snaps:
            raise RuntimeError(f"berth still has {len(content)} blobs and {len(snaps)} snapshots "
                               "after rmi + gc")
        return tree_bytes(self.root)

    def pull_argv(self, ref):
        return [self.bin, "--address", self.sock, "-n", NS, "pull", "--plain-http", ref, "--json"]

    def verify(self, ref, digest, out):
        got = json.loads(out)
        if got.get("digest") != digest or got.get("unpacked") is not True:
            raise RuntimeError(f"berth pull printed {got}, expected digest {digest}, unpacked")
        imgs = json.loads(self.cli("images", "--json").stdout)
        mine = [i for i in imgs if i.get("digest") == digest]
        if not mine or not all(i.get("unpacked") is True for i in mine):
            raise RuntimeError(f"berth images --json does not show {ref} unpacked: {imgs}")
        snaps = json.loads(self.cli("snapshots", "--snapshotter", SNAPSHOTTER, "--json").stdout)
        return len(snaps)


class Containerd:
    name = "containerd"

    def __init__(self, run_dir):
        self.base = f"{run_dir}/ctd"
        self.root = f"{self.base}/root"
        self.state = f"{self.base}/state"
        self.sock = f"{self.base}/ctd.sock"
        self.cfg = f"{run_dir}/containerd.toml"
        os.makedirs(self.base, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        self.pid = None

    def start(self, d, root=None):
        """Starts containerd with a fresh state dir and its root at root
        (default: RUN/ctd/root)."""
        self.root = root or self.root
        unmount_under(self.state)
        shutil.rmtree(self.state, ignore_errors=True)
        for leftover in (self.sock, self.sock + ".ttrpc"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        with open(self.cfg, "w") as f:
            f.write(f'version = 2\nroot = "{self.root}"\nstate = "{self.state}"\n'
                    f'[grpc]\n  address = "{self.sock}"\n'
                    '[plugins."io.containerd.grpc.v1.cri"]\n  disable = true\n')
        p = d.start("containerd", ["containerd", "--config", self.cfg], env=self.env)
        wait_until("containerd", lambda: os.path.exists(self.sock)
                   and self.ctr("version", check=False).returncode == 0, d, "containerd", p)
        self.pid = p.pid

    def stop(self, d):
        d.stop_named("containerd")

    def ctr(self, *args, check=True):
        return run(["ctr", "--address", self.sock, "-n", NS, *args], check=check, env=self.env)

    def version(self):
        return run(["containerd", "--version"]).stdout.strip()

    def leftovers(self):
        content = self.ctr("content", "ls", "-q").stdout.split()
        snaps = [ln.split() for ln in
                 self.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").stdout.splitlines()[1:]
                 if ln.strip()]
        return content, snaps

    def make_cold(self, ref):
        if ref in self.ctr("image", "ls", "-q").stdout.split():
            self.ctr("image", "rm", "--sync", ref)
        content, snaps = self.leftovers()
        deadline = time.monotonic() + 10
        while (content or snaps) and time.monotonic() < deadline:
            # GC may still be finishing: give it a moment, then remove by hand,
            # snapshots children first.
            time.sleep(0.2)
            content, snaps = self.leftovers()
            if not (content or snaps):
                break
            parents = {s[1] for s in snaps if len(s) > 1}
            leaves = [s[0] for s in snaps if s[0] not in parents]
            if leaves:
                self.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "rm", *leaves, check=False)
            if content and not snaps:
                self.ctr("content", "rm", *content, check=False)
            content, snaps = self.leftovers()
        if content or snaps:
            raise RuntimeError(f"containerd still has {len(content)} blobs and {len(snaps)} "
                               "snapshots after image rm")
        return tree_bytes(self.root)

    def pull_argv(self, ref):
        return ["ctr", "--address", self.sock, "-n", NS, "image", "pull", "--plain-http",
                "--snapshotter", SNAPSHOTTER, ref]

    def verify(self, ref, digest, out):
        # REF TYPE DIGEST STATUS SIZE UNPACKED
        lines = [ln.split() for ln in self.ctr("image", "check").stdout.splitlines()[1:]]
        mine = [ln for ln in lines if ln and ln[0] == ref]
        if not mine or mine[0][2] != digest or "complete" not in mine[0] or mine[0][-1] != "true":
            raise RuntimeError(f"ctr image check does not show {ref} complete and unpacked: {mine}")
        return len(self.leftovers()[1])


LIBC = ctypes.CDLL(None, use_errno=True)


def syncfs(path):
    """Writes back the dirty data of the filesystem holding path."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if LIBC.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")
    finally:
        os.close(fd)


def proc_cpu(pid):
    """CPU seconds (user + system, all threads) a live process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_pull(tool, ref, run_dir, rnd):
    """Runs the pull CLI: wall seconds, wall seconds up to a syncfs after it,
    CPU seconds of client + daemon, output."""
    out_path = f"{run_dir}/{tool.name}-pull-{rnd}.out"
    err_path = f"{run_dir}/{tool.name}-pull-{rnd}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        c0, d0 = children_cpu(), proc_cpu(tool.pid)
        t0 = time.perf_counter()
        p = subprocess.run(tool.pull_argv(ref), stdin=subprocess.DEVNULL, stdout=out,
                           stderr=err, env=tool.env)
        dt = time.perf_counter() - t0
        cpu = children_cpu() - c0 + proc_cpu(tool.pid) - d0
        syncfs(tool.root)
        dt_sync = time.perf_counter() - t0
    with open(out_path, errors="replace") as f:
        text = f.read()
    if p.returncode != 0:
        with open(err_path, errors="replace") as f:
            errors = f.read()
        raise PullFailed(tool.name, f"{' '.join(tool.pull_argv(ref))} exited {p.returncode} "
                         f"after {dt:.2f} s:\n{text[-2000:]}{errors[-4000:]}")
    return dt, dt_sync, cpu, text


class PullFailed(RuntimeError):
    def __init__(self, tool, msg):
        super().__init__(msg)
        self.tool = tool


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed pulls per tool (default 3)")
    ap.add_argument("--workdir", default="/var/tmp/berth-bench-pull",
                    help="cache (image layout) and run dir parent (default %(default)s)")
    ap.add_argument("--clean", action="store_true", help="also remove the cached layout at the end")
    ap.add_argument("--berth", default="target/release/berth", help="the berth binary")
    ap.add_argument("--berth-config", help="a config file for berth serve (e.g. max_concurrent_downloads)")
    ap.add_argument("--only", choices=["berth", "containerd"], help="time one tool only")
    ap.add_argument("--reuse-fs", action="store_true",
                    help="old method: daemons started once, roots in the run dir on the host's "
                    "filesystem, image removed between rounds (filesystem churn included)")
    ap.add_argument("--fs-journal", action=argparse.BooleanOptionalAction, default=None,
                    help="format each fresh filesystem with mkfs.ext4's default journal "
                    "(default) or without one (--no-fs-journal)")
    ap.add_argument("--fs-size", default="3G",
                    help="size of each fresh filesystem's sparse image file (default %(default)s)")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    if a.reuse_fs and a.fs_journal is not None:
        ap.error("--fs-journal/--no-fs-journal apply to the fresh filesystems, not --reuse-fs")
    if not re.fullmatch(r"[1-9][0-9]*[KMGT]?", a.fs_size):
        ap.error("--fs-size: a size like 3G, 4096M")
    if os.geteuid() != 0:
        sys.exit("bench-pull needs root (overlayfs and loop mounts)")
    for tool in ("containerd", "ctr", "docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install containerd docker-registry skopeo")
    for tool in ("mkfs.ext4", "dumpe2fs", "losetup", "findmnt"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install e2fsprogs util-linux mount")
    berth_bin = os.path.abspath(a.berth)
    workdir = os.path.abspath(a.workdir)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    lock = lock_workdir(workdir, "bench-pull")  # held for the run
    reap_stale(workdir)
    layout = os.path.join(workdir, "layout")
    run_dir = tempfile.mkdtemp(prefix="run.", dir=workdir)
    d = Daemons(run_dir)
    code = 0
    try:
        code = bench(a, d, run_dir, layout, berth_bin)
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        d.stop_all()
        left = unmount_under(run_dir)
        if left:
            log(f"unmounted {len(left)} leftover mounts under {run_dir}: {left}")
        loops = detach_loops_under(run_dir)
        if loops:
            log(f"detached {len(loops)} leftover loop devices: {loops}")
        shutil.rmtree(run_dir, ignore_errors=True)
        if a.clean:
            shutil.rmtree(layout, ignore_errors=True)
            shutil.rmtree(layout + ".building", ignore_errors=True)
            try:
                os.unlink(os.path.join(workdir, "lock"))
                os.rmdir(workdir)
            except OSError:
                pass
        lock.close()
    return code


def bench(a, d, run_dir, layout, berth_bin):
    t0 = time.monotonic()
    log(f"image layout {layout}")
    st, cached = bigimage.ensure(layout)
    log(f"  {'cached' if cached else 'built'} in {time.monotonic() - t0:.1f} s: "
        f"{len(st['layers'])} layers, {st['files']} entries ({st['regular_files']} regular files), "
        f"compressed {st['compressed_bytes'] / 1e6:.1f} MB, unpacked (layer tars) "
        f"{st['tar_bytes'] / 1e6:.1f} MB, file data {st['file_bytes'] / 1e6:.1f} MB")

    t0 = time.monotonic()
    host = start_registry(d, run_dir)
    ref = f"{host}/{REPO}:latest"
    run(["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests",
         "--dest-tls-verify=false", f"oci:{layout}:{st['ref_name']}", f"docker://{ref}"])
    log(f"registry {host}: pushed {ref} in {time.monotonic() - t0:.1f} s")

    tools = []
    if a.only != "containerd":
        tools.append(Berth(run_dir, berth_bin, a.berth_config and os.path.abspath(a.berth_config)))
    if a.only != "berth":
        tools.append(Containerd(run_dir))
    fresh = not a.reuse_fs
    journal = a.fs_journal is not False
    fss = {t.name: FreshFs(run_dir, t.name, a.fs_size, journal) for t in tools} if fresh else {}
    versions = {}
    t0 = time.monotonic()
    for t in tools:
        # Fresh: a trial start on a fresh filesystem (setup checked before
        # any round), torn down again. Reused: up for the whole run.
        t.start(d, fss[t.name].create() if fresh else None)
        versions[t.name] = t.version()
        if fresh:
            t.stop(d)
            fss[t.name].destroy()
    log(f"daemons {'started (and stopped) on fresh filesystems' if fresh else 'up'} "
        f"in {time.monotonic() - t0:.1f} s")
    versions["ctr"] = run(["ctr", "--version"]).stdout.strip()
    versions["registry"] = run(["docker-registry", "--version"]).stdout.strip()
    versions["skopeo"] = run(["skopeo", "--version"]).stdout.strip()
    for k, v in versions.items():
        log(f"  {k}: {v}")
    host_desc = host_fs(run_dir)
    if fresh:
        fs_desc = (f"fresh ext4 per pull: {a.fs_size} sparse image, mkfs.ext4 defaults"
                   f"{'' if journal else ' -O ^has_journal'}, loop-mounted")
        log(f"filesystem: {fs_desc}; {next(iter(fss.values())).summary}")
        log(f"  (image files, registry and daemon state on {host_desc})")
    else:
        fs_desc = "reused: roots in the run dir across rounds"
        log(f"filesystem: {fs_desc}, on {host_desc}")

    times = {t.name: [] for t in tools}
    cpus = {t.name: [] for t in tools}
    synced = {t.name: [] for t in tools}
    busy = host_busy()
    log(f"CPU busy in the 2 s before the rounds: {busy:.0%} of {os.cpu_count()} CPUs")
    if busy > 0.1:
        log("  note: something else is running; wall times will be noisy (CPU s less so)")
    if fresh:
        log(f"{a.rounds} rounds, interleaved, each pull on a fresh filesystem with a freshly "
            "started daemon")
    else:
        log(f"{a.rounds} rounds, interleaved, cold (image, content and snapshots removed) "
            "each time, same filesystem and daemons throughout")
    for rnd in range(1, a.rounds + 1):
        for t in tools:
            c0 = time.monotonic()
            if fresh:
                t.start(d, fss[t.name].create())
            left = t.make_cold(ref)
            syncfs(t.root)
            syncfs(run_dir)
            prep_s = time.monotonic() - c0
            try:
                dt, dt_sync, cpu, out = timed_pull(t, ref, run_dir, rnd)
            except PullFailed as e:
                log(f"\n{e.tool} FAILED to pull:\n{e}")
                if e.tool == "berth":
                    log(f"berth serve log (tail):\n{d.log_tail('berth')}")
                return 1
            nsnap = t.verify(ref, st["manifest"], out)
            times[t.name].append(dt)
            cpus[t.name].append(cpu)
            synced[t.name].append(dt_sync)
            if fresh:
                used = fss[t.name].used()
                t.stop(d)
                fss[t.name].destroy()
                how = (f"fresh fs: mkfs+mount+start+sync {prep_s:.1f} s, "
                       f"{used / 1e6:.0f} MB allocated after")
            else:
                how = (f"before it: {left / 1e6:.1f} MB left in its root, "
                       f"cleanup+sync {prep_s:.1f} s")
            log(f"  round {rnd} {t.name:<10} {dt:7.2f} s, +syncfs {dt_sync:6.2f} s, "
                f"CPU {cpu:6.2f} s  ({nsnap} snapshots; {how})")

    log(f"CPU busy in the 2 s after the rounds: {host_busy():.0%}")
    log("")
    log(f"image: {st['compressed_bytes'] / 1e6:.1f} MB compressed, {st['tar_bytes'] / 1e6:.1f} MB "
        f"unpacked, {st['files']} entries in {len(st['layers'])} layers; 1 MB = 10^6 bytes")
    log(f"{'tool':<12}{'median s':>10}{'min s':>9}{'unpacked MB/s':>15}{'compressed MB/s':>17}"
        f"{'CPU s':>8}{'+syncfs s':>11}   rounds (s)")
    med = {}
    for name, ts in times.items():
        m = med[name] = statistics.median(ts)
        log(f"{name:<12}{m:>10.2f}{min(ts):>9.2f}{st['tar_bytes'] / 1e6 / m:>15.1f}"
            f"{st['compressed_bytes'] / 1e6 / m:>17.1f}{statistics.median(cpus[name]):>8.2f}"
            f"{statistics.median(synced[name]):>11.2f}"
            f"   {' '.join(f'{x:.2f}' for x in ts)}")
    if len(med) < 2:
        print(json.dumps({"rounds": a.rounds, "fs": fs_desc, "seconds": {n: [round(x, 4) for x in ts] for n, ts in times.items()},
                          "cpu_s": {n: [round(x, 3) for x in ts] for n, ts in cpus.items()}}))
        return 0
    ratio = med["containerd"] / med["berth"]
    log(f"containerd/berth (median seconds): {ratio:.2f}x  (>1 means berth is faster)")
    sratio = statistics.median(synced["containerd"]) / statistics.median(synced["berth"])
    log(f"containerd/berth with a syncfs after each pull: {sratio:.2f}x  (berth syncs before "
        "it commits; containerd 1.6 leaves the unpacked files to background writeback)")
    print(json.dumps({"rounds": a.rounds, "fs": fs_desc, "versions": versions,
                      "image": {k: st[k] for k in ("compressed_bytes", "tar_bytes", "file_bytes",
                                                   "files", "regular_files")},
                      "seconds": {n: [round(x, 4) for x in ts] for n, ts in times.items()},
                      "median_s": {n: round(m, 4) for n, m in med.items()},
                      "cpu_s": {n: [round(x, 3) for x in ts] for n, ts in cpus.items()},
                      "with_syncfs_s": {n: [round(x, 4) for x in ts] for n, ts in synced.items()},
                      "containerd_over_berth": round(ratio, 3),
                      "containerd_over_berth_with_syncfs": round(sratio, 3)}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as e:
        sys.exit(f"bench-pull: {e}")
