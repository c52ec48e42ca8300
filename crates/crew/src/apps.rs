//! The server's app commands: apps, config vars and releases.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use crew_api::client::Method;
use crew_api::types::{AppCreate, AppInfo, ReleaseCreate, ReleaseInfo};

use crate::cli::{
    AppOnly, AppsCreateArgs, AppsDestroyArgs, ConfigGetArgs, ConfigSetArgs, ConfigUnsetArgs,
    DomainArgs, GitRemoteArgs, ReleaseArgs, RunDetachedArgs,
};
use crate::client::{Target, announce, block_on, server_credentials};

/// A client for server-wide routes (`/apps`), which name no app.
fn server_client() -> Result<crew_api::client::Client> {
    let (url, key) = server_credentials()?;
    Ok(crew_api::client::Client::new(
        crew_api::client::Endpoint::Tcp(crate::client::host_of(&url)),
        key,
    ))
}

/// `-a APP`, else the app of the `crew` git remote.
fn target(args: &AppOnly) -> Result<Target> {
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

pub fn info(args: &AppOnly) -> Result<u8> {
    let target = target(args)?;
    let app: AppInfo = block_on(async {
        target
            .client
            .get(&format!("/apps/{}", target.app))
            .await
            .context("reading the app")
    })?;
    let mut text = format!(
        "=== {}\nCreated:   {}\nGit URL:   {}\nWeb URL:   {}\nStack:     {}\n",
        app.name, app.created_at, app.git_url, app.web_url, app.stack.name
    );
    if let Some(isolation) = &app.isolation {
        text.push_str(&format!("Isolation: {isolation}\n"));
    }
    // The codes are Heroku's (`crew logs --source router` has the lines while
    // the ring keeps them); counted since the server started.
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

pub fn config(args: &AppOnly) -> Result<u8> {
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

pub fn releases(args: &AppOnly) -> Result<u8> {
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

pub fn release_info(args: &ReleaseArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let version = match &args.release {
        Some(v) => v.trim_start_matches('v').to_string(),
        None => latest_release(&target)?.to_string(),
    };
    let r: ReleaseInfo = block_on(async {
        target
            .client
            .get(&target.path(&format!("/releases/{version}")))
            .await
            .context("reading the release")
    })?;
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

pub fn env_map(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("`{pair}` is not KEY=VALUE"),
        })
        .collect()
}

pub fn run_detached(args: &RunDetachedArgs) -> Result<u8> {
    let target = target(&args.app)?;
    let command = crate::run::server_command(&args.command)?;
    let request = crew_api::types::DynoCreate {
        command: command.clone(),
        attach: Some(false),
        process_type: Some("run".into()),
        env: Some(env_map(&args.env_vars)?),
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

pub fn domains(args: &AppOnly) -> Result<u8> {
    let target = target(args)?;
    let domains: Vec<crew_api::types::DomainInfo> = block_on(async {
        target
            .client
            .get(&target.path("/domains"))
            .await
            .context("listing domains")
    })?;
    let mut text = format!("=== {} Custom Domains\n", target.app);
    for d in domains {
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
