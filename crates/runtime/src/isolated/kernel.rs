//! The kernel surface a dyno gets, as a container's: a seccomp filter in the
//! spirit of Docker's default profile, and the `/proc` entries that tell about
//! (or reach into) the host, masked or read-only.
//!
//! The filters are compiled once, in the parent, into plain BPF; the dyno's
//! init only hands them to the kernel (it may not allocate).

use std::collections::BTreeMap;
use std::path::Path;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// `/proc` entries hidden from a dyno: files get `/dev/null` bound over them,
/// directories an empty read-only tmpfs (as Docker's masked paths).
pub(crate) const MASKED_PROC: [&str; 10] = [
    "acpi",
    "asound",
    "interrupts",
    "kcore",
    "keys",
    "latency_stats",
    "sched_debug",
    "scsi",
    "timer_list",
    "timer_stats",
];

/// `/proc` entries a dyno may read but never write (as Docker's read-only paths).
pub(crate) const READ_ONLY_PROC: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// Whether a `/proc` entry is there on this kernel, and a directory.
pub(crate) fn proc_entry(name: &str) -> Option<bool> {
    std::fs::symlink_metadata(Path::new("/proc").join(name))
        .ok()
        .map(|m| m.is_dir())
}

/// The system calls a dyno is refused with `EPERM`, whatever their arguments:
/// what reaches around the dyno's walls (mounts, other namespaces, tracing
/// other processes) or into the whole kernel (modules, keys, BPF, the clock,
/// reboot, swap, accounting, file handles). Most need a capability a dyno no
/// longer has anyway; the filter keeps them shut if one comes back through a
/// kernel bug, and closes those that need none (`userfaultfd`, `keyctl`,
/// `perf_event_open`, `io_uring_*`, `ptrace` of the dyno's own processes).
fn refused() -> Vec<i64> {
    let mut calls = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_setns,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kcmp,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_open_by_handle_at,
        libc::SYS_userfaultfd,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_fanotify_init,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_lookup_dcookie,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS__sysctl,
        libc::SYS_uselib,
        libc::SYS_ustat,
        libc::SYS_sysfs,
    ]);
    calls
}

fn target() -> Result<TargetArch, String> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else if cfg!(target_arch = "riscv64") {
        Ok(TargetArch::riscv64)
    } else {
        Err(format!(
            "no seccomp filter for {} (crew has them for x86_64, aarch64 and riscv64)",
            std::env::consts::ARCH
        ))
    }
}

/// `flags & CLONE_NEWUSER` set, on the call's first argument.
fn new_user_namespace() -> Result<SeccompRule, String> {
    let flag = libc::CLONE_NEWUSER as u64;
    let condition = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(flag),
        flag,
    )
    .map_err(|e| e.to_string())?;
    SeccompRule::new(vec![condition]).map_err(|e| e.to_string())
}

/// The filters every dyno gets, in the order they are installed. The kernel
/// runs them all and takes the strictest answer.
pub(crate) fn seccomp_filters() -> Result<Vec<BpfProgram>, String> {
    let arch = target()?;
    let compile = |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32| -> Result<_, String> {
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch,
        )
        .map_err(|e| e.to_string())?;
        BpfProgram::try_from(filter).map_err(|e| e.to_string())
    };
    let mut refuse: BTreeMap<i64, Vec<SeccompRule>> =
        refused().into_iter().map(|nr| (nr, Vec::new())).collect();
    // No user namespaces: they hand out every capability inside them, and with
    // them the kernel's namespaced code that needs one. `unshare` of any other
    // namespace already fails for want of CAP_SYS_ADMIN.
    refuse.insert(libc::SYS_unshare, vec![new_user_namespace()?]);
    refuse.insert(libc::SYS_clone, vec![new_user_namespace()?]);
    // clone3 passes its flags in memory, where a filter cannot look: answer
    // "not implemented", as Docker does, so libc falls back to clone.
    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let mut filters = vec![
        compile(refuse, libc::EPERM)?,
        compile(clone3, libc::ENOSYS)?,
    ];
    if arch == TargetArch::x86_64 {
        filters.push(no_x32());
    }
    Ok(filters)
}

/// On x86_64, the x32 ABI's call numbers (bit 30 set) would name the refused
/// calls by other numbers: answer them all with `ENOSYS`.
fn no_x32() -> BpfProgram {
    const LD_ABS_W: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data.arch
        insn(LD_ABS_W, 0, 0, 4),
        insn(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        // seccomp_data.nr
        insn(LD_ABS_W, 0, 0, 0),
        insn(JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
        insn(RET_K, 0, 0, RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_machine() {
        let filters = seccomp_filters().unwrap();
        assert!(filters.len() >= 2);
        assert!(filters.iter().all(|f| !f.is_empty() && f.len() < 4096));
    }

    #[test]
    fn every_refused_call_is_listed_once() {
        let calls = refused();
        let mut unique = calls.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), calls.len());
        assert!(!calls.contains(&libc::SYS_unshare) && !calls.contains(&libc::SYS_clone));
    }
}
