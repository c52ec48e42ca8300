//! What each init format's files hold. Every function returns the entries to
//! write, relative to the export's location, or an error naming what the
//! format cannot hold; the driver (`super`) does the writing.

use anyhow::{Result, anyhow, bail};

use super::quote;
use super::template::Templates;
use super::{Entry, Plan};

fn q<T>(result: Result<T, String>) -> Result<T> {
    result.map_err(|e| anyhow!(e))
}

/// The variables every per-process template gets.
fn process_vars(plan: &Plan, type_name: &str, num: u32, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("app", plan.app.clone()),
        ("type", type_name.to_string()),
        ("num", num.to_string()),
        ("port", port.to_string()),
        ("timeout", plan.timeout.to_string()),
    ]
}

/// The app's config vars and crew's three: what a process's environment holds.
fn instance_env(plan: &Plan, type_name: &str, num: u32, port: u16) -> Vec<(String, String)> {
    let dyno = format!("{type_name}.{num}");
    let mut env = plan.env.clone();
    env.push(("PORT".into(), port.to_string()));
    env.push(("DYNO".into(), dyno.clone()));
    env.push(("PS".into(), dyno));
    env
}

/// systemd: `APP.target` wants each process, a template unit `APP-TYPE@.service`
/// per type runs instance N (`APP-web@2.service` is `web.2`) on the type's
/// port block, and `APP.env` (mode 0600) holds the config vars.
pub fn systemd(plan: &Plan, templates: &Templates) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let env_name = format!("{}.env", plan.app);
    let mut env_text = format!(
        "# {}'s config vars, read by its units (crew export systemd)\n",
        plan.app
    );
    for (key, value) in &plan.env {
        env_text.push_str(&format!("{key}={}\n", quote::env_file_value(value)));
    }
    entries.push(Entry::file(&env_name, env_text, 0o600));
    let env_file = plan.location.join(&env_name);
    let mut wants = Vec::new();
    for process in &plan.types {
        let unit = format!("{}-{}", plan.app, process.name);
        let script = format!(
            "bad() {{ echo \"{unit}@$1: $2\" >&2; exit 64; }}; \
             case \"$1\" in ''|0*|*[!0-9]*) bad \"$1\" 'the instance is a process number: 1, 2, 3 ...';; esac; \
             [ ${{#1}} -le 5 ] && PORT=$(({} + $1 - 1)) && [ \"$PORT\" -le 65535 ] || bad \"$1\" 'the port is past 65535'; \
             export PORT; exec /bin/sh -c \"$2\"",
            process.first_port
        );
        let exec_start = [
            quote::systemd_exec_word("/bin/sh"),
            quote::systemd_exec_word("-c"),
            quote::systemd_exec_word(&script),
            quote::systemd_exec_word(&unit),
            "%i".to_string(),
            quote::systemd_exec_word(&process.command),
        ]
        .join(" ");
        let mut vars = process_vars(plan, &process.name, 1, process.first_port);
        vars.retain(|(k, _)| *k != "num");
        vars.extend([
            ("user", q(quote::systemd_setting("the user", &plan.user))?),
            (
                "root",
                q(quote::systemd_setting(
                    "the app directory",
                    &plan.root.display().to_string(),
                ))?,
            ),
            (
                "env_file",
                q(quote::systemd_setting(
                    "the location",
                    &env_file.display().to_string(),
                ))?,
            ),
            ("exec_start", exec_start),
        ]);
        entries.push(Entry::file(
            &format!("{unit}@.service"),
            templates.render("process.service", &vars)?,
            0o644,
        ));
        wants.extend((1..=process.quantity).map(|n| format!("{unit}@{n}.service")));
    }
    let vars = [("app", plan.app.clone()), ("wants", wants.join(" "))];
    entries.push(Entry::file(
        &format!("{}.target", plan.app),
        templates.render("master.target", &vars)?,
        0o644,
    ));
    Ok(entries)
}

