#!/usr/bin/env python3
"""Dockerfile builds of berth (`berth build`, in the daemon) against
Debian's buildah 1.28 (`buildah bud --layers`), the same 10-step Dockerfile
with a 50 MB build context, cold, fully cached and with one context file
changed, interleaved in one run.

Run it through scripts/bench-build, which builds the release binaries
(berth, berth-shim, berth-runtime, berth-fixtures) and runs this in a
private mount namespace. What it does:

1. Builds (once; cached in WORKDIR/context, WORKDIR/context.json marking it
   complete) a build context of 50 MB: 4 files of 11 MB of random bytes
   (data/big-N.bin) and 2000 files of 3000 random bytes (small/DD/
   file-NNNN.bin, 20 directories); each run copies it into its run dir
   (WORKDIR/run.*), where the "changed" phase edits one file.
2. The base image: the offline busybox fixture (`berth-fixtures images`,
   from Debian's busybox-static) with one history entry added to its config
   (the fixture has none, and buildah 1.28 with --layers refuses such a base:
   "history lists 0 non-empty layers, but we have 1 layers on disk"; the
   layer is the fixture's, byte for byte). It is pushed with skopeo to a
   docker-registry started on 127.0.0.1 with its storage in the run dir, and
   both tools build FROM 127.0.0.1:PORT/bench/busybox:latest, the same
   manifest digest (checked).
3. The Dockerfile (RUN/Dockerfile, outside the context, given with -f):
   FROM, ENV, WORKDIR, RUN (a shell loop writing 1000 small files), RUN
   (4 x 2 MiB from /dev/urandom), COPY . /app/src (the 50 MB), RUN (count
   the copied files, md5sum a big one), RUN (md5 over every copied file's
   md5sum, sorted; count and size what the first RUNs made), LABEL, CMD.
   The image's CMD prints that report, which the bench computes on its own
   from the context: each built image is run and must print it.
4. The tools, each with its storage on a filesystem of its own, FS (see
   5): berth is `berth serve --root FS/root --state RUN/berth-state` (shim
   and runtime beside it), timed as `berth build --json -f RUN/Dockerfile
   -t bench/app:TAG RUN/context` (the daemon is up before the clock starts;
   its RUN steps use the host network). buildah is `buildah --root FS/root
   --runroot RUN/buildah/run --storage-driver overlay bud --layers
   --pull=false --isolation chroot --iidfile F -f RUN/Dockerfile -t
   bench/app:TAG RUN/context`, with TMPDIR=FS/tmp (vfs if overlay does not
   work here, said so; CONTAINERS_CONF with default_ulimits if a RUN is
   refused its rlimits).
   --layers is what gives buildah a cache (each step an image, as berth's
   cache records); --pull=false uses the local base and pulls it only when
   missing, which is what berth does (buildah's default, true, would ask
   the registry for a newer base on every build). Neither sets up a
   network for RUN: buildah's chroot isolation and berth's RUN steps both
   use the host's.
5. Each round (--rounds, default 3; the tool order alternates from round to
   round, and within a round the two tools alternate phase by phase):
   - cold: both start from fresh storage holding the base image and
     nothing else: berth's daemon is stopped, its root, state and
     filesystem removed, a new daemon started on an empty root and the
     base pulled (`berth pull`); buildah's root, runroot and filesystem
     are removed and the base pulled (`buildah pull --tls-verify=false`).
     None of that is timed. Not `--no-cache`: that would still reuse the
     unpacked base and leave earlier results on disk. FS is a fresh ext4
     per tool and cold round (a sparse image file of --fs-size, default
     3G, in the run dir, mkfs.ext4 defaults, with a journal, loop-mounted
     at RUN/fs-TOOL, as bench/pull.py does), so no build pays for the
     files earlier rounds deleted: on an ext4 without a journal, as this
     host's root, creating files after many were deleted is slow (the
     inode allocator's recently_deleted: a third of berth's daemon time
     in a profile of a build on this host's root, and both tools' times
     moved with it from run to run). --same-fs keeps both roots in the
     run dir on the host's filesystem instead.
   - warm: the same build again; every step after FROM must be a cache hit
     (berth: "cached" = 9 in its --json; buildah: 9 "Using cache" lines).
   - changed: one small context file gets new contents (a new file put in
     place), then both build again: 4 steps (ENV .. the second RUN) must be
     hits and COPY onwards run again. The file is put back after the round.
   Before each build every filesystem is synced (earlier writeback is not
   charged to it); each build is timed end to end (wall clock of the CLI
   process), and again after a syncfs of the tool's storage filesystem
   that follows it ("+sync": what the build left dirty written back; the
   loop device passes the flush on to its image file), with the host's
   CPU time over it (all CPUs' non-idle jiffies: CLI, daemon, shims,
   runtime, buildah's children and kernel alike; meaningful on an otherwise
   idle host, which is checked). Each result is then checked, untimed: the
   step and cache-hit counts, the image's CMD (berth: `create` + `inspect`,
   the spec's args; buildah: `inspect`, its OCI config) and its output when
   run (`berth run --rm --net none`; `buildah from` + `buildah run`), which
   must equal the report computed from the context.
6. Prints median and min seconds per phase and tool, the median "+sync"
   seconds and host CPU seconds, buildah seconds / berth seconds per phase
   (>1: berth is faster; the issue's target: cold > 1, warm >= 5), and the
   median of each of berth's step times (its "--> ID SECONDS" progress
   lines) per phase, to see where berth's time goes.

Everything started is stopped (the registry, the berth daemon, what
process still names the run dir, buildah's working containers), what is
mounted under the run dir unmounted and the loop devices detached, the
cgroups berth's build steps made removed, the run dir deleted, and
/run/libpod, /run/containers and /var/lib/containers removed if this run
created them, on exit, Ctrl-C or failure. WORKDIR/context stays unless
--clean.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull  # noqa: E402
from common import Daemons, Failed, host_busy, host_ticks, lock_workdir, log, run, unmount_under  # noqa: E402
from manager import cgroup_hierarchies, cgroups_with, kill_pids, pids_naming, rmdir_cgroup  # noqa: E402
from pull import (Berth, FreshFs, detach_loops_under, reap_stale, start_registry,  # noqa: E402
                  syncfs)

# Bump when the recipe changes: a cached context with another version is rebuilt.
CONTEXT_VERSION = 1
BIG_FILES = 4
BIG_BYTES = 11_000_000
SMALL_DIRS = 20
SMALL_PER_DIR = 100
SMALL_BYTES = 3000  # 4 x 11 MB + 2000 x 3000 B = 50 MB
CHANGED = "small/00/file-0000.bin"  # the file the "changed" phase edits

GEN_LINES = 1000  # files the first RUN writes
GEN_BLOBS = 4     # 2 MiB blobs the second RUN writes
BLOB_BYTES = 2 << 20

PHASES = ("cold", "warm", "changed")
STEPS = 10
# Cache hits each phase must show, in the steps after FROM.
HITS = {"cold": 0, "warm": STEPS - 1, "changed": 4}
CMD = ["cat", "/app/report"]
BASE_REPO = "bench/busybox:latest"
BUILD_TIMEOUT = 900
CLI_TIMEOUT = 300
# Side effects of buildah outside the run dir, removed if this run made them.
SYSTEM_DIRS = ("/run/libpod", "/run/containers", "/var/lib/containers")

DOCKERFILE = """\
FROM {base}
ENV APP_HOME=/app GREETING=hello
WORKDIR /app
RUN mkdir -p gen && i=0 && while [ $i -lt {lines} ]; do echo "$GREETING $i" > gen/line-$i.txt; i=$((i+1)); done
RUN i=0 && while [ $i -lt {blobs} ]; do head -c {blob_bytes} /dev/urandom > gen/blob-$i; i=$((i+1)); done
COPY . /app/src
RUN echo "files $(find src -type f | wc -l)" > report && md5sum src/data/big-0.bin >> report
RUN echo "tree $(find src -type f | sort | xargs md5sum | md5sum | cut -d' ' -f1)" >> report && echo "gen $(ls gen | wc -l) $(cat gen/* | wc -c)" >> report
LABEL org.example.bench="berth build" org.example.context="50 MB"
CMD {cmd}
"""


# --- the context ---------------------------------------------------------------

def context_files():
    """Relative paths and sizes of the context's files."""
    out = [(f"data/big-{i}.bin", BIG_BYTES) for i in range(BIG_FILES)]
    for d in range(SMALL_DIRS):
        for j in range(SMALL_PER_DIR):
            out.append((f"small/{d:02d}/file-{d * SMALL_PER_DIR + j:04d}.bin", SMALL_BYTES))
    return out


