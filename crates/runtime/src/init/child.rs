//! What the dyno's init does, from the `clone` to its exit: walk the setup plan,
//! start the app, then reap and forward signals until the app exits.
//!
//! This runs in the child of a `clone` made by a multi-threaded process. Only
//! system calls through [`Sys`] happen here: nothing allocates, locks or panics.

use std::os::fd::RawFd;

use super::step::{EXEC_STEP, Flow, READY_STEP, Step, TIMING_BEGIN, TIMING_STEP, fd};
use super::sys::{CHILD_FDS, Sys};
use crate::ExitStatus;

/// Runs the init; returns its exit code. `fds` are the parent's descriptors that
/// become 0..6 (see [`fd`]). `timed`: after each step, report when it ended
/// (see [`TIMING_STEP`]).
pub(crate) fn dyno_init<S: Sys>(
    sys: &S,
    steps: &[Step],
    fds: &[RawFd; CHILD_FDS],
    timed: bool,
) -> i32 {
    let began = sys.clock_micros();
    // Signals queue from the start; init takes them with sigwait later. Nothing
    // can be reported before the descriptors are in place: the parent then sees
    // the setup pipe close without a record.
    if sys.block_signals().is_err() || sys.arrange_fds(fds).is_err() {
        return 126;
    }
    // Times travel as the errno field's bits.
    let time = |step: u32| sys.report(fd::SETUP, step, sys.clock_micros() as i32);
    if timed {
        sys.report(fd::SETUP, TIMING_BEGIN, began as i32);
    }
    for (index, step) in steps.iter().enumerate() {
        let result = step.run(sys);
        if timed && result.is_ok() {
            time(TIMING_STEP | u32::try_from(index).unwrap_or(0));
        }
        match result {
            Ok(Flow::Continue) => {}
            Ok(Flow::Abort) => return 1,
            Err(errno) => {
                sys.report(fd::SETUP, u32::try_from(index).unwrap_or(0), errno.0);
                return 1;
            }
        }
    }
    match sys.spawn_app() {
        Err(errno) => {
            let index = u32::try_from(steps.len()).unwrap_or(0);
            sys.report(fd::SETUP, index, errno.0);
            1
        }
        Ok(app) => {
            sys.report(fd::SETUP, READY_STEP, 0);
            // The app's copy closes on exec; with ours gone too the parent
            // reads end-of-file once the app runs.
            let _ = sys.close(fd::SETUP);
            let _ = sys.close(fd::GO);
            // Nor does the init hold the app's input and output: the output
            // ends when the app's processes are gone, not when the init has
            // also torn down its copy of crew's memory (it writes the status
            // before that, for the same reason).
            for stdio in 0..3 {
                let _ = sys.close(stdio);
            }
            init_loop(sys, app)
        }
    }
}

/// The app's process, from its start (in the init's memory, see
/// [`Sys::spawn_app`]) to its exec; returns the exit code if the exec failed.
pub(crate) fn app_main<S: Sys>(sys: &S) -> i32 {
    let errno = sys.exec_app();
    sys.report(fd::SETUP, EXEC_STEP, errno.0);
    127
}

/// Signals init passes on to every process of the dyno.
const FORWARDED: [i32; 8] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
];

/// pid 1 of the dyno: reaps every orphan, hands signals to all processes, and
/// exits with the app's status when the app exits.
///
/// When the app exits, init kills and reaps every other process of the dyno
/// itself (what the kernel would do when init exits) and only then writes
/// the status: crew may report the exit as soon as it reads it, since nothing
/// of the dyno runs any more, without waiting for init's own exit, in which
/// the kernel tears down the dyno's namespaces and mounts.
pub(crate) fn init_loop<S: Sys>(sys: &S, app: i32) -> i32 {
    loop {
        let signal = match sys.wait_signal() {
            Ok(s) => s,
            Err(errno) if errno.0 == libc::EINTR => continue,
            // sigwaitinfo cannot fail otherwise; if it does, give up the dyno
            // rather than spin.
            Err(_) => return 1,
        };
        if signal == libc::SIGCHLD {
            while let Some((pid, status)) = sys.reap() {
                if pid == app {
                    sys.signal_all(libc::SIGKILL);
                    sys.reap_all();
                    sys.write_status(fd::STATUS, status);
                    return ExitStatus::from_wait(status).code();
                }
            }
        } else if FORWARDED.contains(&signal) {
            sys.signal_all(signal);
        }
    }
}