/// supervisord: `APP.conf` (mode 0600), a `[program:APP-TYPE.N]` per process
/// and a `[group:APP]` of them all.
pub fn supervisord(plan: &Plan, templates: &Templates) -> Result<Vec<Entry>> {
    let mut text = String::new();
    let mut programs = Vec::new();
    for (process, num, port) in plan.instances() {
        let name = format!("{}-{}.{num}", plan.app, process.name);
        let environment = instance_env(plan, &process.name, num, port)
            .iter()
            .map(|(k, v)| q(quote::supervisor_env(k, v)))
            .collect::<Result<Vec<_>>>()?
            .join(",");
        let log_file = plan.log.join(format!("{name}.log"));
        let mut vars = process_vars(plan, &process.name, num, port);
        vars.extend([
            ("name", name.clone()),
            (
                "command",
                q(quote::supervisor_command(&[
                    "/bin/sh",
                    "-c",
                    &process.command,
                ]))?,
            ),
            (
                "root",
                q(quote::supervisor_path(
                    "the app directory",
                    &plan.root.display().to_string(),
                ))?,
            ),
            ("user", q(quote::supervisor_path("the user", &plan.user))?),
            ("environment", environment),
            (
                "log_file",
                q(quote::supervisor_path(
                    "the log directory",
                    &log_file.display().to_string(),
                ))?,
            ),
        ]);
        text.push_str(&templates.render("program.conf", &vars)?);
        programs.push(name);
    }
    let vars = [("app", plan.app.clone()), ("programs", programs.join(","))];
    text.push_str(&templates.render("group.conf", &vars)?);
    Ok(vec![Entry::file(
        &format!("{}.conf", plan.app),
        text,
        0o600,
    )])
}

/// runit: a service directory `APP-TYPE.N` per process, with a `run` script
/// (mode 0700, since it holds the config vars) and `log/run` for svlogd.
pub fn runit(plan: &Plan, templates: &Templates) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (process, num, port) in plan.instances() {
        let name = format!("{}-{}.{num}", plan.app, process.name);
        let environment = instance_env(plan, &process.name, num, port)
            .iter()
            .map(|(k, v)| format!("export {k}={}", quote::sh(v)))
            .collect::<Vec<_>>()
            .join("\n");
        let mut vars = process_vars(plan, &process.name, num, port);
        vars.extend([
            ("name", name.clone()),
            ("root", quote::sh(&plan.root.display().to_string())),
            ("user", quote::sh(&plan.user)),
            ("environment", environment),
            ("command", quote::sh(&process.command)),
            (
                "log_dir",
                quote::sh(&plan.log.join(&name).display().to_string()),
            ),
        ]);
        entries.push(Entry::dir(&name));
        entries.push(Entry::file(
            &format!("{name}/run"),
            templates.render("run", &vars)?,
            0o700,
        ));
        entries.push(Entry::dir(&format!("{name}/log")));
        entries.push(Entry::file(
            &format!("{name}/log/run"),
            templates.render("log-run", &vars)?,
            0o755,
        ));
    }
    Ok(entries)
}

/// launchd: a property list `APP-TYPE.N.plist` (mode 0600) per process.
pub fn launchd(plan: &Plan, templates: &Templates) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (process, num, port) in plan.instances() {
        let name = format!("{}-{}.{num}", plan.app, process.name);
        let mut environment = Vec::new();
        for (key, value) in instance_env(plan, &process.name, num, port) {
            environment.push(format!(
                "        <key>{key}</key>\n        <string>{}</string>",
                q(quote::xml(&format!("the value of {key}"), &value))?
            ));
        }
        let program_arguments = ["/bin/sh", "-c", &process.command]
            .iter()
            .map(|a| {
                Ok(format!(
                    "        <string>{}</string>",
                    q(quote::xml("the command", a))?
                ))
            })
            .collect::<Result<Vec<_>>>()?
            .join("\n");
        let log_file = plan.log.join(format!("{name}.log")).display().to_string();
        let mut vars = process_vars(plan, &process.name, num, port);
        vars.extend([
            ("name", name.clone()),
            ("environment", environment.join("\n")),
            ("program_arguments", program_arguments),
            ("log_file", q(quote::xml("the log directory", &log_file))?),
            ("user", q(quote::xml("the user", &plan.user))?),
            (
                "root",
                q(quote::xml(
                    "the app directory",
                    &plan.root.display().to_string(),
                ))?,
            ),
        ]);
        entries.push(Entry::file(
            &format!("{name}.plist"),
            templates.render("process.plist", &vars)?,
            0o600,
        ));
    }
    Ok(entries)
}

/// One line of an upstart job that must not break.
fn upstart_line(what: &str, value: &str) -> Result<String> {
    if value.contains(['\n', '\r']) {
        bail!("{what} holds a line break, which an upstart stanza cannot hold");
    }
    Ok(value.to_string())
}

