//! How an isolated runtime is set up ([`IsolatedConfig`]), and why a host
//! cannot have one ([`IsolationUnavailable`]): the types a server reads and
//! shows before any dyno starts.

use std::path::PathBuf;
use std::time::Duration;

use crate::DynoSize;
use crate::dyno_network::DynoNetwork;

/// How isolated dynos are made. `Default` is what a server should use.
#[derive(Debug, Clone)]
pub struct IsolatedConfig {
    /// The user and group dynos run as unless a handle says otherwise (see
    /// [`IsolatedRuntime::with_user`]; a server gives every app its own). The
    /// top of `/app` belongs to them; the slug's own files keep their owners,
    /// so a slug meant to be changed in place should be extracted writable by
    /// this user or group.
    pub uid: u32,
    pub gid: u32,
    /// An empty directory the dyno's root is mounted on. Each dyno mounts over it
    /// in its own mount namespace, so one directory serves them all and the
    /// host never sees anything there.
    pub root_dir: PathBuf,
    /// Where cgroups are mounted (`/sys/fs/cgroup`): v2 if it holds
    /// `cgroup.controllers`, else the v1 hierarchies from `/proc/self/mountinfo`.
    pub cgroup_root: PathBuf,
    /// The parent cgroup of every dyno, under the hierarchy root.
    pub cgroup_name: String,
    /// Host paths shown read-only at the same place: the stack. Symlinks (such as
    /// `/bin -> usr/bin`) are copied as symlinks; missing paths are skipped.
    pub stack: Vec<PathBuf>,
    /// Further host files or directories to show read-only at the same place. A
    /// symlinked `/etc/resolv.conf` gets its target added by itself.
    pub extra_read_only: Vec<PathBuf>,
    /// The size of dynos whose process type has no size set.
    pub default_size: DynoSize,
    /// How long a dyno's setup may take before the start fails.
    pub setup_timeout: Duration,
    /// A network namespace per dyno on crew's bridge; `None`: dynos share
    /// the host's network.
    pub network: Option<DynoNetwork>,
}

impl Default for IsolatedConfig {
    fn default() -> Self {
        IsolatedConfig {
            uid: 65534,
            gid: 65534,
            root_dir: PathBuf::from("/run/crew/root"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_name: "crew".to_string(),
            stack: ["/usr", "/etc", "/bin", "/lib", "/lib64", "/sbin"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            extra_read_only: Vec::new(),
            default_size: DynoSize::default(),
            setup_timeout: Duration::from_secs(10),
            network: None,
        }
    }
}

/// Why dynos cannot be isolated here. The platform should then run them plain and
/// say so, with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsolationUnavailable {
    #[error("dyno isolation needs Linux")]
    NotLinux,
    #[error(
        "dyno isolation needs root (crew runs as uid {euid}); isolation for an \
         unprivileged crew through user namespaces is not implemented"
    )]
    NotRoot { euid: u32 },
    #[error("the kernel has no overlay filesystem (try `modprobe overlay`)")]
    NoOverlay,
    #[error("the kernel has no {0} namespaces")]
    NoNamespaces(String),
    #[error("no usable cgroups for memory and process limits: {0}")]
    NoCgroups(String),
    #[error("cannot prepare isolated dynos: {0}")]
    Setup(String),
    #[error("a test dyno could not start: {0}")]
    Failed(String),
}
