use std::fmt;

/// The signals crew sends, independent of the platform's numbering; converted at
/// the edge in [`crate::os`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Kill,
    Usr1,
    Usr2,
    Term,
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::Hup,
        Signal::Int,
        Signal::Quit,
        Signal::Kill,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Term,
    ];

    /// The Linux number, which is also what exit statuses are built from
    /// (`143` = 128 + SIGTERM).
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Term => 15,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Term => "SIGTERM",
        }
    }

    /// Accepts `TERM`, `SIGTERM` and `sigterm`.
    pub fn from_name(name: &str) -> Option<Signal> {
        let upper = name.trim().to_ascii_uppercase();
        let short = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL
            .into_iter()
            .find(|s| s.name().strip_prefix("SIG") == Some(short))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a dyno's leader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    /// Killed by this signal number.
    Signaled(i32),
}

impl ExitStatus {
    /// The code a shell would report: the exit code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The signal's name for a signal exit crew knows by name.
    pub fn signal_name(self) -> Option<&'static str> {
        match self {
            ExitStatus::Signaled(n) => Signal::ALL
                .into_iter()
                .find(|s| s.number() == n)
                .map(Signal::name),
            ExitStatus::Code(_) => None,
        }
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Code(code),
            (None, Some(sig)) => ExitStatus::Signaled(sig),
            // Neither a code nor a signal only happens for stopped processes,
            // which `wait` does not report.
            (None, None) => ExitStatus::Code(-1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (text, sig) in [
            ("TERM", Signal::Term),
            ("SIGINT", Signal::Int),
            ("sigquit", Signal::Quit),
            (" usr2 ", Signal::Usr2),
        ] {
            assert_eq!(Signal::from_name(text), Some(sig), "{text}");
        }
        assert_eq!(Signal::from_name("SIGFOO"), None);
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(ExitStatus::Signaled(15).code(), 143);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert_eq!(ExitStatus::Code(42).code(), 42);
        assert_eq!(ExitStatus::Signaled(15).signal_name(), Some("SIGTERM"));
    }
}
