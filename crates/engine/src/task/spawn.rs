//! What a formation dyno and a one-off share in starting: the dyno task
//! itself, the environment, the command line `sh -c` runs, and the line
//! its exit writes.

use crew_runtime::Runtime;
use tokio::sync::mpsc;

use super::{Engine, Message};
use crate::dyno::{self, Control, Event, Launch};

impl<R: Runtime> Engine<R> {
    /// Starts a dyno task whose reports reach the engine as `message(event)`.
    pub(super) fn spawn_dyno(
        &self,
        launch: Launch,
        control: mpsc::UnboundedReceiver<Control>,
        message: impl Fn(Event) -> Message + Send + 'static,
    ) {
        let messages = self.messages_tx.clone();
        let report = move |event| {
            let _ = messages.send(message(event));
        };
        tokio::spawn(dyno::run(
            self.runtime.clone(),
            launch,
            report,
            self.logs.clone(),
            control,
        ));
    }
}

/// A dyno's environment: the release's, then `extra`, then PORT, DYNO and PS,
/// which are crew's to set.
pub(super) fn dyno_env(
    base: &[(String, String)],
    extra: Vec<(String, String)>,
    name: &str,
    port: Option<u16>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "PORT" | "DYNO" | "PS") && !extra.iter().any(|(e, _)| e == k)
        })
        .cloned()
        .collect();
    env.extend(extra);
    if let Some(port) = port {
        env.push(("PORT".into(), port.to_string()));
    }
    env.push(("DYNO".into(), name.to_string()));
    env.push(("PS".into(), name.to_string()));
    env
}

/// Heroku's `Process exited with status N`, and what the shell's own codes
/// mean, so that a dyno that could not start says why.
pub(super) fn exit_line(code: i32) -> String {
    let why = match code {
        127 => " (the command was not found)",
        126 => " (the command could not be executed)",
        _ => "",
    };
    format!("Process exited with status {code}{why}")
}

/// What `sh -c` runs for a command: the release's prefix, then the command,
/// `exec`ed when it is a simple one.
pub(super) fn command_line(prefix: Option<&str>, command: &str) -> String {
    let command = crew_procfile::shell::exec_form(command);
    match prefix {
        Some(prefix) => format!("{prefix}{command}"),
        None => command,
    }
}
