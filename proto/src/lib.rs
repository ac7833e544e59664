//! The one place where berth's programs meet: the gRPC services and messages
//! compiled from `proto/`, and the identifier rules that both the shim and the
//! manager enforce, plus what both servers share (`transport`, `memory`).
//! The runtime speaks runc's CLI instead and does not use it.

pub mod identifiers;
pub mod memory;
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
    }
}

/// The request header that names the namespace of a manager call (containerd
/// uses `containerd-namespace` the same way). Absent means [`DEFAULT_NAMESPACE`].
pub const NAMESPACE_HEADER: &str = "berth-namespace";
pub const DEFAULT_NAMESPACE: &str = "default";
