//! The kernel surface a dyno gets, as a container's: a seccomp filter in the
//! spirit of Docker's default profile, and the `/proc` entries that tell about
//! (or reach into) the host, masked or read-only.
//!
//! The filter is built once, in the parent, as plain BPF; the dyno's init
//! only hands it to the kernel (it may not allocate).

use std::path::Path;

use seccompiler::{BpfProgram, sock_filter};

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

/// `AUDIT_ARCH_*` of the machine crew is built for: the only one whose calls a
/// dyno may make.
fn audit_arch() -> Result<u32, String> {
    if cfg!(target_endian = "big") {
        return Err("no seccomp filter for big-endian machines".into());
    }
    if cfg!(target_arch = "x86_64") {
        Ok(0xc000_003e)
    } else if cfg!(target_arch = "aarch64") {
        Ok(0xc000_00b7)
    } else if cfg!(target_arch = "riscv64") {
        Ok(0xc000_00f3)
    } else {
        Err(format!(
            "no seccomp filter for {} (crew has them for x86_64, aarch64 and riscv64)",
            std::env::consts::ARCH
        ))
    }
}

/// Classic BPF, as seccomp runs it.
mod bpf {
    pub const LD_W_ABS: u16 = 0x20;
    pub const JA: u16 = 0x05;
    pub const JEQ_K: u16 = 0x15;
    pub const JGE_K: u16 = 0x35;
    pub const JSET_K: u16 = 0x45;
    pub const RET_K: u16 = 0x06;
    /// Offsets in `struct seccomp_data`.
    pub const NR: u32 = 0;
    pub const ARCH: u32 = 4;
    /// The low 32 bits of the first argument (little-endian).
    pub const ARG0_LOW: u32 = 16;
    pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
    pub const RET_ERRNO: u32 = 0x0005_0000;
    pub const RET_ALLOW: u32 = 0x7fff_0000;
    /// x86_64's x32 ABI numbers its calls with this bit set.
    pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
}

/// The filter every dyno gets, as one program: calls of another
/// architecture kill the process (as seccompiler's filters did); on x86_64
/// the x32 ABI (whose numbers would name the refused calls by other numbers)
/// and `clone3` (whose flags are in memory, where a filter cannot look, so
/// libc falls back to `clone`, as under Docker) are answered `ENOSYS`;
/// `unshare` and `clone` asking for a user namespace, and every call of
/// [`refused`], `EPERM`; everything else is allowed.
///
/// One program of about 70 instructions, where three compiled by seccompiler
/// (its rules cannot give two errnos, nor test the x32 bit) made 277: the
/// kernel checks, converts and JIT-compiles each filter a dyno installs, and
/// that was a sixth of a dyno's own setup time.
pub(crate) fn seccomp_filters() -> Result<Vec<BpfProgram>, String> {
    use bpf::*;
    let arch = audit_arch()?;
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let refused = refused();
    let mut prog = vec![
        insn(LD_W_ABS, 0, 0, ARCH),
        insn(JEQ_K, 1, 0, arch),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, NR),
    ];
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    if cfg!(target_arch = "x86_64") {
        prog.extend([
            insn(JGE_K, 0, 1, X32_SYSCALL_BIT),
            insn(RET_K, 0, 0, enosys),
        ]);
    }
    let nr = |call: libc::c_long| u32::try_from(call).map_err(|_| "a call number".to_string());
    prog.extend([
        insn(JEQ_K, 0, 1, nr(libc::SYS_clone3)?),
        insn(RET_K, 0, 0, enosys),
        // unshare or clone: refused only with CLONE_NEWUSER in their flags.
        insn(JEQ_K, 1, 0, nr(libc::SYS_unshare)?),
        insn(JEQ_K, 0, 4, nr(libc::SYS_clone)?),
        insn(LD_W_ABS, 0, 0, ARG0_LOW),
        insn(JSET_K, 0, 1, libc::CLONE_NEWUSER as u32),
        // (patched below: a jump to the EPERM return)
        insn(JA, 0, 0, 0),
        insn(RET_K, 0, 0, RET_ALLOW),
    ]);
    let to_eperm = prog.len() - 2;
    // The refused calls, then the two returns they lead to.
    let first = prog.len();
    let eperm = first + refused.len() + 1;
    for (i, call) in refused.iter().enumerate() {
        let jump = u8::try_from(eperm - (first + i) - 1)
            .map_err(|_| "too many refused calls for one jump".to_string())?;
        prog.push(insn(JEQ_K, jump, 0, nr(*call)?));
    }
    prog.push(insn(RET_K, 0, 0, RET_ALLOW));
    prog.push(insn(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32));
    prog[to_eperm].k = u32::try_from(eperm - to_eperm - 1).map_err(|_| "a jump".to_string())?;
    Ok(vec![prog])
}

#[cfg(test)]
mod tests {
    use super::bpf::*;
    use super::*;
    use std::collections::BTreeMap;

    /// Runs a seccomp program on one call, as the kernel does.
    fn run(prog: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let word = |offset: u32| match offset {
            NR => nr,
            ARCH => arch,
            ARG0_LOW => arg0 as u32,
            other => panic!("the filter reads offset {other}"),
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            let jump = |taken: bool| pc + 1 + usize::from(if taken { i.jt } else { i.jf });
            pc = match i.code {
                LD_W_ABS => {
                    a = word(i.k);
                    pc + 1
                }
                JA => pc + 1 + i.k as usize,
                JEQ_K => jump(a == i.k),
                JGE_K => jump(a >= i.k),
                JSET_K => jump(a & i.k != 0),
                RET_K => return i.k,
                // What seccompiler emits besides: a 64-bit argument's high
                // half, and ALU on the accumulator.
                0x00 => {
                    a = i.k;
                    pc + 1
                }
                0x54 => {
                    a &= i.k;
                    pc + 1
                }
                other => panic!("opcode {other:#x} at {pc}"),
            };
        }
    }

