//! What a kubelet learns from the runtime handler's features and then asks
//! for: recursive read-only mounts, swap held at the memory limit,
//! supplemental groups policies, CDI devices, image volumes, and the
//! requests berth cannot honour yet (user-namespaced pods, idmapped
//! mounts), each refused with nothing made.

use std::path::{Path, PathBuf};

use berth_integration_tests::cri::{cri as pb, setup, setup_with};
use berth_integration_tests::kubelet::*;
use tonic::Code;

/// A host directory with a tmpfs mounted on its `sub`, unmounted on drop.
struct Submounted {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Submounted {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir(root.join("sub")).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(root.join("sub"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs for the test");
        Submounted { _dir: dir, root }
    }
}

impl Drop for Submounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.root.join("sub"))
            .status();
    }
}

fn bind(host: &Path, at: &str, recursive: bool) -> pb::Mount {
    pb::Mount {
        container_path: at.into(),
        host_path: host.display().to_string(),
        readonly: true,
        recursive_read_only: recursive,
        ..Default::default()
    }
}

/// The exit code of `sh -c script` in the container.
async fn sh(c: &mut berth_integration_tests::cri::Cri, id: &str, script: &str) -> i32 {
    exec(c, id, &["sh", "-c", script], 10)
        .await
        .unwrap()
        .exit_code
}

#[tokio::test]
async fn recursive_read_only_mounts_and_swap_at_the_memory_limit() {
    let mut s = setup(5).await;
    let st = runtime_status(&mut s.c).await;
    let features = st.runtime_handlers[0].features.unwrap();
    assert!(features.recursive_read_only_mounts && !features.user_namespaces);

    let host = Submounted::new();
    let pc = pod_config("rro", s.logs.path(), vec![]);
    let pod = run_pod(&mut s.c, &pc).await.unwrap();
    let mut cfg = container_config("rro", &s.image, "exec sleep 1000");
    cfg.mounts = vec![
        bind(&host.root, "/ro", false),
        bind(&host.root, "/rro", true),
    ];
    cfg.linux.as_mut().unwrap().resources = Some(pb::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let id = create(&mut s.c, &pod, &pc, cfg).await.unwrap();
    start(&mut s.c, &id).await;
    // Plain read-only leaves the submount writable (why rro exists); rro
    // reaches it too.
    assert_eq!(sh(&mut s.c, &id, "touch /ro/x").await, 1);
    assert_eq!(sh(&mut s.c, &id, "touch /ro/sub/x").await, 0);
    assert_eq!(sh(&mut s.c, &id, "touch /rro/y").await, 1);
    assert_eq!(sh(&mut s.c, &id, "touch /rro/sub/y").await, 1);
    assert!(host.root.join("sub/x").exists() && !host.root.join("sub/y").exists());
    let mounts = cstatus(&mut s.c, &id).await.mounts;
    assert_eq!(
        mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.recursive_read_only))
            .collect::<Vec<_>>(),
        [("/ro", false), ("/rro", true)]
    );

    // containerd's default where swap is accounted: memory+swap is the
    // memory limit, so the container cannot swap past it.
    let memsw = Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    if memsw {
        let out = exec(
            &mut s.c,
            &id,
            &["cat", "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"],
            10,
        )
        .await
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "67108864");
    }

    // rro needs read-only and private propagation, as containerd checks.
    let mut rw = container_config("rro-rw", &s.image, "true");
    rw.mounts = vec![pb::Mount {
        readonly: false,
        ..bind(&host.root, "/x", true)
    }];
    let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, rw).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("recursive read-only"), "{msg}");
    let mut slave = container_config("rro-slave", &s.image, "true");
    slave.mounts = vec![pb::Mount {
        propagation: pb::MountPropagation::PropagationHostToContainer as i32,
        ..bind(&host.root, "/x", true)
    }];
    let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, slave).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("private propagation"), "{msg}");
    assert_eq!(
        containers(&mut s.c).await,
        1,
        "a refused container was kept"
    );

    remove_pod(&mut s.c, &pod).await;
}

