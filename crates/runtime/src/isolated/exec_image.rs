//! What a dyno's init execs: `/bin/sh -c COMMAND` with the dyno's
//! environment, as an [`ExecImage`] built before the `clone` (for a dyno and
//! for a process started inside one; a sandboxed program has its own, see
//! `sandbox`).

use std::io;

use super::plan;
use crate::os::ExecImage;
use crate::{DynoInput, DynoSpec};

/// `/bin/sh -c COMMAND` with the spec's environment, `HOME=/app`, and the slug's
/// host path in any value replaced by `/app`.
pub(super) fn exec_image(spec: &DynoSpec) -> io::Result<ExecImage> {
    use std::ffi::CString;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    let slug = spec.cwd.to_str().map(|s| s.trim_end_matches('/'));
    let mut envp = Vec::with_capacity(spec.env.len() + 1);
    for (key, value) in &spec.env {
        if key == "HOME" {
            continue;
        }
        if key.is_empty() || key.contains('=') {
            return Err(invalid(
                "an environment variable has an empty name or one with `=`",
            ));
        }
        let value = match slug {
            Some(s) if !s.is_empty() => crate::slug_copy::rebase(value, s, plan::APP),
            _ => value.clone(),
        };
        envp.push(
            CString::new(format!("{key}={value}"))
                .map_err(|_| invalid("an environment variable contains a NUL byte"))?,
        );
    }
    envp.push(CString::new(format!("HOME={}", plan::APP)).map_err(|_| invalid("HOME"))?);
    let command = CString::new(spec.command.as_str())
        .map_err(|_| invalid("the command contains a NUL byte"))?;
    Ok(ExecImage {
        program: CString::new("/bin/sh").map_err(|_| invalid("sh"))?,
        argv: vec![
            CString::new("/bin/sh").map_err(|_| invalid("sh"))?,
            CString::new("-c").map_err(|_| invalid("-c"))?,
            command,
        ],
        envp,
        terminal: matches!(spec.input, DynoInput::Terminal { .. }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_gets_home_and_no_nul() {
        let spec = DynoSpec {
            name: "web.1".into(),
            command: "echo hi".into(),
            env: vec![
                ("HOME".into(), "/srv/slug".into()),
                ("PATH".into(), "/srv/slug/bin:/usr/bin".into()),
                ("PORT".into(), "5000".into()),
            ],
            cwd: "/srv/slug/".into(),
            ..DynoSpec::default()
        };
        let image = exec_image(&spec).unwrap();
        let env: Vec<String> = image
            .envp
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(env, ["PATH=/app/bin:/usr/bin", "PORT=5000", "HOME=/app"]);
        let argv: Vec<String> = image
            .argv
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(argv, ["/bin/sh", "-c", "echo hi"]);

        let mut bad = spec.clone();
        bad.command = "a\0b".into();
        assert_eq!(
            exec_image(&bad).err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
        let mut bad = spec;
        bad.env.push(("A=B".into(), "x".into()));
        assert!(exec_image(&bad).is_err());
    }
}
