#!/usr/bin/env python3
"""Image push throughput of berth (`berth push`) against skopeo (`skopeo
copy` from an OCI image layout), into a local docker-registry.

Run it through scripts/bench-push, which builds target/release/berth and
runs this in a private mount namespace. What it does:

1. Builds (once; cached in WORKDIR/layout) an OCI image layout of about
   200 MB in 5 gzip layers, each a tar of a few files of random bytes (so
   the layers do not compress: what is pushed is what is stored), plus a
   tarball of it for `berth load`, and prints its sizes.
2. Starts `berth serve` with its root and state in a temporary run dir
   (WORKDIR/run.*) and loads the layout into it (`berth load`), so berth
   pushes from its content store and skopeo from the layout: both read the
   same bytes from the page cache, neither compresses anything.
3. Each round, both tools push (interleaved, the order alternating from
   round to round, so machine noise and ordering hit both alike), each into
   a freshly started docker-registry whose storage is a new directory on a
   tmpfs (--registry-on-disk: on the run dir's filesystem) and under a fresh
   repository name: the registry has none of the blobs, so every byte is
   sent (no HEAD hit, no cross-repository mount). Timed end to end:
   `berth push --plain-http --json REG/bench/berth-N:latest` (after an
   untimed `berth tag`) and `skopeo copy --preserve-digests
   oci:LAYOUT:big docker://REG/bench/skopeo-N:latest`. Each push is then
   checked (`skopeo inspect --raw` of the pushed tag hashes to the layout's
   manifest digest), and the registry stopped and its storage removed.
4. Prints median and min seconds, MB/s (1 MB = 10^6 bytes) of the bytes
   pushed, median CPU seconds of the pusher (berth: the CLI plus the
   daemon; skopeo: its process; the registry's share apart, in its own
   column), and skopeo seconds / berth seconds (>1: berth is faster).

Everything started is stopped and the run dir removed on exit, Ctrl-C or
failure; WORKDIR/layout stays unless --clean.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull  # noqa: E402
from common import Daemons, host_busy, lock_workdir, log, run, unmount_under  # noqa: E402
from pull import Berth, children_cpu, proc_cpu, reap_stale, start_registry  # noqa: E402

# Bump when the recipe changes: a cached layout with another version is rebuilt.
VERSION = 1
REF_NAME = "big"
MiB = 1 << 20
LAYERS = 5
FILES_PER_LAYER = 4
FILE_BYTES = 10 * MiB  # 5 layers x 4 files x 10 MiB = 200 MiB
STATS = "bench-image.json"  # written last: its presence marks a complete layout


class HashingWriter:
    def __init__(self, inner):
        self.inner, self.sha, self.size = inner, hashlib.sha256(), 0

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        return self.inner.write(b)

    def flush(self):
        self.inner.flush()

    def close(self):
        pass


def write_blob(blobs, obj):
    b = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    d = hashlib.sha256(b).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(b)
    return "sha256:" + d, len(b)


def build_layer(blobs, n):
    """One gzip layer of FILES_PER_LAYER random files under data/layerN/."""
    tmp = os.path.join(blobs, "layer.tmp")
    with open(tmp, "wb") as raw:
        comp = HashingWriter(raw)
        # Level 1: random data does not compress at any level.
        gz = gzip.GzipFile(fileobj=comp, mode="wb", compresslevel=1, mtime=0)
        plain = HashingWriter(gz)
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for d in ("data", f"data/layer{n}"):
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1704067200
                tar.addfile(ti)
            for i in range(FILES_PER_LAYER):
                ti = tarfile.TarInfo(f"data/layer{n}/random-{i}")
                ti.size, ti.mode, ti.mtime = FILE_BYTES, 0o644, 1704067200
                tar.addfile(ti, io.BytesIO(os.urandom(FILE_BYTES)))
        gz.close()
    digest = comp.sha.hexdigest()
    os.replace(tmp, os.path.join(blobs, digest))
    desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": "sha256:" + digest, "size": comp.size}
    return desc, "sha256:" + plain.sha.hexdigest(), plain.size


def build(layout):
    tmp = layout + ".building"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    layers, diff_ids, history = [], [], []
    st = {"version": VERSION, "ref_name": REF_NAME, "compressed_bytes": 0, "tar_bytes": 0,
          "layers": []}
    for n in range(LAYERS):
        t0 = time.monotonic()
        desc, diff_id, tar_size = build_layer(blobs, n)
        layers.append(desc)
        diff_ids.append(diff_id)
        history.append({"created": "2024-01-01T00:00:00Z", "created_by": f"bench layer {n}"})
        st["layers"].append({"compressed": desc["size"], "tar": tar_size})
        st["compressed_bytes"] += desc["size"]
        st["tar_bytes"] += tar_size
        log(f"  layer {n}: {desc['size'] / 1e6:.1f} MB gzip ({time.monotonic() - t0:.1f} s)")
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}
    cdig, csize = write_blob(blobs, config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": cdig, "size": csize},
                "layers": layers}
    mdig, msize = write_blob(blobs, manifest)
    st["compressed_bytes"] += csize + msize
    st["manifest"] = mdig
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": manifest["mediaType"], "digest": mdig, "size": msize,
                            "annotations": {"org.opencontainers.image.ref.name": REF_NAME}}]}
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(tmp, STATS), "w") as f:
        json.dump(st, f, indent=1)
    shutil.rmtree(layout, ignore_errors=True)
    os.replace(tmp, layout)
    return st


def ensure(layout):
    """The cached layout's stats (and its tarball for `berth load`), built
    first when missing or stale."""
    try:
        with open(os.path.join(layout, STATS)) as f:
            st = json.load(f)
        if st.get("version") == VERSION and os.path.exists(layout + ".tar"):
            return st, True
    except (OSError, ValueError):
        pass
    st = build(layout)
    with tarfile.open(layout + ".tar.tmp", "w") as t:
        for name in ("oci-layout", "index.json", "blobs"):
            t.add(os.path.join(layout, name), arcname=name)
    os.replace(layout + ".tar.tmp", layout + ".tar")
    return st, False


def manifest_digest(ref):
    p = run(["skopeo", "--insecure-policy", "inspect", "--raw", "--tls-verify=false",
             f"docker://{ref}"])
    return "sha256:" + hashlib.sha256(p.stdout.encode()).hexdigest()


class Registry:
    """A fresh docker-registry per push: new storage, new port."""

    def __init__(self, d, base):
        self.d, self.base, self.n = d, base, 0
        self.pid = None

    def start(self):
        self.n += 1
        self.dir = f"{self.base}/reg-{self.n}"
        os.makedirs(self.dir)
        self.host = start_registry(self.d, self.dir)
        self.pid = next(p.pid for name, p in self.d.procs if name == "registry")
        return self.host

    def stop(self):
        self.d.stop_named("registry")
        shutil.rmtree(self.dir, ignore_errors=True)


def timed(argv, env, daemon_pid, reg_pid):
    """Wall seconds, CPU seconds of the command (+ the daemon), registry CPU."""
    c0 = children_cpu()
    d0 = proc_cpu(daemon_pid) if daemon_pid else 0.0
    r0 = proc_cpu(reg_pid)
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    cpu = children_cpu() - c0 + ((proc_cpu(daemon_pid) - d0) if daemon_pid else 0.0)
    reg = proc_cpu(reg_pid) - r0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode} after {dt:.2f} s:\n"
                           f"{p.stdout[-2000:]}{p.stderr[-4000:]}")
    return dt, cpu, reg, p.stdout


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed pushes per tool (default 5)")
    ap.add_argument("--workdir", default="/var/tmp/berth-bench-push",
                    help="cache (image layout) and run dir parent (default %(default)s)")
    ap.add_argument("--clean", action="store_true", help="also remove the cached layout at the end")
    ap.add_argument("--berth", default="target/release/berth", help="the berth binary")
    ap.add_argument("--registry-on-disk", action="store_true",
                    help="registry storage on the run dir's filesystem instead of a tmpfs")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench-push needs root (berth serve, a tmpfs mount)")
    for t in ("docker-registry", "skopeo"):
        if shutil.which(t) is None:
            sys.exit(f"{t} not found: apt-get install docker-registry skopeo")
    berth_bin = os.path.abspath(a.berth)
    workdir = os.path.abspath(a.workdir)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    lock = lock_workdir(workdir, "bench-push")  # held for the run
    reap_stale(workdir)
    layout = os.path.join(workdir, "layout")
    run_dir = tempfile.mkdtemp(prefix="run.", dir=workdir)
    d = Daemons(run_dir)
    try:
        return bench(a, d, run_dir, layout, berth_bin)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        d.stop_all()
        unmount_under(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        if a.clean:
            shutil.rmtree(layout, ignore_errors=True)
            for f in (layout + ".tar", os.path.join(workdir, "lock")):
                try:
                    os.unlink(f)
                except OSError:
                    pass
        lock.close()


def bench(a, d, run_dir, layout, berth_bin):
    t0 = time.monotonic()
    log(f"image layout {layout}")
    st, cached = ensure(layout)
    mb = st["compressed_bytes"] / 1e6
    log(f"  {'cached' if cached else 'built'} in {time.monotonic() - t0:.1f} s: "
        f"{LAYERS} layers of random data, {mb:.1f} MB to push (gzip), manifest {st['manifest']}")

    reg_base = f"{run_dir}/registries"
    os.makedirs(reg_base)
    if not a.registry_on_disk:
        run(["mount", "-t", "tmpfs", "-o", "size=2g,mode=0700", "tmpfs", reg_base])
    regs = Registry(d, reg_base)

    berth = Berth(run_dir, berth_bin)
    berth.start(d)
    t0 = time.monotonic()
    berth.cli("load", "-i", layout + ".tar")
    imgs = json.loads(berth.cli("images", "--json").stdout)
    mine = [i["name"] for i in imgs if i.get("digest") == st["manifest"]]
    if not mine:
        raise RuntimeError(f"berth load did not give an image with digest {st['manifest']}: {imgs}")
    src = mine[0]
    log(f"berth: loaded {src} in {time.monotonic() - t0:.1f} s")
    versions = {
        "berth": berth.version(),
        "skopeo": run(["skopeo", "--version"]).stdout.strip(),
        "registry": run(["docker-registry", "--version"]).stdout.strip(),
    }
    for k, v in versions.items():
        log(f"  {k}: {v}")
    log(f"registry storage: {'run dir (disk)' if a.registry_on_disk else 'tmpfs'}, "
        "a fresh registry per push")

    def push_berth(host, rnd):
        ref = f"{host}/bench/berth-{rnd}:latest"
        berth.cli("tag", src, ref)
        argv = [berth.bin, "--address", berth.sock, "-n", pull.NS, "push", "--plain-http",
                "--json", ref]
        dt, cpu, reg, out = timed(argv, berth.env, berth.pid, regs.pid)
        got = json.loads(out)
        if got.get("digest") != st["manifest"]:
            raise RuntimeError(f"berth push printed {got}, expected digest {st['manifest']}")
        berth.cli("rmi", ref)
        return ref, dt, cpu, reg

    def push_skopeo(host, rnd):
        ref = f"{host}/bench/skopeo-{rnd}:latest"
        argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests",
                "--dest-tls-verify=false", f"oci:{layout}:{REF_NAME}", f"docker://{ref}"]
        dt, cpu, reg, _ = timed(argv, None, None, regs.pid)
        return ref, dt, cpu, reg

    tools = {"berth": push_berth, "skopeo": push_skopeo}
    times = {n: [] for n in tools}
    cpus = {n: [] for n in tools}
    regcpu = {n: [] for n in tools}
    busy = host_busy()
    log(f"CPU busy in the 2 s before the rounds: {busy:.0%} of {os.cpu_count()} CPUs")
    if busy > 0.1:
        log("  note: something else is running; wall times will be noisy (CPU s less so)")
    log(f"{a.rounds} rounds, interleaved (order alternating), each push into a fresh registry")
    for rnd in range(1, a.rounds + 1):
        order = list(tools) if rnd % 2 else list(reversed(list(tools)))
        for name in order:
            host = regs.start()
            try:
                ref, dt, cpu, reg = tools[name](host, rnd)
                got = manifest_digest(ref)
                if got != st["manifest"]:
                    raise RuntimeError(f"{name}: the registry has {got} under {ref}, "
                                       f"not {st['manifest']}")
            finally:
                regs.stop()
            times[name].append(dt)
            cpus[name].append(cpu)
            regcpu[name].append(reg)
            log(f"  round {rnd} {name:<7} {dt:7.2f} s  {mb / dt:7.1f} MB/s  CPU {cpu:6.2f} s  "
                f"registry CPU {reg:6.2f} s")

    log(f"CPU busy in the 2 s after the rounds: {host_busy():.0%}")
    log("")
    log(f"image: {mb:.1f} MB pushed per run ({LAYERS} gzip layers of random data); "
        "1 MB = 10^6 bytes")
    log(f"{'tool':<9}{'median s':>10}{'min s':>9}{'MB/s':>9}{'CPU s':>8}{'registry CPU s':>16}"
        "   rounds (s)")
    med = {}
    for name, ts in times.items():
        m = med[name] = statistics.median(ts)
        log(f"{name:<9}{m:>10.2f}{min(ts):>9.2f}{mb / m:>9.1f}{statistics.median(cpus[name]):>8.2f}"
            f"{statistics.median(regcpu[name]):>16.2f}   {' '.join(f'{x:.2f}' for x in ts)}")
    ratio = med["skopeo"] / med["berth"]
    log(f"skopeo/berth (median seconds): {ratio:.2f}x  (>1 means berth is faster)")
    print(json.dumps({"rounds": a.rounds, "versions": versions,
                      "pushed_bytes": st["compressed_bytes"],
                      "seconds": {n: [round(x, 4) for x in ts] for n, ts in times.items()},
                      "median_s": {n: round(m, 4) for n, m in med.items()},
                      "cpu_s": {n: [round(x, 3) for x in ts] for n, ts in cpus.items()},
                      "registry_cpu_s": {n: [round(x, 3) for x in ts] for n, ts in regcpu.items()},
                      "skopeo_over_berth": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as e:
        sys.exit(f"bench-push: {e}")
