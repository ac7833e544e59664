use super::*;

fn opts() -> Options {
    Options::default()
}

#[test]
fn caps_follow_docker() {
    let mut o = opts();
    assert_eq!(capabilities(&o).unwrap().len(), 14);
    o.cap_drop = vec!["net_raw".into()];
    o.cap_add = vec!["SYS_ADMIN".into()];
    let c = capabilities(&o).unwrap();
    assert!(!c.contains(&"CAP_NET_RAW".to_string()) && c.contains(&"CAP_SYS_ADMIN".to_string()));
    o.cap_drop = vec!["ALL".into()];
    o.cap_add = vec![];
    assert!(capabilities(&o).unwrap().is_empty());
    o.cap_add = vec!["CAP_BOGUS".into()];
    assert!(capabilities(&o).is_err());
    let p = Options {
        privileged: true,
        ..opts()
    };
    assert_eq!(capabilities(&p).unwrap(), grantable());
    assert!(grantable().len() > 14);
}

#[test]
fn entrypoint_cmd_and_env_follow_docker() {
    let img = ImageConfig {
        entrypoint: vec!["/entry".into()],
        cmd: vec!["default".into()],
        env: vec!["A=1".into(), "PATH=/bin".into()],
        ..Default::default()
    };
    assert_eq!(args(&img, &opts()).unwrap(), ["/entry", "default"]);
    let o = Options {
        args: vec!["x".into()],
        ..opts()
    };
    assert_eq!(args(&img, &o).unwrap(), ["/entry", "x"]);
    let o = Options {
        entrypoint: vec!["sh".into()],
        entrypoint_set: true,
        ..opts()
    };
    assert_eq!(args(&img, &o).unwrap(), ["sh"]);
    assert!(args(&ImageConfig::default(), &opts()).is_err());
    assert_eq!(
        merge_env(&img.env, &["A=2".into()]).unwrap(),
        ["PATH=/bin", "A=2"]
    );
    assert!(merge_env(&[], &["NOEQ".into()]).is_err());
}

/// A golden case: name, image config, options, user, volumes.
type Case = (
    &'static str,
    ImageConfig,
    Options,
    Ids,
    Vec<(String, std::path::PathBuf)>,
);

/// The inputs of the golden specs: the cases the CLI and the CRI make.
fn golden_cases() -> Vec<Case> {
    let img = ImageConfig {
        entrypoint: vec!["/docker-entrypoint.sh".into()],
        cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
        env: vec![
            "PATH=/usr/sbin:/usr/bin".into(),
            "NGINX_VERSION=1.27".into(),
        ],
        working_dir: "/srv".into(),
        user: "nginx".into(),
        stop_signal: "SIGQUIT".into(),
        volumes: vec!["/var/cache/nginx".into()],
    };
    let root = Ids {
        uid: 0,
        gid: 0,
        additional_gids: vec![],
    };
    let bind = |s: &str, d: &str, ro: bool| Bind {
        source: s.into(),
        destination: d.into(),
        readonly: ro,
        ..Default::default()
    };
    vec![
        ("default", img.clone(), opts(), root.clone(), vec![]),
        (
            "options",
            img.clone(),
            Options {
                args: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["NGINX_VERSION=2".into(), "EXTRA=1".into()],
                cwd: "/tmp".into(),
                user: "1000:10".into(),
                cap_add: vec!["sys_admin".into(), "CAP_NET_ADMIN".into()],
                cap_drop: vec!["NET_RAW".into(), "chown".into()],
                mounts: vec![
                    bind("/srv/data", "/data", false),
                    bind("/etc/ssl", "/ssl", true),
                ],
                memory_bytes: 64 << 20,
                cpus: 1.5,
                pids_limit: 50,
                readonly_rootfs: true,
                network: "none".into(),
                hostname: "web-1".into(),
                terminal: true,
                stdin: true,
                ..opts()
            },
            Ids {
                uid: 1000,
                gid: 10,
                additional_gids: vec![27, 100],
            },
            vec![(
                "/var/cache/nginx".into(),
                "/var/lib/berth/containers/default/web/volumes/0".into(),
            )],
        ),
        (
            "bridge-entrypoint",
            ImageConfig::default(),
            Options {
                entrypoint: vec!["/bin/sh".into()],
                entrypoint_set: true,
                network: "bridge".into(),
                cap_drop: vec!["ALL".into()],
                ..opts()
            },
            root.clone(),
            vec![],
        ),
        (
            "privileged",
            img,
            Options {
                privileged: true,
                network: "host".into(),
                memory_bytes: 1 << 30,
                ..opts()
            },
            root,
            vec![],
        ),
    ]
}

