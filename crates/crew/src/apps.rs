//! The server's app commands: apps, config vars and releases.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use crew_api::client::Method;
use crew_api::types::{AppCreate, AppInfo, ReleaseCreate, ReleaseInfo};

use crate::cli::{
    AppFlag, AppsCreateArgs, AppsDestroyArgs, ConfigGetArgs, ConfigSetArgs, ConfigUnsetArgs,
    DomainArgs, GitRemoteArgs, ReleaseArgs, RunDetachedArgs,
};
use crate::client::{Target, announce, block_on, server_credentials};

/// A client for server-wide routes (`/apps`), which name no app.
fn server_client() -> Result<crew_api::client::Client> {
    let (url, key) = server_credentials()?;
    crate::client::server_client(&url, key)
}

/// `-a APP`, else the app of the `crew` git remote.
fn target(args: &AppFlag) -> Result<Target> {
    match &args.app {
        Some(app) => Target::server(app),
        // Only the server has these commands: a `crew start` running here
        // does not stand in for the remote.
        None => match crate::client::crew_remote_app() {
            Some(app) => Target::server(&app),
            None => bail!(
                "which app? pass -a APP (or run this in a git repository with a `crew` remote)"
            ),
        },
    }
}

pub fn apps() -> Result<u8> {
    let client = server_client()?;
    let apps: Vec<AppInfo> = block_on(async { client.get("/apps").await.context("listing apps") })?;
    if apps.is_empty() {
        crate::say("You have no apps.\n");
    } else {
        let mut text = String::from("=== Apps\n");
        for app in apps {
            text.push_str(&app.name);
            text.push('\n');
        }
        crate::say(&text);
    }
    Ok(0)
}

pub fn create(args: &AppsCreateArgs) -> Result<u8> {
    let client = server_client()?;
    let (url, key) = server_credentials()?;
    let doing = match &args.name {
        Some(name) => format!("Creating {name}"),
        None => "Creating app".to_string(),
    };
    let app: AppInfo = announce(&doing, async {
        client
            .call(
                Method::POST,
                "/apps",
                &AppCreate {
                    name: args.name.clone(),
                },
            )
            .await
            .map_err(|e| {
                let e = anyhow::Error::from(e);
                if e.to_string().contains("already taken") {
                    e.context(format!(
                        "to push to an app that exists, add its remote with `crew git:remote -a {}`",
                        args.name.as_deref().unwrap_or_default()
                    ))
                } else {
                    e
                }
            })
    })?;
    let git_url = format!("{url}/{}.git", app.name);
    if args.name.is_none() {
        crate::say(&format!("Created {}\n", app.name));
    }
    crate::say(&format!("{} | {git_url}\n", app.web_url));
    // Inside a git repository, `git push crew main` should just work.
    if inside_repo() {
        add_remote("crew", &url, key.as_deref(), &app.name)?;
    }
    Ok(0)
}

