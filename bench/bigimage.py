#!/usr/bin/env python3
"""Builds, offline, a large multi-layer OCI image layout from the host's own
files, for pull benchmarks (bench/pull.py).

Each layer takes the regular files, symlinks and directories of a few host
trees (walked in sorted order, never crossing a filesystem, skipping
/usr/lib/debug, special files and files over the layer's size limit) until the
layer's size cap is reached. Layers are gzip level 6 tars (PAX, the host's
modes and owners, hard links kept within a layer); the config has
rootfs.diff_ids (sha256 of the uncompressed tars) and the layout is a
standard OCI image layout: oci-layout, index.json (the manifest annotated
with org.opencontainers.image.ref.name) and blobs/sha256/.

    python3 bench/bigimage.py DIR [NAME]   # builds DIR (if not cached), prints stats
"""
import gzip
import hashlib
import json
import os
import shutil
import stat
import sys
import tarfile
import time

# Bump when the recipe changes: a cached layout with another version is rebuilt.
VERSION = 2
REF_NAME = "big"
KiB = 1024
MiB = 1024 * KiB
SKIP = ("/usr/lib/debug", "/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp")
# (layer, host trees, cap on the layer's file data, largest file taken): a
# few big binaries and libraries, and many small headers, data and sources.
LAYERS = [
    ("binaries", ["/usr/bin", "/usr/sbin"], 45 * MiB, 8 * MiB),
    ("headers", ["/usr/include"], 30 * MiB, 256 * KiB),
    ("share", ["/usr/share"], 40 * MiB, 64 * KiB),
    ("libs", ["/usr/lib"], 45 * MiB, 8 * MiB),
    ("python+etc", ["/usr/lib/python3", "/usr/lib/python3.11", "/etc"], 40 * MiB, 512 * KiB),
]
STATS = "bench-image.json"  # written last: its presence marks a complete layout


class HashingWriter:
    """A write-only file that hashes and counts what goes through it."""

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


def walk(root):
    """(path, lstat) of root and everything under it, sorted, on one filesystem."""
    try:
        st = os.lstat(root)
    except OSError:
        return
    dev = st.st_dev
    stack = [root]
    while stack:
        p = stack.pop()
        if p.startswith(SKIP):
            continue
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if st.st_dev != dev:
            continue
        yield p, st
        if stat.S_ISDIR(st.st_mode):
            try:
                names = sorted(os.listdir(p), reverse=True)
            except OSError:
                continue
            stack.extend(os.path.join(p, n) for n in names)


def add_parents(tar, path, seen):
    """Adds the directory entries leading to path that this layer lacks."""
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        if d in seen:
            continue
        seen.add(d)
        ti = tar.gettarinfo(d, arcname=d.lstrip("/"))
        tar.addfile(ti)


def build_layer(blobs, trees, cap, max_file, taken):
    """Writes one gzip layer into blobs; returns its descriptor and stats."""
    tmp = os.path.join(blobs, "layer.tmp")
    data = files = regs = 0
    with open(tmp, "wb") as raw:
        comp = HashingWriter(raw)
        gz = gzip.GzipFile(fileobj=comp, mode="wb", compresslevel=6, mtime=0)
        plain = HashingWriter(gz)
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            seen = set()
            full = False
            for tree in trees:
                if full:
                    break
                for p, st in walk(tree):
                    if p in taken:
                        continue
                    mode = st.st_mode
                    if stat.S_ISREG(mode):
                        if st.st_size > max_file:
                            continue
                        if data + st.st_size > cap:
                            full = True
                            break
                        try:
                            f = open(p, "rb")
                        except OSError:
                            continue
                        with f:
                            add_parents(tar, p, seen)
                            ti = tar.gettarinfo(p, arcname=p.lstrip("/"), fileobj=f)
                            tar.addfile(ti, f if ti.isreg() else None)
                        data += st.st_size
                        regs += 1
                    elif stat.S_ISLNK(mode):
                        add_parents(tar, p, seen)
                        tar.add(p, arcname=p.lstrip("/"), recursive=False)
                    elif stat.S_ISDIR(mode):
                        if p not in seen:
                            add_parents(tar, p, seen)
                            seen.add(p)
                            tar.add(p, arcname=p.lstrip("/"), recursive=False)
                    else:
                        continue  # sockets, fifos, devices
                    taken.add(p)
                    files += 1
        gz.close()
    digest = comp.sha.hexdigest()
    os.replace(tmp, os.path.join(blobs, digest))
    desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": "sha256:" + digest, "size": comp.size}
    return desc, "sha256:" + plain.sha.hexdigest(), plain.size, data, files, regs


def write_blob(blobs, obj):
    b = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    d = hashlib.sha256(b).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(b)
    return "sha256:" + d, len(b)


def build(layout):
    """Builds the layout at `layout` (through a temporary sibling) and returns its stats."""
    tmp = layout + ".building"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    taken = set()
    layers, diff_ids, history = [], [], []
    st = {"version": VERSION, "ref_name": REF_NAME, "layers": [], "compressed_bytes": 0,
          "tar_bytes": 0, "file_bytes": 0, "files": 0, "regular_files": 0}
    for name, trees, cap, max_file in LAYERS:
        t0 = time.monotonic()
        desc, diff_id, tar_size, data, files, regs = build_layer(blobs, trees, cap, max_file, taken)
        layers.append(desc)
        diff_ids.append(diff_id)
        history.append({"created": "2024-01-01T00:00:00Z", "created_by": f"bench layer {name}"})
        st["layers"].append({"name": name, "compressed": desc["size"], "tar": tar_size,
                             "file_bytes": data, "entries": files, "regular_files": regs})
        st["compressed_bytes"] += desc["size"]
        st["tar_bytes"] += tar_size
        st["file_bytes"] += data
        st["files"] += files
        st["regular_files"] += regs
        print(f"  layer {name:<10} {files:>6} entries ({regs} files) {data / 1e6:7.1f} MB data "
              f"{desc['size'] / 1e6:7.1f} MB gzip  ({time.monotonic() - t0:.1f} s)", flush=True)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/usr/bin/bash"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    cdig, csize = write_blob(blobs, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cdig, "size": csize},
        "layers": layers,
    }
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
    """The cached layout's stats, building it first when missing or stale."""
    try:
        with open(os.path.join(layout, STATS)) as f:
            st = json.load(f)
        if st.get("version") == VERSION:
            return st, True
    except (OSError, ValueError):
        pass
    return build(layout), False


def main():
    layout = os.path.abspath(sys.argv[1])
    st, cached = ensure(layout)
    print(json.dumps({"cached": cached, **st}, indent=1))


if __name__ == "__main__":
    main()
