//! The client commands: `ps`, `scale`, `restart`, `stop` and `logs`, against a
//! running `crew start` found from the current directory or a server's app
//! (`Target::resolve`), and how a server is found and trusted.

use std::io::Write;

use anyhow::{Context, Result, anyhow};
use crew_api::client::{Client, Endpoint, Method};
use crew_api::types::{Dyno, FormationEntry, FormationUpdate, LogSession, LogSessionCreate};
use crew_procfile::parse_changes;
use http_body_util::BodyExt;

use crate::cli::{LogsArgs, PsArgs, RestartArgs, ScaleArgs, StopArgs};
use crate::control;
use crate::paths;

/// Where the commands send their requests.
pub struct Target {
    pub client: Client,
    pub app: String,
}

impl Target {
    /// A server's app when `-a` names one; else the closest context: a
    /// `crew start` running in this directory or a parent, then the current
    /// git repository's `crew` remote.
    pub fn resolve(app: Option<&str>) -> Result<Target> {
        if let Some(app) = app {
            return Target::server(app);
        }
        let running_here = std::env::current_dir()
            .ok()
            .and_then(|cwd| control::find(&cwd))
            .is_some_and(|socket| std::os::unix::net::UnixStream::connect(socket).is_ok());
        if running_here {
            return Target::find();
        }
        if let Some(app) = crew_remote_app() {
            return Target::server(&app);
        }
        Target::find()
    }

    /// An app on a server, found as the README describes: `CREW_API_URL`, else the
    /// server that last started on this machine, else the default address; the key
    /// from `CREW_API_KEY`, else `~/.netrc`, else that server's token file.
    pub fn server(app: &str) -> Result<Target> {
        let (url, key) = server_credentials()?;
        Ok(Target {
            client: server_client(&url, key)?,
            app: app.to_string(),
        })
    }

    /// The `crew start` running in the current directory or a parent.
    pub fn find() -> Result<Target> {
        let cwd = std::env::current_dir().context("finding the current directory")?;
        let socket = control::find(&cwd).ok_or_else(|| {
            anyhow!(
                "no running `crew start` found in {} or its parents (no {} file): \
                 run `crew start` in the app's directory, or pass -a APP for an app on a crew server",
                cwd.display(),
                control::SOCKET_NAME
            )
        })?;
        let root = socket.parent().unwrap_or(&cwd);
        Ok(Target {
            app: control::app_name(root),
            client: Client::new(Endpoint::Unix(socket.clone()), None),
        })
    }

    pub fn path(&self, rest: &str) -> String {
        format!("/apps/{}{rest}", self.app)
    }
}

/// `host:port` of an `http://host:port/...` URL.
pub fn host_of(url: &str) -> String {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let host = rest.split('/').next().unwrap_or(rest);
    // Credentials in the URL are not part of the address.
    host.rsplit('@').next().unwrap_or(host).to_string()
}

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8421";

/// The server's URL and API key, in the documented order.
pub fn server_credentials() -> Result<(String, Option<String>)> {
    let locator = std::fs::read_to_string(paths::locator_file()).ok();
    let mut lines = locator.as_deref().unwrap_or("").lines();
    let (located_url, token_file) = (lines.next(), lines.next());
    let url = std::env::var("CREW_API_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| located_url.map(str::to_string))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let url = url.trim_end_matches('/').to_string();
    let key = std::env::var("CREW_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .or_else(|| netrc_password(&host_of(&url)))
        .or_else(|| {
            token_file
                .map(std::path::PathBuf::from)
                .or_else(|| Some(paths::token_file(&paths::default_data_dir())))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|t| t.trim().to_string())
        });
    Ok((url, key))
}

/// The CA certificate of the server this machine runs (`CREW_CA_CERT`, else
/// `tls/ca.pem` beside the token the locator names, else in the default data
/// directory), when there is one.
pub fn server_ca() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("CREW_CA_CERT").filter(|p| !p.is_empty()) {
        return Some(path.into());
    }
    let locator = std::fs::read_to_string(paths::locator_file()).ok();
    let data = locator
        .as_deref()
        .and_then(|l| l.lines().nth(1))
        .and_then(|token| {
            std::path::Path::new(token)
                .parent()
                .map(|p| p.to_path_buf())
        })
        .unwrap_or_else(paths::default_data_dir);
    let ca = crate::tls::ca_path(&data);
    ca.is_file().then_some(ca)
}

/// A client for the server at `url`: over TLS for `https://`, trusting
/// [`api_roots`], never falling back to plain HTTP.
pub fn server_client(url: &str, key: Option<String>) -> Result<Client> {
    let client = Client::new(Endpoint::Tcp(host_of(url)), key);
    if !url.starts_with("https://") {
        return Ok(client);
    }
    let (roots, from) = api_roots()?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client
        .with_tls(std::sync::Arc::new(config))
        .with_context(|| format!("talking TLS to {url} (trusting {from})"))
}

