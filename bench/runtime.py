#!/usr/bin/env python3
"""Times berth-runtime against runc and crun on the same busybox bundle,
interleaved in one run so machine noise hits all of them alike.

Measured per runtime (medians over N rounds):
  run      `RT run` of /bin/true, end to end
  cycle    create, start, wait, delete as separate calls; "wait" is reaping
           the init as its subreaper, as a shim does
  rss      peak RSS of `create`, from /usr/bin/time's %M (measured in an
           extra, untimed create/delete, so the timings carry no overhead)

Run it through scripts/bench-runtime, which builds a release binary and
hides /sys/fs/cgroup/unified in a private mount namespace (crun 1.8 refuses
this machine's hybrid cgroups otherwise); all runtimes see the same view.
"""
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36


def timed(argv):
    """Runs argv, returns (seconds, exit status)."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ,
                         file_actions=[(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    _, status = os.waitpid(pid, 0)
    return time.perf_counter() - t0, os.waitstatus_to_exitcode(status)


def must(argv):
    dt, code = timed(argv)
    if code != 0:
        sys.exit(f"{' '.join(argv)} exited {code}")
    return dt


def reap(pid):
    """Waits for a reparented init (we are its subreaper)."""
    while True:
        try:
            got, _ = os.waitpid(pid, 0)
            if got == pid:
                return
        except ChildProcessError:
            return


def main():
    rounds = int(os.environ.get("BENCH_ROUNDS", "30"))
    bundle = sys.argv[1]
    runtimes = {}
    for spec in sys.argv[2:]:
        name, path = spec.split("=", 1)
        runtimes[name] = path
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    roots = {n: tempfile.mkdtemp(prefix=f"bench-{n}-") for n in runtimes}
    res = {n: {"run": [], "cycle": [], "rss": []} for n in runtimes}
    for i in range(rounds):
        for name, rt in runtimes.items():
            base = [rt, "--root", roots[name]]
            cid = f"bench-{name}-{os.getpid()}-{i}"
            dt = must(base + ["run", "--bundle", bundle, cid + "-r"])
            res[name]["run"].append(dt)

            pidfile = os.path.join(roots[name], cid + ".pid")
            t0 = time.perf_counter()
            must(base + ["create", "--bundle", bundle, "--pid-file", pidfile, cid])
            must(base + ["start", cid])
            with open(pidfile) as f:
                reap(int(f.read()))
            must(base + ["delete", cid])
            res[name]["cycle"].append(time.perf_counter() - t0)

            rss_file = os.path.join(roots[name], "rss")
            must(["/usr/bin/time", "-f", "%M", "-o", rss_file]
                 + base + ["create", "--bundle", bundle, cid + "-m"])
            with open(rss_file) as f:
                res[name]["rss"].append(int(f.read().split()[-1]))
            must(base + ["delete", "--force", cid + "-m"])
    print(f"{rounds} rounds, interleaved; medians")
    print(f"{'runtime':<10}{'run ms':>10}{'cycle ms':>12}{'create peak RSS MiB':>22}")
    med = {}
    for name in runtimes:
        m = {k: statistics.median(v) for k, v in res[name].items()}
        med[name] = m
        print(f"{name:<10}{m['run']*1e3:>10.1f}{m['cycle']*1e3:>12.1f}{m['rss']/1024:>22.1f}")
    first = next(iter(runtimes))
    for peer in list(runtimes)[1:]:
        r = {k: med[first][k] / med[peer][k] for k in ("run", "cycle", "rss")}
        print(f"{first}/{peer}: run {r['run']:.2f}x  cycle {r['cycle']:.2f}x  rss {r['rss']:.2f}x")
    print(json.dumps({n: {k: round(v, 6) for k, v in m.items()} for n, m in med.items()}))
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