#[tokio::test]
async fn what_berth_cannot_honour_is_refused_not_ignored() {
    let mut s = setup(6).await;
    // A user-namespaced pod (hostUsers: false) would otherwise run its root
    // as the host's root.
    let mut pc = pod_config("userns", s.logs.path(), vec![]);
    let userns = Some(pb::UserNamespace {
        mode: pb::NamespaceMode::Pod as i32,
        uids: vec![pb::IdMapping {
            host_id: 65536,
            container_id: 0,
            length: 65536,
        }],
        gids: vec![pb::IdMapping {
            host_id: 65536,
            container_id: 0,
            length: 65536,
        }],
    });
    let sc = pc
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap();
    sc.namespace_options.as_mut().unwrap().userns_options = userns.clone();
    let (code, msg) = code_and_message(run_pod(&mut s.c, &pc).await);
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("hostUsers"), "{msg}");
    assert!(pod_leftovers(&s.d).is_empty(), "{:?}", pod_leftovers(&s.d));
    let pods = pods(&mut s.c).await;
    assert!(pods.is_empty(), "{pods:?}");

    let pc = pod_config("plain", s.logs.path(), vec![]);
    let pod = run_pod(&mut s.c, &pc).await.unwrap();
    let base = || container_config("c", &s.image, "true");
    let mut in_userns = base();
    in_userns
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .userns_options = userns;
    let mut idmapped = base();
    idmapped.mounts = vec![pb::Mount {
        container_path: "/data".into(),
        host_path: "/tmp".into(),
        uid_mappings: vec![pb::IdMapping {
            host_id: 65536,
            container_id: 0,
            length: 1,
        }],
        ..Default::default()
    }];
    for (cfg, says) in [
        (in_userns, "hostUsers"),
        (idmapped, "idmapped mount at /data"),
    ] {
        let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, cfg).await);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");
        assert!(msg.contains(says) && msg.contains("not supported"), "{msg}");
    }
    assert_eq!(
        containers(&mut s.c).await,
        0,
        "a refused container was kept"
    );
    remove_pod(&mut s.c, &pod).await;
}

/// SupplementalGroupsPolicy: Merge (the default) adds the groups the
/// image's /etc/group gives the user, Strict only the pod's; the status
/// reports the identity, primary group first, as containerd does.
#[tokio::test]
async fn supplemental_groups_policy_and_the_reported_user() {
    let mut s = setup(7).await;
    let st = runtime_status(&mut s.c).await;
    assert!(st.features.unwrap().supplemental_groups_policy);
    let pc = pod_config("groups", s.logs.path(), vec![]);
    let pod = run_pod(&mut s.c, &pc).await.unwrap();
    let mut seen = Vec::new();
    for policy in [
        pb::SupplementalGroupsPolicy::Merge,
        pb::SupplementalGroupsPolicy::Strict,
    ] {
        let mut cfg = container_config(
            &format!("{policy:?}").to_lowercase(),
            &s.image,
            "exec sleep 1000",
        );
        let sc = cfg
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        sc.run_as_username = "nobody".into();
        sc.supplemental_groups = vec![4000];
        sc.supplemental_groups_policy = policy as i32;
        let id = create(&mut s.c, &pod, &pc, cfg).await.unwrap();
        start(&mut s.c, &id).await;
        let out = exec(&mut s.c, &id, &["id", "-G"], 10).await.unwrap();
        let user = cstatus(&mut s.c, &id).await.user.unwrap().linux.unwrap();
        seen.push((
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            (user.uid, user.gid, user.supplemental_groups),
        ));
    }
    assert_eq!(
        seen,
        [
            (
                "65534 100 4000".to_owned(),
                (65534, 65534, vec![65534, 100, 4000])
            ),
            ("65534 4000".to_owned(), (65534, 65534, vec![65534, 4000])),
        ]
    );
    remove_pod(&mut s.c, &pod).await;
}

/// CDI devices from a vendor's spec (YAML) through the CRI field and the
/// older `cdi.k8s.io/` annotations: the node (with its cgroup rule: the
/// default rules do not allow /dev/loop-control), the mount and the
/// environment reach the container; an unknown device or a malformed name
/// is refused with nothing made.
#[tokio::test]
async fn cdi_devices_from_a_vendor_spec() {
    let cdi = tempfile::tempdir().unwrap();
    let shared = cdi.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("file"), "from-the-vendor\n").unwrap();
    std::fs::write(
        cdi.path().join("berth-test.yaml"),
        format!(
            r#"cdiVersion: "0.6.0"
kind: "berth.test/dev"
containerEdits:
  env: ["CDI_COMMON=1"]
devices:
  - name: "loopctl"
    containerEdits:
      env: ["CDI_DEV=loopctl"]
      deviceNodes:
        - path: "/dev/berth-loopctl"
          hostPath: "/dev/loop-control"
      mounts:
        - hostPath: "{}"
          containerPath: "/cdi-shared"
          options: ["ro", "bind"]
"#,
            shared.display()
        ),
    )
    .unwrap();
    let mut s = setup_with(8, &format!("cdi_spec_dirs = [{:?}]", cdi.path())).await;
    let pc = pod_config("cdi", s.logs.path(), vec![]);
    let pod = run_pod(&mut s.c, &pc).await.unwrap();
    let script = "cat /cdi-shared/file; echo $CDI_DEV $CDI_COMMON; \
                  : < /dev/berth-loopctl && echo opened; exec sleep 1000";
    let mut by_field = container_config("field", &s.image, script);
    by_field.cdi_devices = vec![pb::CdiDevice {
        name: "berth.test/dev=loopctl".into(),
    }];
    let mut by_annotation = container_config("annotation", &s.image, script);
    by_annotation
        .annotations
        .insert("cdi.k8s.io/plugin".into(), "berth.test/dev=loopctl".into());
    for (name, cfg) in [("field", by_field), ("annotation", by_annotation)] {
        let id = create(&mut s.c, &pod, &pc, cfg).await.unwrap();
        start(&mut s.c, &id).await;
        let log = s.logs.path().join(format!("{name}/0.log"));
        berth_integration_tests::wait_until(name, std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() >= 3)
        });
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
            .collect();
        assert_eq!(
            lines,
            ["from-the-vendor", "loopctl 1", "opened"],
            "{name}: {text}"
        );
    }

    let before = containers(&mut s.c).await;
    let mut unknown = container_config("unknown", &s.image, "true");
    unknown.cdi_devices = vec![pb::CdiDevice {
        name: "berth.test/dev=nope".into(),
    }];
    let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, unknown).await);
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(
        msg.contains("berth.test/dev=nope") && msg.contains("not found"),
        "{msg}"
    );
    let mut malformed = container_config("malformed", &s.image, "true");
    malformed
        .annotations
        .insert("cdi.k8s.io/plugin".into(), "not-a-device-name".into());
    let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, malformed).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("not-a-device-name"), "{msg}");
    assert_eq!(
        containers(&mut s.c).await,
        before,
        "a refused container was kept"
    );
    remove_pod(&mut s.c, &pod).await;
}