    /// Several filters as the kernel combines them: the most recently
    /// installed first, the strictest action wins.
    fn run_all(filters: &[BpfProgram], arch: u32, nr: u32, arg0: u64) -> u32 {
        let action = |ret: u32| (ret & 0xffff_0000) as i32;
        let mut result = RET_ALLOW;
        for f in filters.iter().rev() {
            let ret = run(f, arch, nr, arg0);
            if action(ret) < action(result) {
                result = ret;
            }
        }
        result
    }

    /// The three filters crew installed before they were one program,
    /// compiled by seccompiler as they were.
    fn seccompiler_filters() -> Vec<BpfProgram> {
        use seccompiler::{
            SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
            SeccompRule, TargetArch,
        };
        let arch = if cfg!(target_arch = "x86_64") {
            TargetArch::x86_64
        } else if cfg!(target_arch = "aarch64") {
            TargetArch::aarch64
        } else {
            TargetArch::riscv64
        };
        let compile = |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32| {
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                arch,
            )
            .unwrap();
            BpfProgram::try_from(filter).unwrap()
        };
        let flag = libc::CLONE_NEWUSER as u64;
        let user_ns = || {
            SeccompRule::new(vec![
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .unwrap(),
            ])
            .unwrap()
        };
        let mut refuse: BTreeMap<i64, Vec<SeccompRule>> =
            refused().into_iter().map(|nr| (nr, Vec::new())).collect();
        refuse.insert(libc::SYS_unshare, vec![user_ns()]);
        refuse.insert(libc::SYS_clone, vec![user_ns()]);
        let mut filters = vec![
            compile(refuse, libc::EPERM),
            compile(
                BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
                libc::ENOSYS,
            ),
        ];
        if cfg!(target_arch = "x86_64") {
            // The x32 filter: ENOSYS for bit 30, anything else allowed.
            filters.push(vec![
                sock_filter {
                    code: LD_W_ABS,
                    jt: 0,
                    jf: 0,
                    k: ARCH,
                },
                sock_filter {
                    code: JEQ_K,
                    jt: 0,
                    jf: 3,
                    k: audit_arch().unwrap(),
                },
                sock_filter {
                    code: LD_W_ABS,
                    jt: 0,
                    jf: 0,
                    k: NR,
                },
                sock_filter {
                    code: JGE_K,
                    jt: 0,
                    jf: 1,
                    k: X32_SYSCALL_BIT,
                },
                sock_filter {
                    code: RET_K,
                    jt: 0,
                    jf: 0,
                    k: RET_ERRNO | libc::ENOSYS as u32,
                },
                sock_filter {
                    code: RET_K,
                    jt: 0,
                    jf: 0,
                    k: RET_ALLOW,
                },
            ]);
        }
        filters
    }

    #[test]
    fn the_filter_is_one_short_program() {
        let filters = seccomp_filters().unwrap();
        assert_eq!(filters.len(), 1);
        assert!(filters[0].len() < 100, "{} instructions", filters[0].len());
    }

    /// The one program answers every call as the three seccompiler filters
    /// did together: the same refusals, the same errno, the same kills.
    #[test]
    fn the_one_filter_decides_as_the_three_did() {
        let ours = seccomp_filters().unwrap();
        let theirs = seccompiler_filters();
        let arch = audit_arch().unwrap();
        let calls = (0..1024u32)
            .chain((0..1024).map(|n| n | X32_SYSCALL_BIT))
            .chain([u32::MAX, 0x8000_0000]);
        let args = [
            0,
            libc::CLONE_NEWUSER as u64,
            (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as u64,
            libc::CLONE_NEWNET as u64,
            (libc::SIGCHLD as u64) | (1 << 40),
            u64::MAX,
        ];
        let mut checked = 0;
        for nr in calls {
            for arg in args {
                for a in [arch, 0x4000_0003, 0] {
                    assert_eq!(
                        run_all(&ours, a, nr, arg),
                        run_all(&theirs, a, nr, arg),
                        "call {nr:#x}, arch {a:#x}, first argument {arg:#x}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000);
        // And the answers are the intended ones.
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        let nr = |c: libc::c_long| c as u32;
        assert_eq!(run_all(&ours, arch, nr(libc::SYS_mount), 0), eperm);
        assert_eq!(run_all(&ours, arch, nr(libc::SYS_getpid), 0), RET_ALLOW);
        assert_eq!(run_all(&ours, arch, nr(libc::SYS_clone3), 0), enosys);
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(run_all(&ours, arch, nr(libc::SYS_unshare), newuser), eperm);
        assert_eq!(run_all(&ours, arch, nr(libc::SYS_clone), newuser), eperm);
        assert_eq!(run_all(&ours, arch, nr(libc::SYS_clone), 0x11), RET_ALLOW);
        assert_eq!(
            run_all(&ours, 0x4000_0003, nr(libc::SYS_getpid), 0),
            RET_KILL_PROCESS
        );
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
