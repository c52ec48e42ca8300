//! One-off dynos: `run` and `run:inside`, the `OneOffRequest` a user makes
//! and the checks it passes before any dyno is made. Apart from the
//! formation because a one-off is asked for by command, not by process type
//! and quantity, and is never stored.

use crate::size::size_named;
use crate::{Platform, PlatformError};
use crew_engine::DynoInfo;

/// A one-off dyno as a user asks for it.
#[derive(Debug, Clone, Default)]
pub struct OneOffRequest {
    pub command: String,
    pub env: Vec<(String, String)>,
    /// A dyno size by name (`standard-2x`); the default size without one.
    pub size: Option<String>,
    pub input: crew_runtime::DynoInput,
}

/// What `execve` and `sh -c` can take, checked before a one-off is made: a
/// command that is not empty and has no NUL, and variables whose names have
/// no `=` or NUL and whose values have no NUL. Otherwise the dyno would only
/// fail to start.
fn check_one_off(request: &OneOffRequest) -> Result<(), PlatformError> {
    if request.command.trim().is_empty() {
        return Err(PlatformError::Invalid("the command is empty".into()));
    }
    if request.command.contains('\0') {
        return Err(PlatformError::Invalid(
            "the command contains a NUL byte".into(),
        ));
    }
    for (name, value) in &request.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(PlatformError::Invalid(format!(
                "`{}` is not a valid environment variable name: it may not be empty or contain `=` or NUL",
                name.escape_debug()
            )));
        }
        if value.contains('\0') {
            return Err(PlatformError::Invalid(format!(
                "the value of environment variable `{name}` contains a NUL byte"
            )));
        }
    }
    Ok(())
}

impl Platform {
    /// Starts a one-off dyno from the current release; attached when the
    /// request's input is a pipe or a terminal.
    pub async fn run(
        &self,
        app: &str,
        request: OneOffRequest,
    ) -> Result<(DynoInfo, Option<crew_engine::Attachment>), PlatformError> {
        self.store.app(app)?;
        check_one_off(&request)?;
        let mut request = request;
        request.command = self.process_type_command(app, request.command);
        let size = request
            .size
            .as_deref()
            .map(|s| size_named(s, self.dyno_memory))
            .transpose()?;
        let running = self.running_app(app);
        running
            .event(
                "api",
                format!("Starting process with command `{}`", request.command),
            )
            .await;
        running
            .run(crew_engine::RunRequest {
                command: request.command,
                env: request.env,
                size,
                input: request.input,
            })
            .await
    }

    /// `run:inside`: `request` inside the running dyno `dyno` of `app`, in
    /// its namespaces and cgroup, as its user, with its environment plus the
    /// request's; attached (the input is a pipe or a terminal). A first word
    /// naming a process type runs that type's command, as for `run`.
    pub async fn run_inside(
        &self,
        app: &str,
        dyno: &str,
        request: OneOffRequest,
    ) -> Result<crew_engine::Attachment, PlatformError> {
        self.store.app(app)?;
        check_one_off(&request)?;
        if request.input == crew_runtime::DynoInput::Idle {
            return Err(PlatformError::Invalid(
                "run:inside is always attached: its input is a pipe or a terminal".into(),
            ));
        }
        let mut request = request;
        request.command = self.process_type_command(app, request.command);
        let running = self.running_app(app);
        running
            .event(
                "api",
                format!(
                    "Starting process with command `{}` inside {dyno}",
                    request.command
                ),
            )
            .await;
        running
            .run_inside(
                dyno.to_string(),
                crew_engine::RunRequest {
                    command: request.command,
                    env: request.env,
                    size: None,
                    input: request.input,
                },
            )
            .await
    }

    /// A one-off whose first word names a process type of the current
    /// release runs that type's command, the rest of the line after it, as
    /// `heroku run web` does; any other command is left as it is.
    fn process_type_command(&self, app: &str, command: String) -> String {
        let trimmed = command.trim_start();
        let (first, rest) =
            trimmed.split_at(trimmed.find(char::is_whitespace).unwrap_or(trimmed.len()));
        let slug = self
            .store
            .current_release(app)
            .ok()
            .and_then(|release| release.slug_id)
            .and_then(|id| self.store.slug(&id).ok());
        match slug.as_ref().and_then(|s| s.process_types.get(first)) {
            Some(type_command) => format!("{type_command}{rest}"),
            None => command,
        }
    }
}
