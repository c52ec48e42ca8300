//! The operating-system calls crew makes about processes. This is the only module
//! in crew with `unsafe` code; everything else goes through these functions.
//!
//! One directory, so a reviewer can audit every `unsafe` of crew together, each
//! with its `// SAFETY:` comment, in files by what they touch:
//! - `process`: processes by pid or group (the hooks on a `Command`, signals,
//!   `/proc`, reaping) and crew's own process;
//! - `clone`: the `clone` of an isolated dyno's init and `run:inside`'s fork;
//! - `linux_sys`: [`LinuxSys`], the init's system calls (the `Sys` trait of
//!   `crate::init::sys`);
//! - `pidfd`: handles on the processes crew cloned;
//! - `fd`: pipes, socket pairs, passing a terminal back, tokio registration;
//! - `records`: reading an init's setup records and status;
//! - `pty`: pseudo-terminals;
//! - `netns`: network namespaces, one thread at a time.
//!
//! Callers name everything as `os::…`: the files are this module's inside.
//! `os` imports the dyno's init (`crate::init`) and nothing of the runtimes
//! that call it.

mod clone;
mod fd;
mod linux_sys;
mod netns;
mod pidfd;
mod process;
mod pty;
mod records;

pub(crate) use clone::{
    Forked, can_clone_into_cgroup, clone_dyno, cmdline_area, exit_now, join_namespaces_of,
};
pub use fd::pipe;
pub(crate) use fd::{
    async_fd, async_readable, open_dir_path, poll_readable, raw, receive_fd, set_nonblocking,
    socket_pair,
};
pub(crate) use linux_sys::{ExecImage, LinuxSys};
pub(crate) use netns::{
    enter_network_namespace, new_thread_network_namespace, open_network_namespace,
    open_thread_network_namespace, tcp_socket,
};
pub(crate) use pidfd::{pidfd_exited, pidfd_open, pidfd_reap, pidfd_signal};
pub use process::{
    become_subreaper, bind_private_socket, command_line, default_signals, die_with_parent,
    group_exists, own_children, process_alive, process_group_of, process_state, raise_fd_limit,
    reap, signal_group, signal_process, take_terminal,
};
pub(crate) use process::{euid, is_root, reap_blocking, signal_group_raw};
pub use pty::{open_terminal, set_window_size};
pub(crate) use records::{monotonic_micros, read_setup_records, read_status};
