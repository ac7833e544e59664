//! Property tests (proptest, stable Rust) for the runtime's parser of
//! outside input: a bundle's `config.json`, read by [`config::load`]. A
//! config that loads must also survive the trip through `state.json`, where
//! the runtime keeps it for the commands after `create`.
//!
//! The suite runs 200 cases per property (about 1 s each in a debug build);
//! set `BERTH_PROPTEST_CASES=N` for a long run:
//!
//! ```text
//! BERTH_PROPTEST_CASES=100000 cargo test -p berth-runtime --release proptests -- --nocapture
//! ```
//!
//! Failures are not persisted to `proptest-regressions` files (the runner
//! prints the minimised input): each crash a run finds is to become a plain
//! `#[test]` next to the code it crashed.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::config;
use berth_testkit::json::{field, mutate, obj, opt_field, pick, Mutation};
use berth_testkit::run::{cases, check, Tally};

/// How a load ended, for the tally: the check that refused it without the
/// values it quotes, or the error's variant.
fn outcome<T>(r: &Result<T, config::ConfigError>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(config::ConfigError::Invalid(m)) => format!(
            "Invalid({})",
            m.split('"')
                .next()
                .unwrap_or("")
                .split(' ')
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
        ),
        Err(e) => format!("{e:?}")
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("")
            .to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Generators.

fn any_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", "/", "rootfs", "/proc", "/dev/null", "rel", "../..", "/proc/1/ns/net",
            "/nonexistent", "CAP_SYS_ADMIN", "CAP_NOPE", "RLIMIT_NOFILE", "RLIMIT_NOPE",
            "SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW", "bogus", "mount", "pid", "network", "ipc", "uts",
            "user", "cgroup", "time", "kernel.hostname", "net.ipv4.ip_forward", "kernel.shmmax",
            "fs.mqueue.x", "a..b", "PATH=/bin", "rbind", "ro", "tmpfs", "bind",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z/._:=-]{0,20}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        2 => (-2i64..70000).prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        4 => any_string().prop_map(Value::String),
    ]
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "ociVersion", "root", "path", "readonly", "process", "args", "cwd", "user", "uid",
            "gid", "env", "terminal", "capabilities", "bounding", "rlimits", "type", "hard",
            "soft", "hostname", "domainname", "mounts", "destination", "source", "options",
            "linux", "namespaces", "uidMappings", "gidMappings", "containerID", "hostID", "size",
            "sysctl", "resources", "seccomp", "defaultAction", "syscalls", "names", "action",
            "devices", "maskedPaths", "readonlyPaths", "hooks", "prestart", "annotations",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z]{0,8}",
    ]
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

fn string_map() -> BoxedStrategy<Value> {
    prop::collection::btree_map(any_string(), any_string(), 0..3)
        .prop_map(|m| json!(m))
        .boxed()
}

fn list(item: BoxedStrategy<Value>, max: usize) -> BoxedStrategy<Value> {
    prop::collection::vec(item, 0..max)
        .prop_map(Value::Array)
        .boxed()
}

fn small_int() -> BoxedStrategy<Value> {
    (0u32..1000).prop_map(Value::from).boxed()
}

/// A uid, gid or mapping size.
fn id_int() -> BoxedStrategy<Value> {
    prop_oneof![
        8 => (0u32..70000).prop_map(Value::from),
        1 => Just(json!(u32::MAX)),
    ]
    .boxed()
}