fn golden_spec(
    case: &str,
    img: &ImageConfig,
    o: &Options,
    ids: Ids,
    volumes: &[(String, std::path::PathBuf)],
) -> String {
    let mut v = generate(&Inputs {
        namespace: "default",
        cgroup_parent: "/berth",
        id: &format!("{case}-container-id"),
        image: img,
        options: o,
        ids,
        etc: EtcFiles {
            hosts: Path::new("/run/berth/c/hosts"),
            resolv_conf: Path::new("/run/berth/c/resolv.conf"),
            hostname: Path::new("/run/berth/c/hostname"),
        },
        volumes,
    })
    .unwrap();
    // A privileged container gets the host's bounding set, which
    // differs between hosts: checked here, then written as a marker.
    if o.privileged {
        let caps = &mut v["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(caps[set], serde_json::json!(grantable()));
            caps[set] = serde_json::json!(["<bounding set>"]);
        }
    }
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

/// The specs generated for the same inputs stay byte for byte what
/// they were when spec generation was rewritten as typed steps
/// (`BERTH_BLESS=1` rewrites the files, for a deliberate change).
#[test]
fn generated_specs_match_the_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/spec/testdata");
    for (case, img, o, ids, volumes) in golden_cases() {
        let got = golden_spec(case, &img, &o, ids, &volumes);
        let path = dir.join(format!("{case}.json"));
        if std::env::var_os("BERTH_BLESS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (BERTH_BLESS=1 writes it)", path.display()));
        assert!(
            got == want,
            "{case}: the generated spec differs from {}",
            path.display()
        );
    }
}

