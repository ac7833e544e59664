#!/usr/bin/env python3
"""Memory of berth-shim against Debian containerd's containerd-shim-runc-v2
running the same busybox container, for 1 and for N shims, after create, an
exec and some log traffic; plus the time from `berth-shim start` to the
container running, against `berth-runtime run -d` alone.

Run through scripts/bench-shim, which builds static release binaries,
starts a private containerd and imports the fixture image.

RSS and PSS come from /proc/PID/smaps_rollup (PSS shares the binary's
pages among the shims that map it, so it is what each shim really costs).
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
WORKLOAD = "for i in $(seq 1 200); do echo log line $i; done; sleep 1000"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def smaps(pid):
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:"):
                vals[parts[0][:-1]] = int(parts[1])
    return vals


def summarize(pids):
    rs = [smaps(p) for p in pids]
    return {
        "n": len(pids),
        "rss_mib": statistics.mean(r["Rss"] for r in rs) / 1024,
        "pss_mib": statistics.mean(r["Pss"] for r in rs) / 1024,
    }


class Berth:
    def __init__(self, work, shim, runtime, fixtures):
        self.work, self.shim, self.runtime, self.fixtures = work, shim, runtime, fixtures
        self.tasks = []

    def args(self, tid, bundle):
        return ["--namespace", "bench", "--id", tid, "--bundle", bundle,
                "--runtime", self.runtime, "--runtime-root", f"{self.work}/rt",
                "--socket-dir", f"{self.work}/s"]

    def bundle(self, tid, args):
        b = f"{self.work}/tasks/{tid}"
        sh(self.fixtures, "bundle", b, "--", *args)
        return b

    def ctl(self, addr, *call):
        return sh(self.shim, "ctl", "--address", addr, *call)

    def run_one(self, tid):
        b = self.bundle(tid, ["sh", "-c", WORKLOAD])
        t0 = time.perf_counter()
        addr = sh(self.shim, "start", *self.args(tid, b)).strip()
        # Create with start: one call, one runtime `run --detach`.
        self.ctl(addr, "create", tid, "--bundle", b, "--log", f"{self.work}/logs/{tid}.log",
                 "--start")
        dt = time.perf_counter() - t0
        self.tasks.append((tid, b, addr))
        proc = f"{self.work}/{tid}-exec.json"
        with open(proc, "w") as f:
            json.dump({"args": ["sh", "-c", "echo exec"], "cwd": "/", "env": ["PATH=/bin"],
                       "user": {"uid": 0, "gid": 0}}, f)
        self.ctl(addr, "exec", tid, "e1", "--process", proc)
        self.ctl(addr, "start", tid, "--exec-id", "e1")
        self.ctl(addr, "wait", tid, "--exec-id", "e1")
        return dt

    def pids(self):
        return [int(open(f"{b}/shim.pid").read()) for _, b, _ in self.tasks]

    def cleanup(self):
        for tid, _, addr in self.tasks:
            self.ctl(addr, "kill", tid, "--signal", "9")
            self.ctl(addr, "wait", tid)
            self.ctl(addr, "delete", tid)
            self.ctl(addr, "shutdown")
        self.tasks = []


class Containerd:
    def __init__(self, address):
        self.address = address
        self.ids = []

    def ctr(self, *args):
        return sh("ctr", "--address", self.address, "-n", "bench", *args)

    def run_one(self, cid):
        self.ctr("run", "-d", "docker.io/library/busybox:latest", cid, "sh", "-c", WORKLOAD)
        self.ids.append(cid)
        self.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo exec")

    def pids(self):
        out = sh("ps", "-eo", "pid,args")
        return [int(l.split()[0]) for l in out.splitlines()
                if "containerd-shim-runc-v2" in l and "-namespace bench" in l]

    def cleanup(self):
        for cid in self.ids:
            subprocess.run(["ctr", "--address", self.address, "-n", "bench", "task", "kill",
                            "-s", "SIGKILL", cid], capture_output=True)
        time.sleep(0.5)
        for cid in self.ids:
            subprocess.run(["ctr", "--address", self.address, "-n", "bench", "task", "delete",
                            "-f", cid], capture_output=True)
            subprocess.run(["ctr", "--address", self.address, "-n", "bench", "container",
                            "delete", cid], capture_output=True)
        self.ids = []


def bench_parents():
    """containerd's runc puts namespace "bench"'s containers under
    /bench in every hierarchy: the parent directories it may create."""
    root = "/sys/fs/cgroup"
    return {os.path.join(root, h, "bench") for h in os.listdir(root)
            if os.path.isdir(os.path.join(root, h)) and not os.path.islink(os.path.join(root, h))}


def main():
    work, shim, runtime, fixtures, bench, ctd_address = sys.argv[1:7]
    n = int(os.environ.get("BENCH_SHIMS", "50"))
    existing = {p for p in bench_parents() if os.path.isdir(p)}
    try:
        run(work, shim, runtime, fixtures, bench, ctd_address, n)
    finally:
        # Leave no empty parent cgroup behind that this run created.
        for p in sorted(bench_parents() - existing):
            try:
                os.rmdir(p)
            except OSError:
                pass


def run(work, shim, runtime, fixtures, bench, ctd_address, n):
    os.makedirs(f"{work}/logs", exist_ok=True)
    berth = Berth(work, shim, runtime, fixtures)
    ctd = Containerd(ctd_address)
    results = {}
    for count in (1, n):
        for i in range(count):
            berth.run_one(f"b{count}-{i}")
        time.sleep(0.5)
        results[("berth-shim", count)] = summarize(berth.pids())
        berth.cleanup()
        for i in range(count):
            ctd.run_one(f"c{count}-{i}")
        time.sleep(0.5)
        results[("containerd-shim-runc-v2", count)] = summarize(ctd.pids())
        ctd.cleanup()
    # Time to running from a shell: two client processes (`berth-shim start`,
    # then `berth-shim ctl create --start`) against one, interleaved.
    shim_t, rt_t = [], []
    b = berth.bundle("rt", ["sleep", "1000"])
    for i in range(ROUNDS):
        shim_t.append(berth.run_one(f"t{i}"))
        berth.cleanup()
        t0 = time.perf_counter()
        # A detached container keeps its stdio: do not capture it.
        subprocess.run([runtime, "--root", f"{work}/rt2", "run", "-d", "--bundle", b, f"r{i}"],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        rt_t.append(time.perf_counter() - t0)
        sh(runtime, "--root", f"{work}/rt2", "delete", "-f", f"r{i}")
    # Time to running as the manager sees it: one client process that runs
    # `berth-shim start`, connects and creates with start, against the same
    # process running `berth-runtime run --detach` (berth-bench shim-start).
    # Bundles and state on a tmpfs, where they live in production (/run):
    # this machine's /run is on a disk whose metadata operations take from
    # 20 us to 0.3 ms depending on its mood, which swung the shim path
    # (a dozen small files) by up to 2 ms from run to run.
    os.makedirs(f"{work}/tmpfs")
    sh("mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", f"{work}/tmpfs")
    try:
        timing = json.loads(sh(bench, "shim-start", "--shim", shim, "--runtime", runtime,
                               "--work", f"{work}/tmpfs/timing", "--rounds", str(ROUNDS)))
    finally:
        sh("umount", f"{work}/tmpfs")
    print(f"{'shim':<26}{'shims':>6}{'RSS MiB/shim':>14}{'PSS MiB/shim':>14}")
    for (name, count), r in results.items():
        print(f"{name:<26}{count:>6}{r['rss_mib']:>14.2f}{r['pss_mib']:>14.2f}")
    for count in (1, n):
        b_, c_ = results[("berth-shim", count)], results[("containerd-shim-runc-v2", count)]
        print(f"berth/containerd at {count}: RSS {b_['rss_mib'] / c_['rss_mib']:.2f}x  "
              f"PSS {b_['pss_mib'] / c_['pss_mib']:.2f}x")
    t = timing
    print(f"start to running, as the manager does (one client process, {t['rounds']} rounds, "
          f"state on tmpfs): "
          f"berth-shim start {t['shim_start_ms']:.1f} ms + connect {t['connect_ms']:.1f} ms + "
          f"create with start {t['create_start_ms']:.1f} ms = {t['shim_total_ms']:.1f} ms, "
          f"berth-runtime run -d {t['runtime_run_ms']:.1f} ms: {t['ratio']:.2f}x "
          f"(median of the rounds' ratios)")
    ms, mr = statistics.median(shim_t) * 1e3, statistics.median(rt_t) * 1e3
    print(f"start to running from a shell (berth-shim start, then berth-shim ctl create --start): "
          f"{ms:.1f} ms, berth-runtime run -d {mr:.1f} ms: {ms / mr:.2f}x")


if __name__ == "__main__":
    main()