fn strings(words: &[&'static str], max: usize) -> BoxedStrategy<Value> {
    list(pick(words), max)
}

fn process() -> BoxedStrategy<Value> {
    let caps = || opt_field(strings(&["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_RAW"], 3));
    obj(vec![
        (
            "args",
            field(
                prop::collection::vec(pick(&["sh", "/bin/true", ""]), 1..3).prop_map(Value::Array),
            ),
        ),
        (
            "cwd",
            field(prop_oneof![4 => pick(&["/", "/tmp"]), 1 => pick(&["rel", "", "/a/../.."])]),
        ),
        (
            "user",
            field(obj(vec![
                ("uid", field(id_int())),
                ("gid", field(id_int())),
                ("umask", opt_field(small_int())),
                ("additionalGids", opt_field(list(id_int(), 3))),
            ])),
        ),
        (
            "env",
            opt_field(strings(&["PATH=/bin", "A", "=", "B=\u{0}"], 3)),
        ),
        ("terminal", opt_field(any::<bool>().prop_map(Value::Bool))),
        (
            "capabilities",
            opt_field(obj(vec![
                ("bounding", caps()),
                ("effective", caps()),
                ("permitted", caps()),
                ("inheritable", caps()),
                ("ambient", caps()),
            ])),
        ),
        (
            "rlimits",
            opt_field(list(
                obj(vec![
                    ("type", field(pick(&["RLIMIT_NOFILE", "RLIMIT_NPROC"]))),
                    ("hard", field(small_int())),
                    ("soft", field(small_int())),
                ]),
                3,
            )),
        ),
        (
            "noNewPrivileges",
            opt_field(any::<bool>().prop_map(Value::Bool)),
        ),
        ("oomScoreAdj", opt_field(small_int())),
        ("apparmorProfile", opt_field(pick(&["unconfined", ""]))),
        (
            "consoleSize",
            opt_field(obj(vec![
                ("height", field(small_int())),
                ("width", field(small_int())),
            ])),
        ),
        (
            "scheduler",
            opt_field(obj(vec![
                ("policy", field(pick(&["SCHED_OTHER", "SCHED_FIFO"]))),
                ("priority", opt_field(small_int())),
            ])),
        ),
        (
            "ioPriority",
            opt_field(obj(vec![
                (
                    "class",
                    field(pick(&["IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE"])),
                ),
                ("priority", field(small_int())),
            ])),
        ),
    ])
}

fn linux() -> BoxedStrategy<Value> {
    // Each type once, mostly; a duplicate now and then.
    let ns = (
        prop::sample::subsequence(
            vec![
                "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
            ],
            0..=8,
        ),
        prop::collection::vec(
            prop_oneof![
                6 => Just(None),
                1 => prop::sample::select(vec![
                    "/proc/1/ns/net",
                    "/proc/1/ns/uts",
                    "/proc/self/ns/ipc",
                    "rel",
                    "/nonexistent",
                    "",
                ])
                .prop_map(Some),
            ],
            8,
        ),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(types, paths, dup)| {
            let mut v: Vec<Value> = types
                .iter()
                .zip(paths)
                .map(|(t, p)| match p {
                    Some(p) => json!({"type": t, "path": p}),
                    None => json!({"type": t}),
                })
                .collect();
            if dup {
                if let Some(first) = v.first().cloned() {
                    v.push(first);
                }
            }
            Value::Array(v)
        });
    let mapping = || {
        opt_field(list(
            obj(vec![
                ("containerID", field(id_int())),
                ("hostID", field(id_int())),
                ("size", field(id_int())),
            ]),
            3,
        ))
    };
    obj(vec![
        ("namespaces", field(ns)),
        ("uidMappings", mapping()),
        ("gidMappings", mapping()),
        (
            "sysctl",
            opt_field(
                prop::collection::btree_map(
                    prop_oneof![
                        3 => prop::sample::select(vec![
                            "kernel.hostname", "kernel.domainname", "net.ipv4.ip_forward",
                            "kernel.shmmax", "fs.mqueue.msg_max", "vm.swappiness", "a..b",
                            "kernel/../x", "", "..", "kernel.core_pattern",
                        ])
                        .prop_map(str::to_owned),
                        1 => any_string(),
                    ],
                    any_string(),
                    0..3,
                )
                .prop_map(|m| json!(m)),
            ),
        ),
        (
            "resources",
            opt_field(obj(vec![
                (
                    "memory",
                    opt_field(obj(vec![("limit", field(small_int()))])),
                ),
                ("pids", opt_field(obj(vec![("limit", field(small_int()))]))),
                (
                    "devices",
                    opt_field(list(
                        obj(vec![
                            ("allow", field(any::<bool>().prop_map(Value::Bool))),
                            ("access", opt_field(pick(&["rwm", "r", ""]))),
                        ]),
                        2,
                    )),
                ),
            ])),
        ),
        (
            "cgroupsPath",
            opt_field(pick(&["/berth/x", "rel", "../../..", ""])),
        ),
        (
            "seccomp",
            opt_field(obj(vec![
                (
                    "defaultAction",
                    field(pick(&["SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW"])),
                ),
                (
                    "architectures",
                    opt_field(strings(&["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"], 2)),
                ),
                (
                    "syscalls",
                    opt_field(list(
                        obj(vec![
                            ("names", field(strings(&["read", "mount", "nope"], 3))),
                            ("action", field(pick(&["SCMP_ACT_ALLOW", "SCMP_ACT_KILL"]))),
                            (
                                "args",
                                opt_field(list(
                                    obj(vec![
                                        ("index", field(small_int())),
                                        ("value", field(small_int())),
                                        ("op", field(pick(&["SCMP_CMP_EQ"]))),
                                    ]),
                                    2,
                                )),
                            ),
                        ]),
                        3,
                    )),
                ),
            ])),
        ),
        (
            "devices",
            opt_field(list(
                obj(vec![
                    ("type", field(pick(&["c", "b", "u", "p"]))),
                    ("path", field(pick(&["/dev/fuse", "rel", "/dev/../etc/x"]))),
                    ("major", opt_field(small_int())),
                    ("minor", opt_field(small_int())),
                ]),
                3,
            )),
        ),
        (
            "maskedPaths",
            opt_field(strings(&["/proc/kcore", "rel", ""], 3)),
        ),
        (
            "readonlyPaths",
            opt_field(strings(&["/proc/sys", "rel", ""], 3)),
        ),
        ("rootfsPropagation", opt_field(pick(&["private", "rslave"]))),
        (
            "personality",
            opt_field(obj(vec![("domain", field(pick(&["LINUX", "LINUX32"])))])),
        ),
    ])
}

/// A config.json as OCI bundles hold them, perturbed field by field.
fn spec_value() -> BoxedStrategy<Value> {
    let mount = obj(vec![
        (
            "destination",
            field(pick(&["/proc", "/dev", "rel", "", "/a/../../b"])),
        ),
        ("type", opt_field(pick(&["proc", "tmpfs", "bind", "bogus"]))),
        (
            "source",
            opt_field(pick(&["proc", "/", "rel", "/nonexistent"])),
        ),
        (
            "options",
            opt_field(strings(&["ro", "rbind", "nosuid", "bogus", "size=1k"], 4)),
        ),
    ]);
    let hook = obj(vec![
        ("path", field(pick(&["/bin/true", "rel", ""]))),
        ("args", opt_field(strings(&["x"], 2))),
        ("timeout", opt_field(small_int())),
    ]);
    obj(vec![
        ("ociVersion", field(pick(&["1.0.2", "1.2.0", "", "0.1"]))),
        (
            "root",
            field(obj(vec![
                (
                    "path",
                    field(prop_oneof![
                        4 => pick(&["rootfs", "/", "rootfs/../rootfs", "../"]),
                        1 => pick(&["/nonexistent", "config.json", "", "file"]),
                    ]),
                ),
                ("readonly", opt_field(any::<bool>().prop_map(Value::Bool))),
            ])),
        ),
        ("process", field(process())),
        ("hostname", opt_field(pick(&["h", "", "a.b"]))),
        ("domainname", opt_field(pick(&["d", ""]))),
        ("mounts", opt_field(list(mount, 4))),
        ("linux", field(linux())),
        (
            "hooks",
            opt_field(obj(vec![
                ("prestart", opt_field(list(hook.clone(), 2))),
                ("createRuntime", opt_field(list(hook.clone(), 2))),
                ("poststop", opt_field(list(hook, 2))),
            ])),
        ),
        ("annotations", opt_field(string_map())),
    ])
}

/// An edit of a well-formed config: the value at a path (chosen by the
/// indexes, one per level) replaced by any value, or removed.
fn mutation() -> BoxedStrategy<Mutation> {
    (
        prop::collection::vec(any::<prop::sample::Index>(), 1..6),
        prop_oneof![
            4 => leaf().prop_map(Some),
            2 => json_value().prop_map(Some),
            1 => Just(None),
        ],
    )
        .prop_map(|(path, value)| Mutation { path, value })
        .boxed()
}

/// A well-formed config with a few edits.
fn mutated_spec() -> BoxedStrategy<Value> {
    (
        spec_value(),
        prop_oneof![
            1 => Just(Vec::new()),
            1 => prop::collection::vec(mutation(), 1..3),
        ],
    )
        .prop_map(|(mut v, edits)| {
            for m in edits {
                mutate(&mut v, &m.path, m.value);
            }
            v
        })
        .boxed()
}

// ---------------------------------------------------------------------------
// Properties.

/// Writes `bytes` as the config.json of a bundle holding `rootfs/` and a
/// regular file `file`, and loads it. A config that loads must satisfy what
/// create relies on and survive the trip through state.json, where the
/// runtime keeps it for later commands.
fn load_bytes(bytes: &[u8], tally: &Tally) -> Result<(), TestCaseError> {
    let fail = |e: std::io::Error| TestCaseError::fail(e.to_string());
    let dir = tempfile::tempdir().map_err(fail)?;
    std::fs::create_dir(dir.path().join("rootfs")).map_err(fail)?;
    std::fs::write(dir.path().join("file"), b"").map_err(fail)?;
    std::fs::write(dir.path().join("config.json"), bytes).map_err(fail)?;
    let r = config::load(dir.path());
    tally.count(&outcome(&r));
    let Ok(b) = r else {
        return Ok(());
    };
    prop_assert!(b.rootfs.is_dir());
    prop_assert!(b.dir.is_absolute() && b.dir.join("config.json").is_file());
    let process = b.spec.process().as_ref();
    prop_assert!(process.is_some_and(|p| p.cwd().is_absolute()));
    prop_assert!(process
        .and_then(|p| p.args().as_ref())
        .is_some_and(|a| !a.is_empty()));
    let saved = serde_json::to_vec(&b.spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let again: Result<oci_spec::runtime::Spec, _> = serde_json::from_slice(&saved);
    prop_assert!(
        again.as_ref().is_ok_and(|s| *s == b.spec),
        "the spec does not survive state.json: {:?}\n{}",
        again.err(),
        String::from_utf8_lossy(&saved)
    );
    Ok(())
}

#[test]
fn config_json_of_any_bytes_never_panics() {
    let tally = Tally::default();
    check(
        "config_json_any_bytes",
        cases(200),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            // Almost a config: a spec with a byte changed or cut short.
            (spec_value(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, i, b)| {
                let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
                if !bytes.is_empty() {
                    let i = i.index(bytes.len());
                    if b % 2 == 0 {
                        bytes[i] = b;
                    } else {
                        bytes.truncate(i);
                    }
                }
                bytes
            }),
        ],
        |bytes| load_bytes(&bytes, &tally),
    );
    tally.print("config_json_any_bytes");
}

#[test]
fn config_json_of_any_spec_never_panics() {
    let tally = Tally::default();
    check(
        "config_json_any_spec",
        cases(200),
        prop_oneof![1 => json_value(), 6 => mutated_spec()],
        |v| {
            let bytes = serde_json::to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            load_bytes(&bytes, &tally)
        },
    );
    tally.print("config_json_any_spec");
}
