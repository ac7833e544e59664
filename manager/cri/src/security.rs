//! The CRI's security settings in the core's terms: seccomp profiles (the
//! `seccomp` field and the deprecated `seccomp_profile_path` string), the
//! user to run as, and the Linux security modules this host lacks.

use std::path::Path;

use berth_core::spec::Seccomp;

use crate::{cri, CriError};

/// A profile file named by a Localhost profile, read and parsed now, so a
/// bad path or a bad profile fails CreateContainer with its cause.
fn localhost(path: &str) -> Result<Seccomp, CriError> {
    let bad = |why: String| CriError::InvalidArgument(format!("seccomp profile {path:?}: {why}"));
    if !Path::new(path).is_absolute() {
        return Err(bad("give an absolute path".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if !v["defaultAction"].is_string() {
        return Err(bad("no defaultAction".into()));
    }
    Ok(Seccomp::Profile(v))
}

/// The filter from the structured field when given, else from the
/// deprecated string, where containerd 1.6 reads `""` as unconfined.
pub fn seccomp(field: Option<&cri::SecurityProfile>, path: &str) -> Result<Seccomp, CriError> {
    if let Some(p) = field {
        return match cri::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(cri::security_profile::ProfileType::RuntimeDefault) => Ok(Seccomp::Default),
            Ok(cri::security_profile::ProfileType::Unconfined) => Ok(Seccomp::Unconfined),
            Ok(cri::security_profile::ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => Err(CriError::InvalidArgument(format!(
                "seccomp profile type {} is not one of RuntimeDefault, Unconfined, Localhost",
                p.profile_type
            ))),
        };
    }
    match path {
        "" | "unconfined" => Ok(Seccomp::Unconfined),
        "runtime/default" | "docker/default" => Ok(Seccomp::Default),
        p => match p.strip_prefix("localhost/") {
            Some(file) => localhost(file),
            None => Err(CriError::InvalidArgument(format!(
                "seccomp profile path {p:?}: use unconfined, runtime/default, \
                 docker/default or localhost/<absolute path>"
            ))),
        },
    }
}

// The deprecated string still comes from older kubelets.
#[allow(deprecated)]
pub fn pod_seccomp(c: &cri::PodSandboxConfig) -> Result<Seccomp, CriError> {
    match c.linux.as_ref().and_then(|l| l.security_context.as_ref()) {
        Some(s) => seccomp(s.seccomp.as_ref(), &s.seccomp_profile_path),
        None => seccomp(None, ""),
    }
}

/// `user[:group]` for the core from the CRI's run-as fields; empty means
/// the image's user.
pub fn user(s: &cri::LinuxContainerSecurityContext) -> Result<String, CriError> {
    let group = s.run_as_group.as_ref().map(|g| g.value);
    if let Some(g) = group {
        if g < 0 {
            return Err(CriError::InvalidArgument(format!(
                "run_as_group {g} is negative"
            )));
        }
    }
    let user = if let Some(u) = &s.run_as_user {
        if u.value < 0 {
            return Err(CriError::InvalidArgument(format!(
                "run_as_user {} is negative",
                u.value
            )));
        }
        u.value.to_string()
    } else if !s.run_as_username.is_empty() {
        s.run_as_username.clone()
    } else if group.is_some() {
        return Err(CriError::InvalidArgument(
            "run_as_group needs run_as_user or run_as_username".into(),
        ));
    } else {
        return Ok(String::new());
    };
    Ok(match group {
        Some(g) => format!("{user}:{g}"),
        None => user,
    })
}

// The deprecated `apparmor_profile` still comes from older kubelets.
#[allow(deprecated)]
/// AppArmor: the runtime default and unconfined need nothing on a host
/// without AppArmor; a named profile cannot be honoured there.
pub fn apparmor(s: &cri::LinuxContainerSecurityContext) -> Result<(), CriError> {
    let enabled = Path::new("/sys/module/apparmor/parameters/enabled").exists()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|v| v.trim() == "Y");
    let named = match &s.apparmor {
        Some(p) => p.profile_type == cri::security_profile::ProfileType::Localhost as i32,
        None => s.apparmor_profile.starts_with("localhost/"),
    };
    if named {
        return Err(CriError::Unsupported(if enabled {
            "loading AppArmor profiles".into()
        } else {
            "an AppArmor profile (AppArmor is not enabled on this host)".into()
        }));
    }
    Ok(())
}

/// A user namespace for the pod (`hostUsers: false`): refused, not
/// ignored, since ignoring it would run the pod's root as the host's root.
/// Kubelets from 1.30 ask only runtimes whose handler features say
/// `user_namespaces`, which berth's do not; older ones ask anyway.
pub fn userns(o: Option<&cri::NamespaceOption>) -> Result<(), CriError> {
    let mode = o
        .and_then(|o| o.userns_options.as_ref())
        .map(|u| u.mode)
        .unwrap_or(cri::NamespaceMode::Node as i32);
    if mode == cri::NamespaceMode::Node as i32 {
        return Ok(());
    }
    Err(CriError::Unsupported(
        "a user namespace for the pod (hostUsers: false): berth runs pods in the host's \
         user namespace; set hostUsers: true"
            .into(),
    ))
}

/// The CDI devices a container asks for: the CRI field's, then those of
/// `cdi.k8s.io/` annotations (how device plugins gave them before it),
/// each once.
pub fn cdi_devices(c: &cri::ContainerConfig) -> Result<Vec<String>, CriError> {
    let mut v: Vec<String> = c.cdi_devices.iter().map(|d| d.name.clone()).collect();
    let from_annotations = berth_core::cdi::devices_from_annotations(&c.annotations)
        .map_err(|e| CriError::InvalidArgument(e.to_string()))?;
    for d in from_annotations {
        if !v.contains(&d) {
            v.push(d);
        }
    }
    Ok(v)
}

/// What a container config may ask that berth cannot give yet, refused
/// with what to change rather than ignored: idmapped mounts.
pub fn unsupported_container_fields(c: &cri::ContainerConfig) -> Result<(), CriError> {
    for m in &c.mounts {
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(CriError::Unsupported(format!(
                "an idmapped mount at {} (user namespaces)",
                m.container_path
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(t: cri::security_profile::ProfileType, r: &str) -> cri::SecurityProfile {
        cri::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }
    }

    #[test]
    fn both_seccomp_fields_map_as_containerd_reads_them() {
        use cri::security_profile::ProfileType as T;
        assert_eq!(seccomp(None, "").unwrap(), Seccomp::Unconfined);
        assert_eq!(seccomp(None, "unconfined").unwrap(), Seccomp::Unconfined);
        assert_eq!(seccomp(None, "runtime/default").unwrap(), Seccomp::Default);
        assert_eq!(seccomp(None, "docker/default").unwrap(), Seccomp::Default);
        assert!(seccomp(None, "bogus").is_err());
        // The structured field wins over the string.
        let p = profile(T::RuntimeDefault, "");
        assert_eq!(seccomp(Some(&p), "unconfined").unwrap(), Seccomp::Default);
        let p = profile(T::Unconfined, "");
        assert_eq!(seccomp(Some(&p), "").unwrap(), Seccomp::Unconfined);
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.json");
        std::fs::write(&f, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        let f = f.display().to_string();
        let p = profile(T::Localhost, &f);
        assert!(
            matches!(seccomp(Some(&p), "").unwrap(), Seccomp::Profile(v) if v["defaultAction"] == "SCMP_ACT_ALLOW")
        );
        assert!(matches!(
            seccomp(None, &format!("localhost/{f}")).unwrap(),
            Seccomp::Profile(_)
        ));
        let missing = profile(T::Localhost, "/no/such/profile.json");
        let e = seccomp(Some(&missing), "").unwrap_err().to_string();
        assert!(
            e.contains("/no/such/profile.json") && e.contains("No such file"),
            "{e}"
        );
        assert!(seccomp(Some(&profile(T::Localhost, "rel.json")), "").is_err());
    }

    #[test]
    fn run_as_fields_become_a_user_spec() {
        let mut s = cri::LinuxContainerSecurityContext::default();
        assert_eq!(user(&s).unwrap(), "");
        s.run_as_username = "nobody".into();
        assert_eq!(user(&s).unwrap(), "nobody");
        s.run_as_user = Some(cri::Int64Value { value: 1000 });
        assert_eq!(user(&s).unwrap(), "1000");
        s.run_as_group = Some(cri::Int64Value { value: 2000 });
        assert_eq!(user(&s).unwrap(), "1000:2000");
        s.run_as_user = Some(cri::Int64Value { value: -1 });
        assert!(user(&s).is_err());
        let only_group = cri::LinuxContainerSecurityContext {
            run_as_group: Some(cri::Int64Value { value: 5 }),
            ..Default::default()
        };
        assert!(user(&only_group).is_err());
    }
}
