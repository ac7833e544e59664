"""The collector at scale (scripts/bench-gc): for each size, a fresh private
daemon loads images of one-file layers (--layers each, so size/layers
images, every layer its own snapshot), removes them, and runs `berth gc`
while a client issues `berth ps -a` back to back. Prints per size the
collection's wall time, its time per snapshot (flat when it scales
linearly), its ratio to the smallest size against the ratio of sizes, and
the p50/p99/max latency of the `ps` calls that ran during the sweep.

No peer is run: containerd collects in the background on its own schedule,
so there is no command whose time is its sweep's.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import Daemons, Failed, log, run, unmount_under, wait_until  # noqa: E402


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def one_size(bin_dir, work, snapshots, layers):
    images = max(1, snapshots // layers)
    run_dir = tempfile.mkdtemp(prefix=f"g{snapshots}-", dir=work)
    daemons = Daemons(run_dir)
    sock = f"{run_dir}/state/berth.sock"
    berth = [f"{bin_dir}/berth", "--address", sock]
    try:
        layout = f"{run_dir}/layered"
        run([f"{bin_dir}/berth-fixtures", "layered", layout, "--images", str(images),
             "--layers", str(layers)])
        run(["tar", "-C", layout, "-cf", f"{layout}.tar", "."])
        shutil.rmtree(layout)
        p = daemons.start("berth", [f"{bin_dir}/berth", "serve", "--root", f"{run_dir}/root",
                                    "--state", f"{run_dir}/state", "--log-level", "warn"])
        wait_until("berth socket", lambda: os.path.exists(sock), daemons, "berth", p)
        t = time.monotonic()
        run(berth + ["load", "-i", f"{layout}.tar"], timeout=3600)
        load_s = time.monotonic() - t
        run(berth + ["rmi"] + [f"layered-{i}" for i in range(images)])

        # `ps -a` back to back from a shell of its own (not a thread of
        # this interpreter, which the collection's own client competes
        # with), each call's start and end in ns; the calls that overlap
        # the sweep count.
        samples = f"{run_dir}/ps.samples"
        loop = subprocess.Popen(
            ["sh", "-c", 'while :; do s=$(date +%s%N); "$@" ps -a >/dev/null 2>&1; '
             'echo "$s $(date +%s%N)"; done', "sh"] + berth,
            stdout=open(samples, "w"), stdin=subprocess.DEVNULL)
        time.sleep(0.5)  # the client is running before the sweep starts
        t0 = time.time_ns()
        t = time.monotonic()
        out = run(berth + ["gc", "--json"], timeout=3600).stdout
        gc_s = time.monotonic() - t
        t1 = time.time_ns()
        time.sleep(0.1)
        loop.terminate()
        loop.wait()
        during = []
        with open(samples) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and int(parts[0]) <= t1 and int(parts[1]) >= t0:
                    during.append((int(parts[1]) - int(parts[0])) / 1e6)
        removed = json.loads(out)["snapshotsRemoved"]
        if removed != images * layers:
            raise Failed("berth", f"gc removed {removed} snapshots, expected {images * layers}")
        return {"snapshots": removed, "load_s": load_s, "gc_s": gc_s, "ps": during}
    finally:
        daemons.stop_all()
        unmount_under(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--layers", type=int, default=25)
    ap.add_argument("--workdir", default="/var/tmp")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    work = tempfile.mkdtemp(prefix="bgc-", dir=a.workdir)
    try:
        results = [one_size(a.bin_dir, work, n, a.layers) for n in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[0]
    log(f"{'snapshots':>9} {'load s':>8} {'gc s':>8} {'us/snap':>8} {'gc x':>7} {'size x':>7}"
        f" {'ps n':>5} {'ps p50':>7} {'ps p99':>7} {'ps max':>7}")
    for r in results:
        ps = r["ps"]
        log(f"{r['snapshots']:>9} {r['load_s']:>8.1f} {r['gc_s']:>8.3f}"
            f" {r['gc_s'] / r['snapshots'] * 1e6:>8.0f}"
            f" {r['gc_s'] / base['gc_s']:>7.1f} {r['snapshots'] / base['snapshots']:>7.1f}"
            f" {len(ps):>5} {pct(ps, 0.5):>7.1f} {pct(ps, 0.99):>7.1f} {max(ps, default=0):>7.1f}")
    log("gc x against size x: equal when collection is linear in what it removes; ps in ms "
        "(issue 16's target: p99 under 50 ms)")


if __name__ == "__main__":
    main()
