//! The one place where berth's programs meet: the gRPC services and messages
//! compiled from `proto/`, and the identifier rules that both the shim and the
//! manager enforce, plus what both servers share (`transport`, `memory`).
//! The runtime speaks runc's CLI instead and does not use it.

pub mod identifiers;
pub mod labels;
pub mod memory;
pub mod signal;
pub mod transport;

pub mod events {
    pub mod v1 {
        tonic::include_proto!("berth.events.v1");

        /// containerd-compatible topic names, one per event kind.
        pub mod topics {
            pub const TASK_CREATE: &str = "/tasks/create";
            pub const TASK_START: &str = "/tasks/start";
            pub const TASK_EXIT: &str = "/tasks/exit";
            pub const TASK_OOM: &str = "/tasks/oom";
            pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
            pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
            pub const TASK_PAUSED: &str = "/tasks/paused";
            pub const TASK_RESUMED: &str = "/tasks/resumed";
            pub const TASK_DELETE: &str = "/tasks/delete";
            pub const IMAGE_CREATE: &str = "/images/create";
            pub const IMAGE_DELETE: &str = "/images/delete";
            pub const CONTAINER_CREATE: &str = "/containers/create";
            pub const CONTAINER_DELETE: &str = "/containers/delete";
        }
    }
}

pub mod shim {
    pub mod v1 {
        tonic::include_proto!("berth.shim.v1");
    }
}

pub mod manager {
    pub mod v1 {
        tonic::include_proto!("berth.manager.v1");

        impl std::str::FromStr for Platform {
            type Err = String;

            /// `os/arch[/variant]`, as `--platform` takes it.
            fn from_str(s: &str) -> Result<Self, String> {
                let bad = || format!("{s:?}: write it as os/arch[/variant], e.g. linux/arm64");
                let mut p = s.split('/');
                let (Some(os), Some(architecture)) = (p.next(), p.next()) else {
                    return Err(bad());
                };
                let variant = p.next().unwrap_or("");
                if os.is_empty() || architecture.is_empty() || p.next().is_some() {
                    return Err(bad());
                }
                Ok(Self {
                    os: os.into(),
                    architecture: architecture.into(),
                    variant: variant.into(),
                })
            }
        }
    }
}

/// The request header that names the namespace of a manager call (containerd
/// uses `containerd-namespace` the same way). Absent means [`DEFAULT_NAMESPACE`].
pub const NAMESPACE_HEADER: &str = "berth-namespace";
pub const DEFAULT_NAMESPACE: &str = "default";
/// Where the manager listens unless told otherwise (`berth serve --address`,
/// the config's `address`, or `<state>/berth.sock` for another `--state`).
pub const DEFAULT_ADDRESS: &str = "/run/berth/berth.sock";