impl ExitStatus {
    /// Decodes a raw `wait` status.
    pub(crate) fn from_wait(raw: i32) -> ExitStatus {
        let signal = raw & 0x7f;
        if signal == 0 {
            ExitStatus::Code((raw >> 8) & 0xff)
        } else {
            ExitStatus::Signaled(signal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::sys::{Errno, Recorder};
    use crate::isolated::plan::{Device, Entry, Layout, Setup, Walls, build, describe};
    use std::path::Path;
    use std::sync::Arc;

    fn layout() -> Layout {
        Layout {
            root: "/run/crew/root".into(),
            stack: vec![
                Entry::Bind {
                    path: "/usr".into(),
                    dir: true,
                },
                Entry::Bind {
                    path: "/etc".into(),
                    dir: true,
                },
                Entry::Link {
                    name: "bin".into(),
                    target: "usr/bin".into(),
                },
            ],
            extra: vec![],
            devices: vec![
                Device {
                    name: "null".into(),
                    rdev: 0x103,
                },
                Device {
                    name: "zero".into(),
                    rdev: 0x105,
                },
            ],
            walls: Walls {
                masked_proc: vec![("kcore".into(), false), ("acpi".into(), true)],
                read_only_proc: vec!["sys".into()],
                seccomp: Arc::new(vec![vec![seccompiler::sock_filter {
                    code: 6,
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000,
                }]]),
            },
            cgroup_files: 2,
        }
    }

    fn setup(terminal: Option<(u16, u16)>) -> Setup<'static> {
        Setup {
            hostname: "web.1",
            uid: 2000000001,
            gid: 2000000001,
            terminal,
        }
    }

    const FDS: [RawFd; CHILD_FDS] = [10, 11, 11, 12, 13, 14, 15, 16];

    /// The whole sequence, exactly: the contract with the kernel.
    #[test]
    fn setup_runs_in_order() {
        let steps = build(&layout(), &setup(None), Path::new("/srv/slugs/v1")).unwrap();
        let sys = Recorder::new();
        sys.signals
            .borrow_mut()
            .extend([libc::SIGTERM, libc::SIGCHLD]);
        sys.reaped.borrow_mut().push_back((2, 15));
        let code = dyno_init(&sys, &steps, &FDS, false);
        assert_eq!(code, 128 + 15);
        let r = "/run/crew/root";
        let expected = [
            "block signals".to_string(),
            "arrange fds [10, 11, 11, 12, 13, 14, 15, 16]".into(),
            "pdeathsig SIGKILL".into(),
            "join cgroup on 6".into(),
            "join cgroup on 7".into(),
            "close 6".into(),
            "close 7".into(),
            "unshare cgroup".into(),
            "name crew-init".into(),
            "mount / rprivate".into(),
            "open /srv/slugs/v1 as 8".into(),
            format!("mount tmpfs crew-root on {r} flags=0x6 data=mode=0755"),
            format!("mkdir {r}/usr 755"),
            format!("bind /usr on {r}/usr"),
            format!("remount {r}/usr flags=0x7"),
            format!("mkdir {r}/etc 755"),
            format!("bind /etc on {r}/etc"),
            format!("remount {r}/etc flags=0x7"),
            format!("symlink {r}/bin -> usr/bin"),
            format!("mkdir {r}/app 755"),
            format!("mount tmpfs crew-app on {r}/app flags=0x6 data=mode=0755"),
            format!("mkdir {r}/app/upper 755"),
            format!("chown {r}/app/upper 2000000001:2000000001"),
            format!("mkdir {r}/app/work 700"),
            format!("mkdir {r}/tmp 755"),
            format!("mount tmpfs tmpfs on {r}/tmp flags=0x6 data=mode=1777"),
            format!("mkdir {r}/proc 555"),
            format!("mount proc proc on {r}/proc flags=0xe data="),
            format!("bind /dev/null on {r}/proc/kcore"),
            format!("mount tmpfs tmpfs on {r}/proc/acpi flags=0xf data=size=0"),
            format!("bind {r}/proc/sys on {r}/proc/sys"),
            format!("remount {r}/proc/sys flags=0xf"),
            format!("mkdir {r}/dev 755"),
            format!("mount tmpfs tmpfs on {r}/dev flags=0xa data=mode=0755,size=64k"),
            format!("mknod {r}/dev/null 0x103"),
            format!("mknod {r}/dev/zero 0x105"),
            format!("symlink {r}/dev/fd -> /proc/self/fd"),
            format!("symlink {r}/dev/stdin -> /proc/self/fd/0"),
            format!("symlink {r}/dev/stdout -> /proc/self/fd/1"),
            format!("symlink {r}/dev/stderr -> /proc/self/fd/2"),
            format!("mkdir {r}/dev/pts 755"),
            format!(
                "mount devpts devpts on {r}/dev/pts flags=0xa \
                 data=newinstance,ptmxmode=0666,mode=0620"
            ),
            format!("symlink {r}/dev/ptmx -> pts/ptmx"),
            format!("mkdir {r}/dev/shm 755"),
            format!("mount tmpfs shm on {r}/dev/shm flags=0x6 data=mode=1777"),
            "hostname web.1".into(),
            format!("chdir {r}"),
            // Relative to the new root: its options name no host path.
            "mount overlay overlay on app flags=0x6 data=lowerdir=/proc/self/fd/8,\
             upperdir=app/upper,workdir=app/work"
                .into(),
            "close 8".into(),
            "pivot_root . .".into(),
            "umount detach .".into(),
            "chdir /".into(),
            "remount / flags=0x7".into(),
            "drop bounding set".into(),
            "setgroups []".into(),
            "setresgid 2000000001".into(),
            "setresuid 2000000001".into(),
            "clear capabilities".into(),
            "no_new_privs".into(),
            "seccomp 1 instructions".into(),
            "pdeathsig SIGKILL".into(),
            "parent alive on 5".into(),
            "chdir /app".into(),
            "spawn app".into(),
            format!("report on 3: step {READY_STEP} errno 0"),
            "close 3".into(),
            "close 5".into(),
            "close 0".into(),
            "close 1".into(),
            "close 2".into(),
            "sigwait -> Some(15)".into(),
            "kill -1 15".into(),
            "sigwait -> Some(17)".into(),
            "reap -> Some((2, 15))".into(),
            // Nothing of the dyno is left when the status is written.
            "kill -1 9".into(),
            "reap all".into(),
            "status on 4: 0xf".into(),
        ];
        assert_eq!(sys.calls(), expected);
    }

    /// Timed, each step is followed by a record of when it ended, and the
    /// walk itself is the same.
    #[test]
    fn a_timed_setup_reports_when_each_step_ended() {
        let steps = build(&layout(), &setup(None), Path::new("/srv/slugs/v1")).unwrap();
        let untimed = Recorder::new();
        untimed.signals.borrow_mut().push_back(libc::SIGCHLD);
        untimed.reaped.borrow_mut().push_back((2, 0));
        dyno_init(&untimed, &steps, &FDS, false);
        let timed = Recorder::new();
        timed.signals.borrow_mut().push_back(libc::SIGCHLD);
        timed.reaped.borrow_mut().push_back((2, 0));
        dyno_init(&timed, &steps, &FDS, true);
        let calls = timed.calls();
        let (records, walk): (Vec<_>, Vec<_>) = calls.iter().cloned().partition(|c| {
            c.starts_with("report on 3: step") && !c.contains(&format!("step {READY_STEP} "))
        });
        assert_eq!(walk, untimed.calls(), "timing changes nothing else");
        assert_eq!(records.len(), steps.len() + 1, "{records:?}");
        assert!(records[0].starts_with(&format!("report on 3: step {TIMING_BEGIN} ")));
        // The record after step i says so, and carries the clock read just
        // after it (the Recorder's clock is its call count, in ms).
        let second = calls.iter().position(|c| *c == records[2]).unwrap();
        assert_eq!(
            records[2],
            format!(
                "report on 3: step {} errno {}",
                TIMING_STEP | 1,
                second * 1000
            )
        );
    }

    #[test]
    fn a_failed_step_is_reported_and_stops_the_setup() {
        let steps = build(&layout(), &setup(None), Path::new("/srv/slugs/v1")).unwrap();
        let mut sys = Recorder::new();
        sys.fail = Some(("mount overlay".into(), libc::ENODEV));
        assert_eq!(dyno_init(&sys, &steps, &FDS, false), 1);
        let calls = sys.calls();
        let index = steps
            .iter()
            .position(
                |s| matches!(s, Step::Mount { fstype, .. } if fstype.as_bytes() == b"overlay"),
            )
            .unwrap();
        assert_eq!(
            calls.last().unwrap(),
            &format!("report on 3: step {index} errno {}", libc::ENODEV)
        );
        assert!(!calls.iter().any(|c| c.starts_with("pivot_root")));
        let text = describe(&steps, index as u32, Errno(libc::ENODEV));
        assert!(
            text.starts_with("could not mount overlay on app: "),
            "{text}"
        );
    }

    /// A terminal comes from the dyno's own devpts, after the pivot (so its
    /// name is `/dev/pts/N` inside) and before the drop (it is root's to open).
    #[test]
    fn a_terminal_is_opened_on_the_dyno_devpts_before_the_drop() {
        let steps = build(
            &layout(),
            &setup(Some((80, 24))),
            Path::new("/srv/slugs/v1"),
        )
        .unwrap();
        let sys = Recorder::new();
        sys.signals.borrow_mut().push_back(libc::SIGCHLD);
        sys.reaped.borrow_mut().push_back((2, 0));
        dyno_init(&sys, &steps, &FDS, false);
        let calls = sys.calls();
        let at = |text: &str| calls.iter().position(|c| c == text).unwrap();
        let terminal = at("terminal /dev/pts/ptmx for 2000000001:2000000001 80x24");
        assert!(at("pivot_root . .") < terminal);
        assert!(terminal < at("setresuid 2000000001"));
    }

    #[test]
    fn a_parent_that_is_gone_ends_the_setup_quietly() {
        let steps = build(&layout(), &setup(None), Path::new("/srv/slugs/v1")).unwrap();
        let mut sys = Recorder::new();
        sys.parent = false;
        assert_eq!(dyno_init(&sys, &steps, &FDS, false), 1);
        let calls = sys.calls();
        assert_eq!(calls.last().unwrap(), "parent alive on 5");
        assert!(!calls.iter().any(|c| c.starts_with("report")), "{calls:?}");
    }

    /// On cgroup v2 the init is cloned into its group and joins nothing;
    /// the two places are closed all the same.
    #[test]
    fn the_init_joins_no_cgroup_file_on_v2() {
        let mut v2 = layout();
        v2.cgroup_files = 0;
        let steps = build(&v2, &setup(None), Path::new("/srv/slugs/v1")).unwrap();
        let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text[..4],
            [
                "set the parent-death signal",
                "close descriptor 6",
                "close descriptor 7",
                "make a cgroup namespace"
            ]
        );
    }

    #[test]
    fn the_app_child_execs_and_reports_failure() {
        let sys = Recorder::new();
        assert_eq!(app_main(&sys), 127);
        assert_eq!(
            sys.calls(),
            [
                "exec app".to_string(),
                format!("report on 3: step {EXEC_STEP} errno 2")
            ]
        );
    }

    #[test]
    fn a_failed_spawn_is_reported_as_the_step_after_the_last() {
        let steps = build(&layout(), &setup(None), Path::new("/srv/slugs/v1")).unwrap();
        let mut sys = Recorder::new();
        sys.fail = Some(("spawn app".into(), libc::EAGAIN));
        assert_eq!(dyno_init(&sys, &steps, &FDS, false), 1);
        assert_eq!(
            sys.calls().last().unwrap(),
            &format!("report on 3: step {} errno {}", steps.len(), libc::EAGAIN)
        );
    }

    #[test]
    fn init_reaps_orphans_and_exits_with_the_app() {
        let sys = Recorder::new();
        sys.signals
            .borrow_mut()
            .extend([libc::SIGCHLD, libc::SIGPIPE, libc::SIGCHLD]);
        // An orphan first, then nothing, then the app with code 3.
        sys.reaped.borrow_mut().extend([(7, 0)]);
        let code = {
            // After the first SIGCHLD the script has no more reaps until the app.
            let first = init_loop_step(&sys);
            assert!(first.is_none());
            sys.reaped.borrow_mut().push_back((2, 3 << 8));
            init_loop(&sys, 2)
        };
        assert_eq!(code, 3);
        let calls = sys.calls();
        // SIGPIPE is not passed on; the rest is killed once the app is gone.
        let kills: Vec<&String> = calls.iter().filter(|c| c.starts_with("kill -1")).collect();
        assert_eq!(kills, ["kill -1 9"], "{calls:?}");
        assert_eq!(
            calls[calls.len() - 3..],
            ["kill -1 9", "reap all", "status on 4: 0x300"]
        );
    }

    /// One turn of the loop, for the test above.
    fn init_loop_step(sys: &Recorder) -> Option<i32> {
        let signal = sys.wait_signal().ok()?;
        assert_eq!(signal, libc::SIGCHLD);
        while let Some((pid, _)) = sys.reap() {
            assert_eq!(pid, 7);
        }
        None
    }

    #[test]
    fn wait_statuses_decode() {
        assert_eq!(ExitStatus::from_wait(0), ExitStatus::Code(0));
        assert_eq!(ExitStatus::from_wait(42 << 8), ExitStatus::Code(42));
        assert_eq!(ExitStatus::from_wait(9), ExitStatus::Signaled(9));
        assert_eq!(ExitStatus::from_wait(15 | 0x80), ExitStatus::Signaled(15));
    }
}
