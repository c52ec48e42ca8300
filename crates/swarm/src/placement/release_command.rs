//! The release command (Heroku's release phase) on a swarm: before the
//! platform applies a release, its image is made available as for an
//! apply, and a container `APP-release-vN` of it runs on this node as an
//! attached one-off does (`DYNO=release.1`, stdin closed). Its output goes
//! to the platform line by line, its exit code is the answer, it is killed
//! at the time limit, and it is removed however it ends.

use std::sync::Arc;
use std::time::Duration;

use crew_engine::{RELEASE_DYNO, ReleaseCommand, ReleaseSpec};
use crew_runtime::ExitStatus;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::app::SwarmApp;
use super::attach::{attach_and_start, demux_into};
use crate::SwarmError;
use crate::docker::Docker;
use crate::spec;

impl SwarmApp {
    /// A release's release command: a container of the release's image on
    /// this node, made as an attached `crew run`'s is (the same environment,
    /// profile, user and network), named [`RELEASE_DYNO`]. Its output goes
    /// to `command.output` line by line; it is stopped once
    /// `command.timeout` is over, and removed however it ends.
    pub(super) async fn release_command(
        &self,
        release: ReleaseSpec,
        command: ReleaseCommand,
    ) -> Result<ExitStatus, SwarmError> {
        // The image apply will run (pushed to the registry, or loaded), and
        // the network, which a first deploy has not made yet.
        self.ensure_image(&release).await?;
        self.ensure_network().await?;
        let name = spec::release_name(&release);
        // A container of this name is left from an attempt crew did not see
        // to its end (the server died during it); this attempt replaces it.
        let _ = self.docker.container_remove(&name).await;
        let config = spec::container_config(
            &release,
            &self.image(&release),
            RELEASE_DYNO,
            &command.command,
            &[],
            None,
        );
        let id = self.docker.container_create(&name, &config).await?;
        let container = Removal::new(self.docker.clone(), id.clone());
        let ran = self.run_release_container(&id, command).await;
        container.remove().await;
        ran
    }

    async fn run_release_container(
        &self,
        id: &str,
        command: ReleaseCommand,
    ) -> Result<ExitStatus, SwarmError> {
        use tokio::io::AsyncWriteExt;
        let attached = attach_and_start(&self.docker, id).await?;
        let (read, mut write) = tokio::io::split(attached);
        // It gets no input, as on Heroku, where the release phase is a
        // detached dyno: its stdin ends now, so a command that reads it
        // does not wait for ever.
        let _ = write.shutdown().await;
        let (reader, writer) = tokio::io::duplex(64 * 1024);
        let _copier = AbortOnDrop(tokio::spawn(demux_into(read, writer)));
        let mut forward = AbortOnDrop(tokio::spawn(forward_lines(reader, command.output)));
        let code = match tokio::time::timeout(command.timeout, self.docker.container_wait(id)).await
        {
            Ok(code) => code?,
            Err(_) => {
                let _ = self.docker.container_kill(id, "SIGKILL").await;
                return Err(SwarmError::Invalid(format!(
                    "{RELEASE_DYNO} did not finish within {} s and was stopped",
                    command.timeout.as_secs()
                )));
            }
        };
        // The attach stream ends with the container; what is still on its
        // way is passed on, for a little while.
        let _ = tokio::time::timeout(RELEASE_DRAIN, &mut forward.0).await;
        Ok(ExitStatus::Code(i32::try_from(code).unwrap_or(255)))
    }
}

/// How long a release command's last output may take to arrive once its
/// container has ended.
const RELEASE_DRAIN: Duration = Duration::from_secs(5);

/// Sends each line of `input` to `output`, without its line end; invalid
/// UTF-8 is replaced rather than dropped, and a last line without an end is
/// sent too.
async fn forward_lines(
    input: impl tokio::io::AsyncRead + Unpin,
    output: mpsc::UnboundedSender<String>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut input = tokio::io::BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if output
            .send(text.trim_end_matches(['\n', '\r']).to_string())
            .is_err()
        {
            return;
        }
    }
}

/// A task that ends with its owner, whatever way the owner ends.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A container to remove: awaited on the way out, or, if its owner is
/// dropped before (the platform gave up waiting), in a task of its own.
struct Removal {
    docker: Arc<Docker>,
    id: Option<String>,
}

impl Removal {
    fn new(docker: Arc<Docker>, id: String) -> Removal {
        Removal {
            docker,
            id: Some(id),
        }
    }

    async fn remove(mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.docker.container_remove(&id).await;
        }
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if let (Some(id), Ok(runtime)) = (self.id.take(), tokio::runtime::Handle::try_current()) {
            let docker = self.docker.clone();
            runtime.spawn(async move {
                let _ = docker.container_remove(&id).await;
            });
        }
    }
}