fn inside_repo() -> bool {
    std::process::Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Points the git remote `remote` at `app` on the server at `url`, replacing
/// one of that name, and keeps the token for git in this repository.
fn add_remote(remote: &str, url: &str, key: Option<&str>, app: &str) -> Result<()> {
    let git_url = format!("{url}/{app}.git");
    let _ = std::process::Command::new("git")
        .args(["remote", "remove", remote])
        .stderr(std::process::Stdio::null())
        .status();
    let status = std::process::Command::new("git")
        .args(["remote", "add", remote, &git_url])
        .status()
        .with_context(|| format!("adding the `{remote}` git remote"))?;
    if !status.success() {
        bail!("git could not add the `{remote}` remote ({status})");
    }
    crate::say(&format!("Git remote {remote} added: {git_url}\n"));
    // git authenticates with the API token too; this repository keeps it in
    // its own config so that `git push crew main` needs nothing else.
    if let Some(key) = key {
        let _ = std::process::Command::new("git")
            .args([
                "config",
                &format!("http.{url}/.extraHeader"),
                &format!("Authorization: Bearer {key}"),
            ])
            .status();
    }
    // The same server over TLS (the remote `heroku create` adds) is signed
    // by crew's own CA: this repository trusts it for that URL alone.
    if let (Some(ca), Some(rest)) = (crate::client::server_ca(), url.strip_prefix("http://")) {
        let https = format!("https://{rest}");
        let _ = std::process::Command::new("git")
            .args([
                "config",
                &format!("http.{https}/.sslCAInfo"),
                &ca.to_string_lossy(),
            ])
            .status();
        crate::say(&format!(
            "This repository trusts crew's CA ({}) for {https}\n",
            ca.display()
        ));
    }
    Ok(())
}

/// `crew git:remote -a APP`: the remote (and token) `apps:create` would have
/// added, for an app that exists already: Heroku's `git:remote`.
pub fn git_remote(args: &GitRemoteArgs) -> Result<u8> {
    if !inside_repo() {
        bail!("not inside a git repository: run `git init` (or cd into the app's clone) first");
    }
    let client = server_client()?;
    let (url, key) = server_credentials()?;
    let app: AppInfo = block_on(async {
        client
            .get(&format!("/apps/{}", args.app))
            .await
            .with_context(|| format!("looking up the app `{}`", args.app))
    })?;
    add_remote(&args.remote, &url, key.as_deref(), &app.name)?;
    Ok(0)
}

/// The app `target` names, as the API shows it.
fn read_app(target: &Target) -> Result<AppInfo> {
    block_on(async {
        target
            .client
            .get(&format!("/apps/{}", target.app))
            .await
            .context("reading the app")
    })
}

pub fn info(args: &AppFlag) -> Result<u8> {
    let target = target(args)?;
    let app = read_app(&target)?;
    let mut text = format!(
        "=== {}\nCreated:   {}\nGit URL:   {}\nWeb URL:   {}\nStack:     {}\n",
        app.name, app.created_at, app.git_url, app.web_url, app.stack.name
    );
    if let Some(isolation) = &app.isolation {
        text.push_str(&format!("Isolation: {isolation}\n"));
    }
    if app.maintenance {
        text.push_str("Maintenance: on (the router answers every request with a 503 page)\n");
    }
    // The codes are Heroku's (`crew logs --source router` has the lines, the
    // latest 1,000 failed ones even after the log has let them go); counted
    // since the server started.
    let errors: Vec<String> = app
        .router_errors
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    if !errors.is_empty() {
        text.push_str(&format!("Router errors: {}\n", errors.join(", ")));
    }
    crate::say(&text);
    Ok(0)
}

pub fn destroy(args: &AppsDestroyArgs) -> Result<u8> {
    let Some(app) = args.app.clone() else {
        bail!("which app? pass -a APP");
    };
    if args.confirm.as_deref() != Some(app.as_str()) {
        bail!("destroying {app} removes all of its data; confirm with --confirm {app}");
    }
    let target = Target::server(&app)?;
    let _: AppInfo = announce(&format!("Destroying {app} (including all data)"), async {
        target
            .client
            .delete(&format!("/apps/{app}"))
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(0)
}

fn read_config(target: &Target) -> Result<BTreeMap<String, String>> {
    block_on(async {
        target
            .client
            .get(&target.path("/config-vars"))
            .await
            .context("reading config vars")
    })
}

pub fn config(args: &AppFlag) -> Result<u8> {
    let target = target(args)?;
    let config = read_config(&target)?;
    let width = config.keys().map(|k| k.len() + 1).max().unwrap_or(0);
    let mut text = format!("=== {} Config Vars\n", target.app);
    for (key, value) in &config {
        text.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    crate::say(&text);
    Ok(0)
}

pub fn get(args: &ConfigGetArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let config = read_config(&target)?;
    match config.get(&args.key) {
        Some(value) => crate::say(&format!("{value}\n")),
        None => crate::say("\n"),
    }
    Ok(0)
}

fn latest_release(target: &Target) -> Result<u32> {
    let releases: Vec<ReleaseInfo> = block_on(async {
        target
            .client
            .get(&target.path("/releases"))
            .await
            .context("reading releases")
    })?;
    Ok(releases.iter().map(|r| r.version).max().unwrap_or(0))
}

pub fn set(args: &ConfigSetArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
    for pair in &args.pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("`{pair}` is not KEY=VALUE");
        };
        changes.insert(key.to_string(), Some(value.to_string()));
    }
    let keys: Vec<&str> = changes.keys().map(String::as_str).collect();
    crate::say(&format!(
        "Setting {} and restarting {}... ",
        keys.join(", "),
        target.app
    ));
    update(&target, &changes)?;
    let version = latest_release(&target)?;
    crate::say(&format!("done, v{version}\n"));
    let mut text = String::new();
    for (key, value) in &changes {
        text.push_str(&format!("{key}: {}\n", value.as_deref().unwrap_or("")));
    }
    crate::say(&text);
    Ok(0)
}

pub fn unset(args: &ConfigUnsetArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let changes: BTreeMap<String, Option<String>> =
        args.keys.iter().map(|k| (k.clone(), None)).collect();
    crate::say(&format!(
        "Unsetting {} and restarting {}... ",
        args.keys.join(", "),
        target.app
    ));
    update(&target, &changes)?;
    let version = latest_release(&target)?;
    crate::say(&format!("done, v{version}\n"));
    Ok(0)
}

fn update(target: &Target, changes: &BTreeMap<String, Option<String>>) -> Result<()> {
    let _: BTreeMap<String, String> = block_on(async {
        target
            .client
            .call(Method::PATCH, &target.path("/config-vars"), changes)
            .await
            .map_err(anyhow::Error::from)
    })
    .inspect_err(|_| crate::say("failed\n"))?;
    Ok(())
}

pub fn releases(args: &AppFlag) -> Result<u8> {
    let target = target(args)?;
    let releases: Vec<ReleaseInfo> = block_on(async {
        target
            .client
            .get(&target.path("/releases"))
            .await
            .context("reading releases")
    })?;
    let width = releases
        .iter()
        .map(|r| r.description.len())
        .max()
        .unwrap_or(0);
    let mut text = format!("=== {} Releases\n", target.app);
    for r in &releases {
        let mark = match (r.current, r.status.as_str()) {
            (true, _) => " (current)".to_string(),
            (false, "succeeded") => String::new(),
            (false, status) => format!(" ({status})"),
        };
        text.push_str(&format!(
            "v{:<4} {:<width$}  {}{mark}\n",
            r.version, r.description, r.created_at
        ));
    }
    crate::say(&text);
    Ok(0)
}

/// The release `args` names (`vN`), else the latest.
fn named_release(target: &Target, args: &ReleaseArgs) -> Result<ReleaseInfo> {
    let version = match &args.release {
        Some(v) => v.trim_start_matches('v').to_string(),
        None => latest_release(target)?.to_string(),
    };
    block_on(async {
        target
            .client
            .get(&target.path(&format!("/releases/{version}")))
            .await
            .context("reading the release")
    })
}

pub fn release_info(args: &ReleaseArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let r = named_release(&target, args)?;
    crate::say(&format!(
        "=== Release v{}\nBy:      crew\nChange:  {}\nStatus:  {}\nWhen:    {}\nCurrent: {}\n",
        r.version, r.description, r.status, r.created_at, r.current
    ));
    Ok(0)
}

pub fn rollback(args: &ReleaseArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let version = match &args.release {
        Some(v) => v
            .trim_start_matches('v')
            .parse::<u32>()
            .with_context(|| format!("`{v}` is not a release like v3"))?,
        None => latest_release(&target)?.saturating_sub(1),
    };
    if version == 0 {
        bail!("there is no release to roll back to");
    }
    crate::say(&format!("Rolling back {} to v{version}... ", target.app));
    let r: ReleaseInfo = block_on(async {
        target
            .client
            .call(
                Method::POST,
                &target.path("/releases"),
                &ReleaseCreate {
                    release: version.to_string(),
                },
            )
            .await
            .map_err(anyhow::Error::from)
    })
    .inspect_err(|_| crate::say("failed\n"))?;
    crate::say(&format!("done, v{}\n", r.version));
    Ok(0)
}

pub fn run_detached(args: &RunDetachedArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let command = crate::run::server_command(&args.command)?;
    let request = crew_api::types::DynoCreate {
        command: command.clone(),
        attach: Some(false),
        process_type: Some("run".into()),
        env: Some(crate::run::env_map(&args.env_vars)?),
        size: args.size.clone(),
        ..Default::default()
    };
    let dyno: crew_api::types::Dyno = block_on(async {
        target
            .client
            .call(Method::POST, &target.path("/dynos"), &request)
            .await
            .context("starting the one-off dyno")
    })?;
    crate::say(&format!(
        "Running `{command}` on {}... up, {}\nRun `crew logs -a {} --ps {}` to view the output.\n",
        target.app, dyno.name, target.app, dyno.name
    ));
    Ok(0)
}

pub fn domains(args: &AppFlag) -> Result<u8> {
    let target = target(args)?;
    let domains: Vec<crew_api::types::DomainInfo> = block_on(async {
        target
            .client
            .get(&target.path("/domains"))
            .await
            .context("listing domains")
    })?;
    let mut text = format!("=== {} Custom Domains\n", target.app);
    // The app's own hostname (`kind: heroku`) is not a custom one.
    for d in domains.iter().filter(|d| d.kind == "custom") {
        text.push_str(&d.hostname);
        text.push('\n');
    }
    crate::say(&text);
    Ok(0)
}

pub fn add_domain(args: &DomainArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let what = format!("Adding {} to {}", args.hostname, target.app);
    let _: crew_api::types::DomainInfo = announce(&what, async {
        target
            .client
            .call(
                Method::POST,
                &target.path("/domains"),
                &crew_api::types::DomainCreate {
                    hostname: args.hostname.clone(),
                },
            )
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(0)
}

pub fn remove_domain(args: &DomainArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let what = format!("Removing {} from {}", args.hostname, target.app);
    let _: serde_json::Value = announce(&what, async {
        target
            .client
            .delete(&target.path(&format!("/domains/{}", args.hostname)))
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(0)
}

/// `crew apps:rename NEW`: the server moves everything; here the `crew`
/// remote follows, when it named the old app.
pub fn rename(args: &crate::cli::AppsRenameArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let (url, _) = server_credentials()?;
    let what = format!("Renaming {} to {}", target.app, args.new_name);
    let app: AppInfo = announce(&what, async {
        target
            .client
            .call(
                Method::PATCH,
                &format!("/apps/{}", target.app),
                &crew_api::types::AppUpdate {
                    name: Some(args.new_name.clone()),
                    ..Default::default()
                },
            )
            .await
            .map_err(anyhow::Error::from)
    })?;
    let git_url = format!("{url}/{}.git", app.name);
    crate::say(&format!("{} | {git_url}\n", app.web_url));
    if inside_repo() {
        let old_url = format!("{url}/{}.git", target.app);
        let remote_url = std::process::Command::new("git")
            .args(["remote", "get-url", "crew"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if remote_url.as_deref() == Some(old_url.as_str()) {
            let status = std::process::Command::new("git")
                .args(["remote", "set-url", "crew", &git_url])
                .status()
                .context("updating the `crew` git remote")?;
            if status.success() {
                crate::say("Git remote crew updated\n");
            }
        }
    }
    Ok(0)
}

pub fn maintenance(args: &AppFlag) -> Result<u8> {
    let target = target(args)?;
    let app = read_app(&target)?;
    crate::say(if app.maintenance { "on\n" } else { "off\n" });
    Ok(0)
}

pub fn set_maintenance(args: &AppFlag, on: bool) -> Result<u8> {
    let target = target(args)?;
    let what = format!(
        "{} maintenance mode for {}",
        if on { "Enabling" } else { "Disabling" },
        target.app
    );
    let _: AppInfo = announce(&what, async {
        target
            .client
            .call(
                Method::PATCH,
                &format!("/apps/{}", target.app),
                &crew_api::types::AppUpdate {
                    maintenance: Some(on),
                    ..Default::default()
                },
            )
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(0)
}

/// `crew releases:output [vN]`: what the release command printed, kept with
/// the release.
pub fn release_output(args: &ReleaseArgs) -> Result<u8> {
    use http_body_util::BodyExt;
    let target = target(&args.app)?;
    let release = named_release(&target, args)?;
    let Some(url) = release.output_stream_url else {
        crate::say(&format!(
            "Release v{} has no release command output.\n",
            release.version
        ));
        return Ok(0);
    };
    // The URL is the server's own: its path on the connection the client has.
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| rest[at..].to_string()))
        .with_context(|| format!("the server answered a malformed output URL: {url}"))?;
    let output = block_on(async {
        let body = target
            .client
            .stream(&path)
            .await
            .context("reading the release output")?;
        let bytes = body
            .collect()
            .await
            .context("reading the release output")?
            .to_bytes();
        anyhow::Ok(bytes)
    })?;
    crate::say(&String::from_utf8_lossy(&output));
    Ok(0)
}

fn show_buildpacks(app: &str, list: &[crew_api::types::BuildpackInstallation]) {
    if list.is_empty() {
        crate::say(&format!(
            "{app} has no buildpacks set: the next build detects them.\n"
        ));
        return;
    }
    let mut text = format!("=== {app} Buildpacks\n");
    for b in list {
        text.push_str(&format!("{}. {}\n", b.ordinal + 1, b.buildpack.name));
    }
    crate::say(&text);
}

pub fn buildpacks(args: &AppFlag) -> Result<u8> {
    let target = target(args)?;
    let list: Vec<crew_api::types::BuildpackInstallation> = block_on(async {
        target
            .client
            .get(&target.path("/buildpack-installations"))
            .await
            .context("reading the buildpacks")
    })?;
    show_buildpacks(&target.app, &list);
    Ok(0)
}

fn put_buildpacks(target: &crate::client::Target, list: &[String]) -> Result<()> {
    let updates = crew_api::types::BuildpackUpdates {
        updates: list
            .iter()
            .map(|b| crew_api::types::BuildpackUpdate {
                buildpack: b.clone(),
            })
            .collect(),
    };
    let set: Vec<crew_api::types::BuildpackInstallation> = block_on(async {
        target
            .client
            .call(
                Method::PUT,
                &target.path("/buildpack-installations"),
                &updates,
            )
            .await
            .map_err(anyhow::Error::from)
    })?;
    show_buildpacks(&target.app, &set);
    Ok(())
}

pub fn set_buildpacks(args: &crate::cli::BuildpacksSetArgs) -> Result<u8> {
    let target = target(&args.app)?;
    put_buildpacks(&target, &args.buildpacks)?;
    Ok(0)
}

pub fn clear_buildpacks(args: &AppFlag) -> Result<u8> {
    let target = target(args)?;
    put_buildpacks(&target, &[])?;
    Ok(0)
}