/// Image volumes: the image's files at a path, read-only, no exec, suid or
/// devices; a view snapshot and a host mount while the container exists,
/// neither after RemoveContainer. A missing image is NotFound, a relative
/// path InvalidArgument, with nothing made.
#[tokio::test]
async fn image_volumes_are_read_only_views_of_an_image() {
    let mut s = setup(9).await;
    let pc = pod_config("imgvol", s.logs.path(), vec![]);
    let pod = run_pod(&mut s.c, &pc).await.unwrap();
    let volume = |image: &str, at: &str| pb::Mount {
        container_path: at.into(),
        image: Some(pb::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        readonly: true,
        ..Default::default()
    };
    let views = |d: &berth_integration_tests::cri::CriDaemon| {
        d.json(&["-n", "k8s.io", "snapshots", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == "view")
            .count()
    };
    let host_mounts = |d: &berth_integration_tests::cri::CriDaemon| {
        berth_integration_tests::manager::mounts_under(d.dir())
            .into_iter()
            .filter(|m| m.to_string_lossy().contains("image-volumes"))
            .count()
    };
    let mut cfg = container_config("reader", &s.image, "exec sleep 1000");
    cfg.mounts = vec![volume(&s.image, "/model")];
    let id = create(&mut s.c, &pod, &pc, cfg).await.unwrap();
    start(&mut s.c, &id).await;
    assert_eq!((views(&s.d), host_mounts(&s.d)), (1, 1));
    // The record holds the view: a collection keeps it.
    s.d.ok(&["gc"]);
    assert_eq!((views(&s.d), host_mounts(&s.d)), (1, 1));
    assert_eq!(sh(&mut s.c, &id, "test -x /model/bin/busybox").await, 0);
    assert_eq!(sh(&mut s.c, &id, "touch /model/x").await, 1);
    // noexec: the image's own binary cannot run from the volume.
    assert_ne!(sh(&mut s.c, &id, "/model/bin/busybox true").await, 0);
    let out = exec(&mut s.c, &id, &["grep", " /model ", "/proc/mounts"], 10)
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags: Vec<&str> = line
        .split_whitespace()
        .nth(3)
        .unwrap_or("")
        .split(',')
        .collect();
    for f in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(flags.contains(&f), "{f} missing: {line}");
    }
    let st = cstatus(&mut s.c, &id).await;
    assert_eq!(
        st.mounts[0].image.as_ref().map(|i| i.image.as_str()),
        Some(s.image.as_str())
    );

    // Refused: nothing made.
    let mut missing = container_config("missing", &s.image, "true");
    missing.mounts = vec![volume("127.0.0.1:1/no/such:image", "/model")];
    let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, missing).await);
    assert_eq!(code, Code::NotFound, "{msg}");
    let mut relative = container_config("relative", &s.image, "true");
    relative.mounts = vec![volume(&s.image, "model")];
    let (code, msg) = code_and_message(create(&mut s.c, &pod, &pc, relative).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(
        msg.contains("image volume") && msg.contains("absolute"),
        "{msg}"
    );
    assert_eq!(
        containers(&mut s.c).await,
        1,
        "a refused container was kept"
    );
    assert_eq!((views(&s.d), host_mounts(&s.d)), (1, 1));

    s.c.rt
        .stop_container(pb::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    s.c.rt
        .remove_container(pb::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    assert_eq!((views(&s.d), host_mounts(&s.d)), (0, 0));
    remove_pod(&mut s.c, &pod).await;
}