/// The CAs crew's client trusts for an `https://` API: only `CREW_CA` (or
/// `CREW_CA_CERT`) when one is set; else crew's own CA of the server on this
/// machine, `SSL_CERT_FILE` and the system's bundle, whichever exist. Also
/// says which, for error messages.
fn api_roots() -> Result<(rustls::RootCertStore, String)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let named = ["CREW_CA", "CREW_CA_CERT"]
        .iter()
        .find_map(|k| std::env::var_os(k).filter(|v| !v.is_empty()));
    let files: Vec<std::path::PathBuf> = match &named {
        Some(path) => vec![path.clone().into()],
        None => {
            let mut files: Vec<std::path::PathBuf> = server_ca().into_iter().collect();
            if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
                files.push(path.into());
            }
            let system = std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
            if system.is_file() {
                files.push(system);
            }
            files
        }
    };
    if files.is_empty() {
        return Err(anyhow!(
            "no CA to trust for an https:// server: set CREW_CA to the server's              tls/ca.pem (or SSL_CERT_FILE to a bundle)"
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for file in &files {
        let certs = CertificateDer::pem_file_iter(file)
            .with_context(|| format!("reading the CA certificates in {}", file.display()))?;
        let mut any = false;
        for cert in certs {
            let cert =
                cert.with_context(|| format!("reading the CA certificates in {}", file.display()))?;
            // A bundle may hold certificates rustls cannot use; skip those.
            any |= roots.add(cert).is_ok();
        }
        if !any && named.is_some() {
            return Err(anyhow!("{} holds no CA certificate", file.display()));
        }
    }
    let from = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Ok((roots, from))
}

/// The password for `host` (with or without its port) in `~/.netrc`.
fn netrc_password(host: &str) -> Option<String> {
    let text = std::fs::read_to_string(paths::home().join(".netrc")).ok()?;
    let name = host.split(':').next().unwrap_or(host);
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    while i + 1 < words.len() {
        if words[i] == "machine" && (words[i + 1] == host || words[i + 1] == name) {
            let mut j = i + 2;
            while j + 1 < words.len() && words[j] != "machine" {
                if words[j] == "password" {
                    return Some(words[j + 1].to_string());
                }
                j += 1;
            }
        }
        i += 1;
    }
    None
}

/// The app a `crew` git remote in the current repository points at.
pub fn crew_remote_app() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["config", "--get", "remote.crew.url"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let url = String::from_utf8(output.stdout).ok()?;
    let last = url.trim().trim_end_matches('/').rsplit('/').next()?;
    last.strip_suffix(".git").map(str::to_string)
}

/// Heroku's `Doing something... done` line: `what... `, then the work, then
/// `done` or `failed`.
pub fn announce<T>(what: &str, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    crate::say(&format!("{what}... "));
    let result = block_on(work);
    crate::say(if result.is_ok() { "done\n" } else { "failed\n" });
    result
}

pub fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

pub fn ps(args: &PsArgs) -> Result<u8> {
    let target = Target::resolve(args.app.app.as_deref())?;
    let dynos: Vec<Dyno> = block_on(async {
        target
            .client
            .get(&target.path("/dynos"))
            .await
            .context("listing processes")
    })?;
    if args.json {
        crate::say(&format!("{}\n", serde_json::to_string_pretty(&dynos)?));
    } else {
        crate::say(&ps_table(&dynos, chrono::Utc::now()));
    }
    Ok(0)
}

/// `2s`, `3m`, `5h`, `2d`.
fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn state_text(dyno: &Dyno, now: chrono::DateTime<chrono::Utc>) -> String {
    let since = chrono::DateTime::parse_from_rfc3339(&dyno.updated_at)
        .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds())
        .unwrap_or(0);
    match (dyno.state.as_str(), dyno.restart_in) {
        ("crashed", Some(wait)) => format!(
            "crashed (restart in {}, {} restart{})",
            age(i64::try_from(wait).unwrap_or(i64::MAX)),
            dyno.restarts,
            if dyno.restarts == 1 { "" } else { "s" }
        ),
        ("complete", _) => String::from("complete"),
        (state, _) => format!("{state} for {}", age(since)),
    }
}

/// One line per dyno. A server's dynos have sizes, shown in their own column;
/// a local run's are all `local`, which says nothing. Dynos on a cluster of
/// several machines also show their node.
fn ps_table(dynos: &[Dyno], now: chrono::DateTime<chrono::Utc>) -> String {
    let sized = dynos.iter().any(|d| d.size != "local");
    let placed = dynos.iter().any(|d| d.node.is_some());
    let mut header = vec!["Process", "State"];
    if sized {
        header.push("Size");
    }
    if placed {
        header.push("Node");
    }
    header.extend(["PID", "Port", "Command"]);
    let rows: Vec<Vec<String>> = dynos
        .iter()
        .map(|d| {
            let mut row = vec![d.name.clone(), state_text(d, now)];
            if sized {
                row.push(d.size.clone());
            }
            if placed {
                row.push(d.node.clone().unwrap_or_else(|| "-".into()));
            }
            row.extend([
                d.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                d.port.map_or_else(|| "-".into(), |p| p.to_string()),
                d.command.clone(),
            ]);
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let last = cells.len() - 1;
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    line(&header, &mut out);
    let rules: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&rules, &mut out);
    for row in &rows {
        line(row, &mut out);
    }
    out
}

pub fn scale(args: &ScaleArgs) -> Result<u8> {
    let target = Target::resolve(args.app.app.as_deref())?;
    if args.changes.is_empty() {
        let formation: Vec<FormationEntry> = block_on(async {
            target
                .client
                .get(&target.path("/formation"))
                .await
                .context("reading the formation")
        })?;
        let text: Vec<String> = formation
            .iter()
            .map(|f| format!("{}={}", f.process_type, f.quantity))
            .collect();
        crate::say(&format!("{}\n", text.join(" ")));
        return Ok(0);
    }
    let updates = parse_changes(args.changes.iter().map(String::as_str))?;
    let mut named: Vec<String> = Vec::new();
    for change in &updates {
        if !named.contains(&change.process_type) {
            named.push(change.process_type.clone());
        }
    }
    let formation: Vec<FormationEntry> = block_on(async {
        target
            .client
            .call(
                Method::PATCH,
                &target.path("/formation"),
                &FormationUpdate { updates },
            )
            .await
            .context("scaling")
    })?;
    for entry in &formation {
        if named.contains(&entry.process_type) || named.iter().any(|n| n == "all") {
            crate::say(&format!(
                "Scaling {} processes... done, now running {}\n",
                entry.process_type, entry.quantity
            ));
        }
    }
    Ok(0)
}

pub fn restart(args: &RestartArgs) -> Result<u8> {
    let target = Target::resolve(args.app.app.as_deref())?;
    let (path, what) = match &args.target {
        Some(t) => (target.path(&format!("/dynos/{t}")), t.clone()),
        None => (target.path("/dynos"), String::from("all processes")),
    };
    let _: serde_json::Value = announce(&format!("Restarting {what}"), async {
        target
            .client
            .delete(&path)
            .await
            .with_context(|| format!("restarting {what}"))
    })?;
    Ok(0)
}

pub fn stop(args: &StopArgs) -> Result<u8> {
    let target = Target::resolve(args.app.app.as_deref())?;
    let path = target.path(&format!("/dynos/{}/actions/stop", args.target));
    let _: serde_json::Value = announce(&format!("Stopping {}", args.target), async {
        target
            .client
            .call(Method::POST, &path, &serde_json::json!({}))
            .await
            .with_context(|| format!("stopping {}", args.target))
    })?;
    Ok(0)
}

pub fn logs(args: &LogsArgs) -> Result<u8> {
    let target = Target::resolve(args.app.app.as_deref())?;
    block_on(async {
        let session: LogSession = target
            .client
            .call(
                Method::POST,
                &target.path("/log-sessions"),
                &LogSessionCreate {
                    dyno: args.ps.clone(),
                    lines: Some(args.num),
                    tail: Some(args.tail),
                    source: args.source.clone(),
                },
            )
            .await
            .context("opening the log")?;
        let mut body = target
            .client
            .stream(&session.logplex_url)
            .await
            .context("reading the log")?;
        let mut stdout = std::io::stdout();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("reading the log")?;
            if let Some(data) = frame.data_ref()
                && stdout
                    .write_all(data)
                    .and_then(|()| stdout.flush())
                    .is_err()
            {
                // The reader went away (`crew logs -t | head`): done.
                break;
            }
        }
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dyno(name: &str, state: &str, updated: &str) -> Dyno {
        Dyno {
            id: name.into(),
            name: name.into(),
            process_type: name.split('.').next().unwrap_or(name).into(),
            state: state.into(),
            command: "node web.js".into(),
            size: "local".into(),
            created_at: updated.into(),
            updated_at: updated.into(),
            attach_url: None,
            app: crew_api::types::AppRef {
                id: "a".into(),
                name: "a".into(),
            },
            release: None,
            pid: Some(42),
            port: Some(5000),
            restarts: 0,
            restart_in: None,
            node: None,
        }
    }

    #[test]
    fn ps_table_lines_up() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .expect("a time");
        let mut crashed = dyno("worker.1", "crashed", "2026-01-01T00:00:00Z");
        crashed.restart_in = Some(8);
        crashed.restarts = 5;
        let table = ps_table(&[dyno("web.1", "up", "2026-01-01T00:00:58Z"), crashed], now);
        assert_eq!(
            table,
            "Process   State                                PID  Port  Command\n\
             --------  -----------------------------------  ---  ----  -----------\n\
             web.1     up for 2s                            42   5000  node web.js\n\
             worker.1  crashed (restart in 8s, 5 restarts)  42   5000  node web.js\n"
        );
    }

    #[test]
    fn ages_are_compact() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(200_000), "2d");
    }
}
