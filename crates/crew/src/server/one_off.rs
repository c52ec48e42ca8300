//! A one-off dyno between the API and the platform: the platform's request
//! made from the API's `DynoCreate`, and the platform's attachment handed back
//! as the API's `Attached`.
//!
//! Separate from `api` because it is the one part of the adapter that deals
//! in running processes (terminals, exit codes, hang-ups) rather than JSON.

use crew_api::server::ApiError;
use crew_api::types::DynoCreate;

/// A one-off as the platform takes it, from the API's request.
pub fn one_off_request(
    request: DynoCreate,
    input: crew_runtime::DynoInput,
) -> crew_platform::OneOffRequest {
    crew_platform::OneOffRequest {
        command: request.command,
        env: request.env.unwrap_or_default().into_iter().collect(),
        size: request.size,
        input,
    }
}

/// What an attached process reads: a terminal of the size the client asked
/// for, or a pipe with `--no-tty` or without a size.
pub fn attached_input(request: &DynoCreate) -> crew_runtime::DynoInput {
    match (request.force_no_tty, &request.terminal) {
        (Some(true), _) | (_, None) => crew_runtime::DynoInput::Pipe,
        (_, Some(size)) => crew_runtime::DynoInput::Terminal {
            cols: size.cols,
            rows: size.rows,
        },
    }
}

/// An engine's attachment as the API hands it to a client: once the process
/// runs, its output, its input and terminal size if it has a terminal, its
/// exit code and a way to hang up on it.
pub async fn attached(
    attachment: crew_engine::Attachment,
    not_started: &str,
) -> Result<crew_api::attach::Attached, ApiError> {
    let crew_engine::Attachment { io, exit, hangup } = attachment;
    let (output, console) = match io.await {
        Ok(Ok(io)) => io,
        Ok(Err(why)) => return Err(ApiError::unavailable(why)),
        Err(_) => return Err(ApiError::unavailable(not_started)),
    };
    let (input, resize) = match console {
        Some(console) => (Some(console.input), console.resize),
        None => (None, None),
    };
    Ok(crew_api::attach::Attached {
        output: Box::pin(output),
        input: input.map(|i| Box::pin(i) as _),
        resize: resize.map(|r| Box::new(move |cols, rows| r.set(cols, rows)) as _),
        exit: Box::pin(async move { exit.await.map_or(-1, |status| status.code()) }),
        hangup: Box::new(hangup),
    })
}