/// What a pod gives its containers lands in the spec, and nothing else
/// moves: joined namespaces by path, host namespaces left out, sysctls,
/// CPU settings, propagation, groups, the seccomp choice and paths.
#[test]
fn pod_options_shape_the_spec() {
    let img = ImageConfig {
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    let o = Options {
        network: "none".into(),
        mounts: vec![Bind {
            source: "/srv".into(),
            destination: "/data".into(),
            readonly: true,
            propagation: "rslave".into(),
            ..Default::default()
        }],
        pod: PodOptions {
            join: vec![
                ("network".into(), "/run/pod/netns".into()),
                ("ipc".into(), "/proc/42/ns/ipc".into()),
            ],
            host: vec!["pid".into()],
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            annotations: [("k".to_string(), "v".to_string())].into(),
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "0".into(),
            oom_score_adj: Some(500),
            masked_paths: Some(vec!["/proc/x".into()]),
            no_new_privs: true,
            seccomp: Seccomp::Unconfined,
            additional_gids: vec![7, 0],
            ..Default::default()
        },
        ..opts()
    };
    let ids = Ids {
        uid: 0,
        gid: 0,
        additional_gids: vec![0],
    };
    let v: serde_json::Value =
        serde_json::from_str(&golden_spec("pod", &img, &o, ids, &[])).unwrap();
    let nss = v["linux"]["namespaces"].as_array().unwrap();
    let ns = |t: &str| nss.iter().find(|n| n["type"] == t).cloned();
    assert_eq!(ns("network").unwrap()["path"], "/run/pod/netns");
    assert_eq!(ns("ipc").unwrap()["path"], "/proc/42/ns/ipc");
    assert!(ns("pid").is_none(), "hostPID keeps the host's: {nss:?}");
    assert!(ns("uts").unwrap().get("path").is_none());
    assert_eq!(v["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
    assert_eq!(v["annotations"]["k"], "v");
    let cpu = &v["linux"]["resources"]["cpu"];
    assert_eq!(
        (cpu["shares"].as_u64(), cpu["quota"].as_i64()),
        (Some(512), Some(50_000))
    );
    assert_eq!(
        (cpu["period"].as_u64(), cpu["cpus"].as_str()),
        (Some(100_000), Some("0"))
    );
    assert_eq!(v["process"]["oomScoreAdj"], 500);
    assert_eq!(v["process"]["noNewPrivileges"], true);
    assert_eq!(
        v["process"]["user"]["additionalGids"],
        serde_json::json!([0, 7])
    );
    assert!(
        v["linux"].get("seccomp").is_none(),
        "unconfined has no filter"
    );
    assert_eq!(v["linux"]["maskedPaths"], serde_json::json!(["/proc/x"]));
    assert_eq!(
        v["linux"]["readonlyPaths"].as_array().unwrap().len(),
        READONLY_PATHS.len()
    );
    let data = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap();
    assert_eq!(
        data["options"],
        serde_json::json!(["rbind", "rslave", "ro"])
    );

    // A host device: made with the host node's numbers, allowed last.
    let with_dev = Options {
        pod: PodOptions {
            devices: vec![Device {
                host_path: "/dev/null".into(),
                container_path: "/dev/xnull".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        },
        ..opts()
    };
    let ids0 = || Ids {
        uid: 0,
        gid: 0,
        additional_gids: vec![],
    };
    let v: serde_json::Value =
        serde_json::from_str(&golden_spec("dev", &img, &with_dev, ids0(), &[])).unwrap();
    let node = &v["linux"]["devices"][0];
    assert_eq!(
        (
            node["path"].as_str(),
            node["type"].as_str(),
            node["major"].as_i64(),
            node["minor"].as_i64()
        ),
        (Some("/dev/xnull"), Some("c"), Some(1), Some(3)),
        "{node}"
    );
    let rules = v["linux"]["resources"]["devices"].as_array().unwrap();
    assert_eq!(rules[0]["allow"], false, "deny all first");
    let last = rules.last().unwrap();
    assert_eq!(
        (last["allow"].as_bool(), last["access"].as_str()),
        (Some(true), Some("rw"))
    );
    for (host, perms) in [
        ("/etc/hostname", "rw"),
        ("/dev/null", "rwx"),
        ("/no/such", ""),
    ] {
        let o = Options {
            pod: PodOptions {
                devices: vec![Device {
                    host_path: host.into(),
                    container_path: "/dev/x".into(),
                    permissions: perms.into(),
                }],
                ..Default::default()
            },
            ..opts()
        };
        let e = generate(&Inputs {
            namespace: "default",
            cgroup_parent: "/berth",
            id: "c",
            image: &img,
            options: &o,
            ids: ids0(),
            etc: EtcFiles {
                hosts: Path::new("/h"),
                resolv_conf: Path::new("/r"),
                hostname: Path::new("/n"),
            },
            volumes: &[],
        })
        .unwrap_err();
        assert!(
            matches!(e, SpecError::BadDevice { .. }),
            "{host} {perms}: {e}"
        );
    }

    let bad = Options {
        pod: PodOptions {
            join: vec![("user".into(), "/proc/1/ns/user".into())],
            ..Default::default()
        },
        ..opts()
    };
    let e = generate(&Inputs {
        namespace: "default",
        cgroup_parent: "/berth",
        id: "c",
        image: &img,
        options: &bad,
        ids: Ids {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        },
        etc: EtcFiles {
            hosts: Path::new("/h"),
            resolv_conf: Path::new("/r"),
            hostname: Path::new("/n"),
        },
        volumes: &[],
    })
    .unwrap_err();
    assert!(
        matches!(e, SpecError::BadNamespace(ref k) if k == "user"),
        "{e}"
    );
}

#[test]
fn the_user_cache_keeps_answers_per_image_and_user_and_stays_bounded() {
    let c = UserCache::default();
    let ids = |uid| Ids {
        uid,
        gid: uid,
        additional_gids: vec![],
    };
    let k = |d: &str, u: &str| (d.to_string(), u.to_string());
    c.put(k("sha256:a", "web"), ids(1));
    assert_eq!(c.get(&k("sha256:a", "web")), Some(ids(1)));
    assert_eq!(c.get(&k("sha256:b", "web")), None, "another image");
    assert_eq!(c.get(&k("sha256:a", "db")), None, "another user");
    for n in 0..2000 {
        c.put(k("sha256:x", &n.to_string()), ids(n));
    }
    assert!(c.get(&k("sha256:x", "1999")).is_some());
    assert!(c.get(&k("sha256:x", "0")).is_none(), "never cleared");
}

#[test]
fn device_arguments_in_dockers_forms() {
    use super::{parse_device, Device, DeviceRequest};
    let host = |h: &str, c: &str, p: &str| {
        DeviceRequest::Host(Device {
            host_path: h.into(),
            container_path: c.into(),
            permissions: p.into(),
        })
    };
    assert_eq!(
        parse_device("/dev/fuse").unwrap(),
        host("/dev/fuse", "/dev/fuse", "rwm")
    );
    assert_eq!(
        parse_device("/dev/fuse:r").unwrap(),
        host("/dev/fuse", "/dev/fuse", "r")
    );
    assert_eq!(
        parse_device("/dev/sdc:/dev/xvdc").unwrap(),
        host("/dev/sdc", "/dev/xvdc", "rwm")
    );
    assert_eq!(
        parse_device("/dev/sdc:/dev/xvdc:rw").unwrap(),
        host("/dev/sdc", "/dev/xvdc", "rw")
    );
    assert_eq!(
        parse_device("nvidia.com/gpu=all").unwrap(),
        DeviceRequest::Cdi("nvidia.com/gpu=all".into())
    );
    for bad in [
        "gpu",
        "nvidia.com/gpu",
        "=x",
        "a/b/c=x",
        "/dev/a:/dev/b:rw:x",
    ] {
        assert!(parse_device(bad).is_err(), "{bad}");
    }
}