def ensure_context(workdir):
    """WORKDIR/context (made first when missing or stale); True if cached."""
    ctx, stats = os.path.join(workdir, "context"), os.path.join(workdir, "context.json")
    try:
        with open(stats) as f:
            if json.load(f).get("version") == CONTEXT_VERSION and os.path.isdir(ctx):
                return ctx, True
    except (OSError, ValueError):
        pass
    if os.path.exists(stats):
        os.unlink(stats)
    tmp = ctx + ".building"
    shutil.rmtree(tmp, ignore_errors=True)
    total = 0
    for rel, size in context_files():
        p = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(os.urandom(size))
        total += size
    shutil.rmtree(ctx, ignore_errors=True)
    os.replace(tmp, ctx)
    with open(stats, "w") as f:
        json.dump({"version": CONTEXT_VERSION, "bytes": total,
                   "files": len(context_files())}, f)
    return ctx, False


def md5_file(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def expected_report(ctx):
    """What /app/report holds in an image built from ctx (see DOCKERFILE)."""
    paths = sorted(f"src/{rel}" for rel, _ in context_files())
    sums = "".join(f"{md5_file(os.path.join(ctx, p[4:]))}  {p}\n" for p in paths)
    gen_bytes = sum(len(f"hello {i}\n") for i in range(GEN_LINES)) + GEN_BLOBS * BLOB_BYTES
    return (f"files {len(paths)}\n"
            f"{md5_file(os.path.join(ctx, 'data/big-0.bin'))}  src/data/big-0.bin\n"
            f"tree {hashlib.md5(sums.encode()).hexdigest()}\n"
            f"gen {GEN_LINES + GEN_BLOBS} {gen_bytes}\n")


def put_file(path, data):
    """Replaces path with a new file (a new inode, as an editor's save)."""
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --- the base image ------------------------------------------------------------

def with_history(src, dst, ref_name="busybox"):
    """Writes an OCI layout at dst: src's ref_name image with one history
    entry in its config (the layer blobs are copied as they are). Returns
    its manifest digest."""
    def blob(root, digest):
        return os.path.join(root, "blobs", "sha256", digest.split(":", 1)[1])

    def put(obj):
        b = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        d = hashlib.sha256(b).hexdigest()
        with open(os.path.join(dst, "blobs", "sha256", d), "wb") as f:
            f.write(b)
        return "sha256:" + d, len(b)

    with open(os.path.join(src, "index.json")) as f:
        index = json.load(f)
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref_name)
    with open(blob(src, desc["digest"])) as f:
        manifest = json.load(f)
    with open(blob(src, manifest["config"]["digest"])) as f:
        config = json.load(f)
    if len(manifest["layers"]) != 1 or config.get("history"):
        raise RuntimeError(f"the {ref_name} fixture changed (layers or history): update this bench")
    config["history"] = [{"created": config.get("created", "2024-01-01T00:00:00Z"),
                          "created_by": "berth-fixtures busybox (Debian busybox-static)"}]
    os.makedirs(os.path.join(dst, "blobs", "sha256"))
    for layer in manifest["layers"]:
        shutil.copyfile(blob(src, layer["digest"]), blob(dst, layer["digest"]))
    manifest["config"]["digest"], manifest["config"]["size"] = put(config)
    mdig, msize = put(manifest)
    with open(os.path.join(dst, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": manifest["mediaType"], "digest": mdig, "size": msize,
             "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}, f)
    with open(os.path.join(dst, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return mdig


def registry_digest(ref):
    p = run(["skopeo", "--insecure-policy", "inspect", "--raw", "--tls-verify=false",
             f"docker://{ref}"], timeout=CLI_TIMEOUT)
    return "sha256:" + hashlib.sha256(p.stdout.encode()).hexdigest()


# --- the tools -----------------------------------------------------------------

STEP_DONE = re.compile(r"^--> [0-9a-f]+ ([0-9.]+)s$")


class BerthTool:
    """berth serve on a root of its own, started anew for each cold round."""
    name = "berth"

    def __init__(self, run_dir, bin_dir, d, fs):
        self.b = Berth(run_dir, f"{bin_dir}/berth")
        self.d = d
        self.fs = fs  # a FreshFs, or None: the root in the run dir
        self.daemon_pids = []  # every daemon of the run (build containers carry its pid)
        self.up = False

    def sync_path(self):
        return self.b.root

    def version(self):
        return self.b.version()

    def fresh(self, base):
        """A new daemon on an empty root, holding the base image only."""
        self.destroy()
        self.b.start(self.d, self.fs.create() if self.fs else None)
        self.up = True
        self.daemon_pids.append(self.b.pid)
        self.b.cli("pull", base)
        imgs = json.loads(self.b.cli("images", "--json").stdout)
        if len(imgs) != 1:
            raise Failed(self.name, f"a fresh berth root holds {len(imgs)} images: {imgs}")

    def stop(self):
        if self.up:
            self.b.stop(self.d)
            self.up = False

    def destroy(self):
        """Stops the daemon and removes its root (and filesystem)."""
        self.stop()
        unmount_under(self.b.root)
        shutil.rmtree(self.b.root, ignore_errors=True)
        if self.fs:
            self.fs.destroy()

    def build_argv(self, dockerfile, tag, ctx):
        return [self.b.bin, "--address", self.b.sock, "-n", pull.NS, "build", "--json",
                "-f", dockerfile, "-t", tag, ctx]

    def env(self):
        return self.b.env

    def check(self, phase, out, err):
        """The build's --json result: (image ref, hits, berth's step times)."""
        try:
            got = json.loads(out)
        except ValueError as e:
            raise Failed(self.name, f"berth build --json printed {out!r}") from e
        if got.get("steps") != STEPS or got.get("cached") != HITS[phase]:
            raise Failed(self.name, f"{phase}: berth build printed {got}: expected steps "
                         f"{STEPS}, cached {HITS[phase]}\n{err[-3000:]}")
        steps = [float(m.group(1)) for m in map(STEP_DONE.match, err.splitlines()) if m]
        if len(steps) != STEPS:
            raise Failed(self.name, f"{len(steps)} step times in berth build's progress, "
                         f"not {STEPS}:\n{err[-3000:]}")
        return got["digest"], got["cached"], steps

    def inspect(self, image, cid):
        """The image's CMD (as a container of it gets it) and its output."""
        self.b.cli("create", "--name", cid, "--net", "none", image)
        try:
            spec = json.loads(self.b.cli("inspect", cid).stdout)[0]["spec"]
        finally:
            self.b.cli("rm", "-f", cid, check=False)
        p = run([self.b.bin, "--address", self.b.sock, "-n", pull.NS, "run", "--rm", "--net",
                 "none", image], env=self.b.env, timeout=CLI_TIMEOUT, tool=self.name)
        return spec["process"]["args"], p.stdout

    def leftovers(self):
        """Build containers still there (they are removed after each step)."""
        if not self.up:
            return []
        return self.b.cli("ps", "-a", "-q").stdout.split()


class BuildahTool:
    """buildah with its storage in the run dir, made anew for each cold round."""
    name = "buildah"

    def __init__(self, run_dir, fs):
        self.dir = f"{run_dir}/buildah"
        self.fs = fs  # a FreshFs for root and TMPDIR, or None: in the run dir
        self.root = f"{self.dir}/root"
        self.runroot = f"{self.dir}/run"
        self.tmp = f"{self.dir}/tmp"
        self.conf = f"{self.dir}/containers.conf"
        self.driver = "overlay"
        self._env = dict(os.environ)
        for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "BUILDAH_LAYERS",
                  "BUILDAH_ISOLATION", "BUILDAH_FORMAT", "STORAGE_DRIVER"):
            self._env.pop(k, None)
        self.n = 0
        os.makedirs(self.dir)

    def sync_path(self):
        return self.root

    def env(self):
        return self._env

    def base(self):
        return ["buildah", "--root", self.root, "--runroot", self.runroot,
                "--storage-driver", self.driver]

    def cli(self, *args, check=True, timeout=CLI_TIMEOUT):
        return run([*self.base(), *args], check=check, timeout=timeout, env=self._env,
                   tool=self.name)

    def version(self):
        return run(["buildah", "--version"]).stdout.strip()

    def destroy(self):
        """Removes the storage: working containers, mounts, files (and
        filesystem)."""
        if os.path.isdir(self.root):
            self.cli("rm", "--all", check=False)
        for p in (self.runroot, self.root, self.tmp):
            unmount_under(p)
            shutil.rmtree(p, ignore_errors=True)
        if self.fs:
            self.fs.destroy()

    def fresh(self, base):
        """Empty storage holding the base image only."""
        self.destroy()
        if self.fs:
            top = os.path.dirname(self.fs.create())
            self.root, self.tmp = f"{top}/root", f"{top}/tmp"
        os.makedirs(self.tmp)
        self._env["TMPDIR"] = self.tmp
        self.cli("pull", "-q", "--tls-verify=false", base)
        ids = self.cli("images", "-q", "--no-trunc").stdout.split()
        if len(ids) != 1:
            raise Failed(self.name, f"a fresh buildah root holds {len(ids)} images: {ids}")

    def setup(self, base):
        """Storage driver and rlimits that work here, tried on the base:
        overlay, else vfs; no containers.conf, else one with default_ulimits."""
        for driver in ("overlay", "vfs"):
            self.driver = driver
            try:
                self.fresh(base)
                break
            except Failed as e:
                why = str(e).strip().splitlines()[-1:]
                log(f"  buildah --storage-driver {driver} does not work here: {' '.join(why)}")
                self.destroy()
        else:
            raise Failed(self.name, "neither overlay nor vfs storage works for buildah")
        for conf in (False, True):
            if conf:
                nproc = 4096
                with open(self.conf, "w") as f:
                    f.write(f'[containers]\ndefault_ulimits = ["nofile=1024:1024", '
                            f'"nproc={nproc}:{nproc}"]\n')
                self._env["CONTAINERS_CONF"] = self.conf
            ctr = self.cli("from", "--pull=false", base).stdout.strip().splitlines()[-1]
            try:
                p = self.cli("run", "--isolation", "chroot", ctr, "--", "sh", "-c",
                             "head -c 16 /dev/urandom | wc -c", check=False)
            finally:
                self.cli("rm", ctr, check=False)
            if p.returncode == 0 and p.stdout.strip() == "16":
                return
            why = (p.stderr or p.stdout).strip().splitlines()[-1:]
            log(f"  buildah run {'with' if conf else 'without'} a containers.conf failed: "
                f"{' '.join(why)}")
        raise Failed(self.name, "buildah cannot run a RUN step here")

    def build_argv(self, dockerfile, tag, ctx):
        self.n += 1
        self.iid = f"{self.dir}/iid-{self.n}"
        return [*self.base(), "bud", "--layers", "--pull=false", "--isolation", "chroot",
                "--iidfile", self.iid, "-f", dockerfile, "-t", tag, ctx]

    def check(self, phase, out, err):
        text = out + err
        hits = sum(1 for ln in text.splitlines() if ln.startswith("--> Using cache"))
        nsteps = len(re.findall(rf"^STEP \d+/{STEPS}: ", text, re.M))
        if nsteps != STEPS or hits != HITS[phase]:
            raise Failed(self.name, f"{phase}: buildah bud showed {nsteps} steps and {hits} "
                         f"'Using cache', expected {STEPS} and {HITS[phase]}:\n{text[-3000:]}")
        with open(self.iid) as f:
            iid = f.read().strip()
        return iid, hits, None

    def inspect(self, image, cid):
        info = json.loads(self.cli("inspect", "--type", "image", image).stdout)
        cmd = (info.get("OCIv1", {}).get("config") or {}).get("Cmd")
        ctr = self.cli("from", "--pull=false", "--name", cid, image).stdout.strip().splitlines()[-1]
        try:
            p = self.cli("run", "--isolation", "chroot", ctr, "--", *(cmd or ["false"]))
        finally:
            self.cli("rm", ctr, check=False)
        return cmd, p.stdout

    def leftovers(self):
        if not os.path.isdir(self.root):
            return []
        return self.cli("containers", "-q").stdout.split()


def timed_build(t, argv, run_dir, label):
    """Runs a build: wall s, wall s to a syncfs after it, host CPU s, out, err."""
    out_path, err_path = f"{run_dir}/{label}.out", f"{run_dir}/{label}.err"
    tick = os.sysconf("SC_CLK_TCK")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        b0 = host_ticks()[1]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                               env=t.env(), timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise Failed(t.name, f"{' '.join(argv)} did not finish in {BUILD_TIMEOUT}s") from e
        dt = time.perf_counter() - t0
        syncfs(t.sync_path())
        dt_sync = time.perf_counter() - t0
        cpu = (host_ticks()[1] - b0) / tick
    with open(out_path, errors="replace") as f:
        text = f.read()
    with open(err_path, errors="replace") as f:
        errors = f.read()
    if p.returncode != 0:
        raise Failed(t.name, f"{' '.join(argv)} exited {p.returncode} after {dt:.2f} s:\n"
                     f"{text[-2000:]}{errors[-4000:]}")
    return dt, dt_sync, cpu, text, errors


# --- the run -------------------------------------------------------------------

def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of cold, warm and changed builds per tool (default 3)")
    ap.add_argument("--workdir", default="/var/tmp/berth-bench-build",
                    help="cache (build context) and run dir parent (default %(default)s)")
    ap.add_argument("--clean", action="store_true",
                    help="also remove the cached context at the end")
    ap.add_argument("--same-fs", action="store_true",
                    help="storage in the run dir on the host's filesystem, not on a fresh ext4 "
                    "per cold round")
    ap.add_argument("--fs-size", default="3G",
                    help="size of each fresh filesystem's sparse image file (default %(default)s)")
    ap.add_argument("--bin-dir", default="target/release",
                    help="berth, berth-shim, berth-runtime and berth-fixtures "
                    "(default %(default)s)")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    if not re.fullmatch(r"[1-9][0-9]*[KMGT]?", a.fs_size):
        ap.error("--fs-size: a size like 3G, 4096M")
    if os.geteuid() != 0:
        sys.exit("bench-build needs root (berth serve, buildah's storage, mounts)")
    for tool in ("buildah", "docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install buildah docker-registry skopeo")
    for tool in ("mkfs.ext4", "dumpe2fs", "losetup", "findmnt"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install e2fsprogs util-linux mount")
    bin_dir = os.path.abspath(a.bin_dir)
    for b in ("berth", "berth-shim", "berth-runtime", "berth-fixtures"):
        if not os.access(f"{bin_dir}/{b}", os.X_OK):
            sys.exit(f"{bin_dir}/{b} missing: cargo build --release -p berth-manager -p "
                     "berth-shim -p berth-runtime -p berth-integration-tests")
    workdir = os.path.abspath(a.workdir)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    lock = lock_workdir(workdir, "bench-build")  # held for the run
    for name in os.listdir(workdir):  # shims and the like a killed run left
        stale = os.path.join(workdir, name)
        if name.startswith("run.") and os.path.isdir(stale):
            kill_pids(pids_naming(stale), f"stale processes of {stale}")
    reap_stale(workdir)
    existed = {p: os.path.exists(p) for p in SYSTEM_DIRS}
    run_dir = tempfile.mkdtemp(prefix="run.", dir=workdir)
    d = Daemons(run_dir)
    tools = []
    code = 1
    try:
        code = bench(a, d, run_dir, workdir, bin_dir, tools)
    except Failed as e:
        log(f"\n{e.tool or 'setup'} FAILED:\n{e}")
        if e.tool == "berth":
            log(f"berth serve log (tail):\n{d.log_tail('berth')}")
        code = 1
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(d, run_dir, tools, existed)
        if a.clean:
            shutil.rmtree(os.path.join(workdir, "context"), ignore_errors=True)
            for f in ("context.json", "lock"):
                try:
                    os.unlink(os.path.join(workdir, f))
                except OSError:
                    pass
            try:
                os.rmdir(workdir)
            except OSError:
                pass
        lock.close()
    return code


def cleanup(d, run_dir, tools, existed):
    problems = []
    for t in tools:
        try:
            left = t.leftovers()
            if left:
                problems.append(f"{t.name} had containers left: {left}")
        except Exception as e:  # noqa: BLE001 - cleanup goes on
            problems.append(f"{t.name}: listing containers: {e}")
        if isinstance(t, BuildahTool):
            try:
                t.destroy()
            except Exception as e:  # noqa: BLE001
                problems.append(f"buildah storage: {e}")
    for t in tools:
        if isinstance(t, BerthTool):
            try:
                t.destroy()
            except Exception as e:  # noqa: BLE001
                problems.append(f"berth root: {e}")
    d.stop_all()
    stray = pids_naming(run_dir)
    if stray:
        problems.append(f"processes naming the run dir: {stray}")
        kill_pids(stray, "processes naming the run dir")
    left = unmount_under(run_dir)
    if left:
        log(f"  unmounted {len(left)} mounts left under the run dir: {left}")
    loops = detach_loops_under(run_dir)
    if loops:
        log(f"  detached {len(loops)} loop devices left: {loops}")
    for t in tools:
        if isinstance(t, BerthTool):
            # berth's cgroup parent for a root other than /var/lib/berth:
            # /berth-<8 hex digits of the root path's sha256>; the build
            # steps' cgroups are <namespace>-build-<daemon pid>-* in it.
            parent = "berth-" + hashlib.sha256(t.b.root.encode()).hexdigest()[:8]
            for pid in t.daemon_pids:
                prefix = f"{pull.NS}-build-{pid}-"
                for cg in cgroups_with(parent, lambda n, p=prefix: n.startswith(p)):
                    problems.append(f"cgroup left: {cg}")
                    rmdir_cgroup(cg)
            for h in cgroup_hierarchies():
                if os.path.isdir(os.path.join(h, parent)):
                    rmdir_cgroup(os.path.join(h, parent))
    shutil.rmtree(run_dir, ignore_errors=True)
    for p, was in existed.items():
        if not was and os.path.exists(p):
            log(f"  removing {p} (buildah made it)")
            unmount_under(p)
            shutil.rmtree(p, ignore_errors=True)
    if problems:
        log("cleanup: " + "; ".join(problems))


def bench(a, d, run_dir, workdir, bin_dir, tools):
    # 1. The context, copied into the run dir.
    t0 = time.monotonic()
    cached_ctx, was_cached = ensure_context(workdir)
    ctx = os.path.join(run_dir, "context")
    shutil.copytree(cached_ctx, ctx)
    nfiles = len(context_files())
    nbytes = sum(s for _, s in context_files())
    log(f"build context {cached_ctx} ({'cached' if was_cached else 'made'}), copied to the run "
        f"dir in {time.monotonic() - t0:.1f} s: {nfiles} files, {nbytes / 1e6:.1f} MB "
        f"({BIG_FILES} x {BIG_BYTES / 1e6:.0f} MB + {nfiles - BIG_FILES} x {SMALL_BYTES} B, "
        "random bytes)")
    changed_path = os.path.join(ctx, CHANGED)
    with open(changed_path, "rb") as f:
        original = f.read()
    report = expected_report(ctx)

    # 2. The base image, in a registry.
    t0 = time.monotonic()
    out = run([f"{bin_dir}/berth-fixtures", "images", f"{run_dir}/fixtures"]).stdout
    fixture = dict(ln.split("\t") for ln in out.splitlines() if "\t" in ln)["busybox"]
    base_digest = with_history(f"{run_dir}/fixtures", f"{run_dir}/base")
    host = start_registry(d, run_dir)
    base = f"{host}/{BASE_REPO}"
    run(["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests",
         "--dest-tls-verify=false", f"oci:{run_dir}/base:busybox", f"docker://{base}"],
        timeout=CLI_TIMEOUT)
    if registry_digest(base) != base_digest:
        raise Failed(None, f"the registry's {base} is not {base_digest}")
    log(f"base image {base}: {base_digest} (the busybox fixture {fixture[:19]}... with a "
        f"history entry) in {time.monotonic() - t0:.1f} s")
    dockerfile = os.path.join(run_dir, "Dockerfile")
    with open(dockerfile, "w") as f:
        f.write(DOCKERFILE.format(base=base, lines=GEN_LINES, blobs=GEN_BLOBS,
                                  blob_bytes=BLOB_BYTES, cmd=json.dumps(CMD)))

    # 3. The tools, tried once.
    def fs(name):
        return None if a.same_fs else FreshFs(run_dir, name, a.fs_size, True)
    berth = BerthTool(run_dir, bin_dir, d, fs("berth"))
    tools.append(berth)
    buildah = BuildahTool(run_dir, fs("buildah"))
    tools.append(buildah)
    t0 = time.monotonic()
    berth.fresh(base)
    buildah.setup(base)
    versions = {"berth": berth.version(), "buildah": buildah.version(),
                "registry": run(["docker-registry", "--version"]).stdout.strip()}
    log(f"tools ready in {time.monotonic() - t0:.1f} s:")
    for k, v in versions.items():
        log(f"  {k}: {v}")
    conf = ("CONTAINERS_CONF with default_ulimits" if "CONTAINERS_CONF" in buildah.env()
            else "no containers.conf")
    log(f"  buildah: --storage-driver {buildah.driver}, --isolation chroot, {conf}, "
        "TMPDIR on its storage filesystem")
    if a.same_fs:
        fs_desc = f"the run dir's: {pull.host_fs(run_dir)}"
    else:
        fs_desc = (f"a fresh ext4 per tool and cold round ({a.fs_size} sparse image, mkfs.ext4 "
                   f"defaults, loop-mounted): {berth.fs.summary}")
    log(f"  storage filesystem: {fs_desc}")
    log(f"  (context, registry, daemon state on {pull.host_fs(run_dir)})")

    busy = host_busy()
    log(f"CPU busy in the 2 s before the rounds: {busy:.0%} of {os.cpu_count()} CPUs")
    if busy > 0.1:
        log("  note: something else is running; wall times will be noisy")
    log(f"{a.rounds} rounds of cold, warm and changed builds ({STEPS} steps, cache hits "
        f"expected: {', '.join(f'{p} {HITS[p]}' for p in PHASES)}), tools interleaved, "
        "order alternating")

    res = {p: {t.name: {"s": [], "sync": [], "cpu": []} for t in tools} for p in PHASES}
    berth_steps = {p: [] for p in PHASES}
    results = {}
    for rnd in range(1, a.rounds + 1):
        order = tools if rnd % 2 else tools[::-1]
        put_file(changed_path, original)
        t0 = time.monotonic()
        for t in order:
            t.fresh(base)
        log(f"  round {rnd}: fresh storage holding the base image for both in "
            f"{time.monotonic() - t0:.1f} s")
        for phase in PHASES:
            want = report
            if phase == "changed":
                put_file(changed_path, f"changed in round {rnd}\n".encode() * 100)
                want = expected_report(ctx)
            for t in order:
                os.sync()
                tag = f"bench/app:{rnd}-{phase}"
                label = f"{t.name}-{rnd}-{phase}"
                dt, dt_sync, cpu, out, err = timed_build(
                    t, t.build_argv(dockerfile, tag, ctx), run_dir, label)
                image, hits, steps = t.check(phase, out, err)
                cmd, printed = t.inspect(tag if t is berth else image, f"check-{label}")
                if cmd != CMD or printed != want:
                    raise Failed(t.name, f"{label}: the image has CMD {cmd} and prints\n"
                                 f"{printed}expected CMD {CMD} printing\n{want}")
                results.setdefault(f"{rnd}-{phase}", {})[t.name] = image
                r = res[phase][t.name]
                r["s"].append(dt)
                r["sync"].append(dt_sync)
                r["cpu"].append(cpu)
                more = ""
                if steps:
                    berth_steps[phase].append(steps)
                    more = "  steps " + " ".join(f"{x:.2f}" for x in steps)
                log(f"  round {rnd} {phase:<8}{t.name:<8}{dt:7.2f} s  +sync {dt_sync:6.2f} s  "
                    f"host CPU {cpu:6.2f} s  {hits} hits{more}")
        put_file(changed_path, original)
    for t in tools:
        left = t.leftovers()
        if left:
            raise Failed(t.name, f"containers left after the builds: {left}")

    log(f"CPU busy in the 2 s after the rounds: {host_busy():.0%}")
    log("")
    log(f"{STEPS}-step Dockerfile, {nbytes / 1e6:.0f} MB context ({nfiles} files); "
        f"{a.rounds} rounds; seconds")
    log(f"{'phase':<9}{'tool':<9}{'median':>8}{'min':>8}{'+sync':>8}{'host CPU':>10}"
        "   rounds")
    med = {}
    for phase in PHASES:
        for t in tools:
            r = res[phase][t.name]
            m = med[(phase, t.name)] = statistics.median(r["s"])
            log(f"{phase:<9}{t.name:<9}{m:>8.2f}{min(r['s']):>8.2f}"
                f"{statistics.median(r['sync']):>8.2f}{statistics.median(r['cpu']):>10.2f}"
                f"   {' '.join(f'{x:.2f}' for x in r['s'])}")
    ratios = {p: med[(p, "buildah")] / med[(p, "berth")] for p in PHASES}
    sync_ratios = {p: statistics.median(res[p]["buildah"]["sync"])
                   / statistics.median(res[p]["berth"]["sync"]) for p in PHASES}
    log("buildah/berth (median s): " + "  ".join(f"{p} {ratios[p]:.2f}x" for p in PHASES)
        + "  (>1: berth faster)")
    log("  with the sync after each build: "
        + "  ".join(f"{p} {sync_ratios[p]:.2f}x" for p in PHASES))
    verdict = {"cold": ratios["cold"] > 1, "warm": ratios["warm"] >= 5}
    log(f"target: cold > 1x {'met' if verdict['cold'] else 'NOT met'}, "
        f"warm >= 5x {'met' if verdict['warm'] else 'NOT met'}")
    log("")
    log("berth's step times (its progress lines), median over the rounds, seconds:")
    names = ["FROM", "ENV", "WORKDIR", "RUN loop", "RUN urandom", "COPY", "RUN count",
             "RUN md5", "LABEL", "CMD"]
    log(f"{'phase':<9}" + "".join(f"{n:>12}" for n in names) + f"{'sum':>8}")
    step_med = {}
    for phase in PHASES:
        cols = [statistics.median(s[i] for s in berth_steps[phase]) for i in range(STEPS)]
        step_med[phase] = cols
        log(f"{phase:<9}" + "".join(f"{x:>12.3f}" for x in cols) + f"{sum(cols):>8.2f}")
    print(json.dumps({
        "rounds": a.rounds, "versions": versions, "buildah_driver": buildah.driver,
        "storage_fs": fs_desc,
        "context": {"files": nfiles, "bytes": nbytes}, "base": base_digest,
        "seconds": {p: {n: [round(x, 4) for x in r["s"]] for n, r in res[p].items()}
                    for p in PHASES},
        "with_sync_s": {p: {n: [round(x, 4) for x in r["sync"]] for n, r in res[p].items()}
                        for p in PHASES},
        "host_cpu_s": {p: {n: [round(x, 3) for x in r["cpu"]] for n, r in res[p].items()}
                       for p in PHASES},
        "median_s": {f"{p}/{n}": round(m, 4) for (p, n), m in med.items()},
        "buildah_over_berth": {p: round(x, 3) for p, x in ratios.items()},
        "buildah_over_berth_with_sync": {p: round(x, 3) for p, x in sync_ratios.items()},
        "berth_step_median_s": {p: [round(x, 3) for x in v] for p, v in step_med.items()},
        "images": results}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as e:
        sys.exit(f"bench-build: {e}")