/// upstart (and `daemon`, which runs each process through start-stop-daemon):
/// `APP.conf` starts with the system, `APP-TYPE.conf` with it, and
/// `APP-TYPE-N.conf` (mode 0600) is one process.
pub fn upstart(plan: &Plan, templates: &Templates, daemon: bool) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut master = vec![("app", plan.app.clone())];
    if daemon {
        master.extend([
            ("user", quote::sh(&plan.user)),
            ("log", quote::sh(&plan.log.display().to_string())),
            ("run", quote::sh(&plan.run.display().to_string())),
        ]);
    }
    entries.push(Entry::file(
        &format!("{}.conf", plan.app),
        templates.render("master.conf", &master)?,
        0o644,
    ));
    for process in plan.types.iter().filter(|p| p.quantity > 0) {
        let vars = [("app", plan.app.clone()), ("type", process.name.clone())];
        entries.push(Entry::file(
            &format!("{}-{}.conf", plan.app, process.name),
            templates.render("process_master.conf", &vars)?,
            0o644,
        ));
    }
    for (process, num, port) in plan.instances() {
        let file_name = format!("{}-{}-{num}", plan.app, process.name);
        let environment = instance_env(plan, &process.name, num, port)
            .iter()
            .map(|(k, v)| Ok(format!("env {k}={}", q(quote::upstart_env(k, v))?)))
            .collect::<Result<Vec<_>>>()?
            .join("\n");
        let root = plan.root.display().to_string();
        let mut vars = process_vars(plan, &process.name, num, port);
        vars.push(("environment", environment));
        vars.push(("command", quote::sh(&process.command)));
        if daemon {
            vars.extend([
                ("user", quote::sh(&plan.user)),
                ("root", quote::sh(&root)),
                (
                    "pid_file",
                    quote::sh(
                        &plan
                            .run
                            .join(format!("{file_name}.pid"))
                            .display()
                            .to_string(),
                    ),
                ),
                (
                    "log_file",
                    quote::sh(
                        &plan
                            .log
                            .join(format!("{file_name}.log"))
                            .display()
                            .to_string(),
                    ),
                ),
            ]);
        } else {
            vars.extend([
                ("user", upstart_line("the user", &plan.user)?),
                ("root", upstart_line("the app directory", &root)?),
            ]);
        }
        entries.push(Entry::file(
            &format!("{file_name}.conf"),
            templates.render("process.conf", &vars)?,
            0o600,
        ));
    }
    Ok(entries)
}

/// inittab: one `respawn` line per process, `su`ing to the user; the lines sit
/// between crew's marker comments, which is how a later export finds them.
pub fn inittab_lines(plan: &Plan, templates: &Templates) -> Result<String> {
    let prefix: String = plan.app.chars().take(2).collect::<String>().to_uppercase();
    let mut lines = String::new();
    for (index, (process, num, port)) in plan.instances().enumerate() {
        let index = index + 1;
        if index > 99 {
            bail!("inittab ids are {prefix}01 to {prefix}99: more than 99 processes do not fit");
        }
        let log_file = plan
            .log
            .join(format!("{}-{}.{num}.log", plan.app, process.name))
            .display()
            .to_string();
        let mut script = format!("cd {} &&", quote::sh(&plan.root.display().to_string()));
        for (key, value) in instance_env(plan, &process.name, num, port) {
            script.push_str(&format!(" export {key}={} &&", quote::sh(&value)));
        }
        script.push_str(&format!(
            " exec /bin/sh -c {} >> {} 2>&1",
            quote::sh(&process.command),
            quote::sh(&log_file)
        ));
        if script.contains(['\n', '\r']) {
            bail!(
                "a config var, the command or a path holds a line break, which an inittab line cannot hold"
            );
        }
        let mut vars = process_vars(plan, &process.name, num, port);
        vars.extend([
            ("id", format!("{prefix}{index:02}")),
            ("user", quote::sh(&plan.user)),
            ("script", quote::sh(&script)),
        ]);
        lines.push_str(&templates.render("process", &vars)?);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    /// The systemd instance script, run as systemd would run it: `$1` is the
    /// instance, `$2` the command.
    #[test]
    fn the_systemd_instance_script_computes_the_port_and_refuses_other_instances() {
        use super::super::tests::plan;
        let plan = plan();
        let templates = super::Templates::new("systemd", None).unwrap();
        let entries = super::systemd(&plan, &templates).unwrap();
        let unit = entries
            .iter()
            .find(|e| e.path == "shop-worker@.service")
            .expect("the worker unit");
        let text = unit.contents.as_deref().unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        // Third word: the script, as systemd unquotes it.
        let script_word = exec.split("\" \"").nth(2).unwrap();
        let script = script_word
            .replace("%%", "%")
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
            .replace("$$", "$");
        let run = |instance: &str| {
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", &script, "shop-worker", instance, "echo $PORT"])
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        };
        assert_eq!(run("1").1, "5100");
        assert_eq!(run("3").1, "5102");
        for bad in ["0", "01", "x", "", "1x", "99999999999999999999"] {
            let (code, _, stderr) = run(bad);
            assert_eq!(code, Some(64), "{bad}: {stderr}");
            assert!(
                stderr.starts_with(&format!("shop-worker@{bad}:")),
                "{stderr}"
            );
        }
    }
}
