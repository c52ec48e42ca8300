//! `crew export kubernetes|swarm|image`: an app as a cluster of many machines
//! takes it, written without touching any cluster.
//!
//! The release comes from one of two places. With `-a APP` (or a `crew` git
//! remote) it is the server's current release: its version, its config vars
//! and the formation, read through the same API every other command uses. With
//! `--procfile` it is made up from local files, so that no server is needed:
//! the Procfile's types, config vars from the env files (never the shell's
//! environment, which is this machine's and not the app's), and the formation
//! a first deploy gets (web=1, others 0) unless `-m` says otherwise. An image
//! is always made from a local slug, since the API does not hand slugs out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use crew_api::types::{FormationEntry, ReleaseInfo};
use crew_cluster::{Process, Release, image, kubernetes, render, swarm};
use crew_procfile::{Formation, dotenv, parse_changes};

use crate::cli::{ExportArgs, ExportKind, TextFormat};
use crate::client::{Target, block_on};

pub fn export(args: &ExportArgs) -> Result<u8> {
    if args.kind.is_init() {
        return crate::init_export::export(args);
    }
    let init_only = args.root.is_some()
        || args.port.is_some()
        || args.user.is_some()
        || args.log.is_some()
        || args.run_dir.is_some()
        || args.template.is_some()
        || args.timeout.is_some();
    if init_only {
        bail!(
            "-d, -p, -u, -l, -r, -t and --timeout are for the init formats (systemd, supervisord, …)"
        );
    }
    // LOCATION is -o's other spelling here.
    let located;
    let args = if args.output.is_none() && args.location.is_some() {
        located = ExportArgs {
            output: args.location.clone(),
            ..args.clone()
        };
        &located
    } else {
        args
    };
    if args.location.is_some() && args.location != args.output {
        bail!("give the directory once: as LOCATION or as -o");
    }
    if args.run.is_some() && args.kind != ExportKind::Kubernetes {
        bail!("--run makes a Kubernetes Job; it has no meaning for `crew export swarm` or `image`");
    }
    if args.kind != ExportKind::Image && (args.slug.is_some() || args.base.is_some()) {
        bail!("--slug and --base are for `crew export image`");
    }
    if args.kind == ExportKind::Image {
        return export_image(args);
    }
    let release = match &args.procfile {
        Some(procfile) => local_release(args, procfile)?,
        None => server_release(args)?,
    };
    match args.kind {
        ExportKind::Kubernetes => export_kubernetes(args, &release),
        ExportKind::Swarm => export_swarm(args, &release),
        _ => Ok(0),
    }
}

/// `v3` or `3` as 3.
fn parse_version(text: &str) -> Result<u32> {
    text.strip_prefix('v')
        .unwrap_or(text)
        .parse::<u32>()
        .ok()
        .filter(|v| *v > 0)
        .with_context(|| format!("`{text}` is not a release like v3"))
}

/// The app's name: `--app`, else the Procfile's directory's name when that is a
/// valid app name.
fn local_app_name(args: &ExportArgs, dir: &Path) -> Result<String> {
    let name = match &args.app {
        Some(app) => app.clone(),
        None => {
            let guess = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if crew_cluster::validate_app_name(&guess).is_err() {
                bail!(
                    "which app? the directory name `{guess}` is not a valid app name; pass --app NAME"
                );
            }
            guess
        }
    };
    crew_cluster::validate_app_name(&name)?;
    Ok(name)
}

/// A release made up from a Procfile and env files.
fn local_release(args: &ExportArgs, procfile_arg: &Path) -> Result<Release> {
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let path = cwd.join(procfile_arg);
    let root = path.parent().map_or_else(|| cwd.clone(), Path::to_path_buf);
    let app = local_app_name(args, &root)?;
    let procfile = crate::app::read_procfile(&path)?;
    let mut formation = Formation::from_procfile(&procfile, 0);
    if procfile.get("web").is_some() {
        formation.apply(&parse_changes(["web=1"])?)?;
    }
    if !args.formation.is_empty() {
        let changes =
            parse_changes(args.formation.iter().map(String::as_str)).context("reading -m")?;
        formation.apply(&changes).context("reading -m")?;
    }
    let env_files: Vec<PathBuf> = if args.env.is_empty() {
        Some(root.join(".env"))
            .filter(|p| p.is_file())
            .into_iter()
            .collect()
    } else {
        args.env.iter().map(|f| cwd.join(f)).collect()
    };
    let mut config = BTreeMap::new();
    for file in &env_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading env file {}", file.display()))?;
        let entries =
            dotenv::parse(&text).with_context(|| format!("env file {}", file.display()))?;
        config.extend(entries);
    }
    let version = match &args.release {
        Some(text) => parse_version(text)?,
        None => 1,
    };
    let processes = procfile
        .types()
        .iter()
        .map(|t| Process {
            name: t.name.clone(),
            command: t.command.clone(),
            quantity: formation.get(&t.name).unwrap_or(0),
            memory_bytes: None,
        })
        .collect();
    Ok(Release {
        image: args
            .image
            .clone()
            .unwrap_or_else(|| image::default_tag(&app, version)),
        description: format!("Export of {}", procfile_arg.display()),
        app,
        version,
        config,
        processes,
    })
}

/// The server's current release of the app, with its config and formation.
fn server_release(args: &ExportArgs) -> Result<Release> {
    if args.release.is_some() || !args.formation.is_empty() || !args.env.is_empty() {
        bail!(
            "--release, -m and -e describe a local app; with a server the current release and formation are used"
        );
    }
    let target = match &args.app {
        Some(app) => {
            crew_cluster::validate_app_name(app)?;
            Target::server(app)?
        }
        None => match Target::resolve(None) {
            Ok(t) if matches!(t.client.endpoint(), crew_api::client::Endpoint::Tcp(_)) => t,
            _ => bail!(
                "which app? pass -a APP for a server's app, or --procfile FILE --app NAME for a local one"
            ),
        },
    };
    let app = target.app.clone();
    let (release, config, formation) = block_on(async {
        let releases: Vec<ReleaseInfo> = target
            .client
            .get(&target.path("/releases"))
            .await
            .with_context(|| format!("reading {app}'s releases"))?;
        let Some(current) = releases
            .into_iter()
            .filter(|r| r.current && r.slug.is_some())
            .max_by_key(|r| r.version)
        else {
            bail!("{app} has no deployed release yet: push to it first (`git push crew main`)");
        };
        let config: BTreeMap<String, String> = target
            .client
            .get(&target.path(&format!("/releases/{}/config-vars", current.version)))
            .await
            .with_context(|| format!("reading the config vars of {app} v{}", current.version))?;
        let formation: Vec<FormationEntry> = target
            .client
            .get(&target.path("/formation"))
            .await
            .with_context(|| format!("reading {app}'s formation"))?;
        Ok((current, config, formation))
    })?;
    if formation.is_empty() {
        bail!("{app} v{} declares no process types", release.version);
    }
    Ok(Release {
        image: args
            .image
            .clone()
            .unwrap_or_else(|| image::default_tag(&app, release.version)),
        description: release.description,
        version: release.version,
        app,
        config,
        processes: formation
            .into_iter()
            .map(|entry| Process {
                name: entry.process_type,
                command: entry.command,
                quantity: entry.quantity,
                memory_bytes: crew_runtime::DynoSize::parse(&entry.size)
                    .ok()
                    .map(|s| s.memory_bytes),
            })
            .collect(),
    })
}

fn extension(format: TextFormat) -> &'static str {
    match format {
        TextFormat::Yaml => "yaml",
        TextFormat::Json => "json",
    }
}

fn export_kubernetes(args: &ExportArgs, release: &Release) -> Result<u8> {
    if let Some(command) = &args.run {
        let job = kubernetes::run_job(release, command, &kubernetes::RunOptions::default())?;
        let object = kubernetes::job_object(&job)?;
        crate::say(&match args.format {
            TextFormat::Yaml => render::yaml_documents(&[object.value]),
            TextFormat::Json => render::json(&object.value),
        });
        return Ok(0);
    }
    let objects = kubernetes::manifests(release)?.objects()?;
    let Some(dir) = &args.output else {
        crate::say(&match args.format {
            TextFormat::Yaml => kubernetes::yaml(&objects),
            TextFormat::Json => kubernetes::list(&objects),
        });
        return Ok(0);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Numbered in apply order: `kubectl apply -f DIR` reads files sorted by
    // name, and the namespace must come first.
    let mut written = String::new();
    for (i, object) in objects.iter().enumerate() {
        let path = dir.join(format!(
            "{i:02}-{}-{}.{}",
            object.kind.to_ascii_lowercase(),
            object.name,
            extension(args.format)
        ));
        let text = match args.format {
            TextFormat::Yaml => render::yaml(&object.value),
            TextFormat::Json => render::json(&object.value),
        };
        write(&path, text.as_bytes())?;
        written.push_str(&format!("{}\n", path.display()));
    }
    crate::say(&written);
    Ok(0)
}

fn export_swarm(args: &ExportArgs, release: &Release) -> Result<u8> {
    let stack = swarm::stack(release)?;
    let text = match args.format {
        TextFormat::Yaml => render::yaml(&stack),
        TextFormat::Json => render::json(&stack),
    };
    let Some(dir) = &args.output else {
        crate::say(&text);
        return Ok(0);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(
        "stack.{}",
        match args.format {
            TextFormat::Yaml => "yml",
            TextFormat::Json => "json",
        }
    ));
    write(&path, text.as_bytes())?;
    crate::say(&format!("{}\n", path.display()));
    Ok(0)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// `crew export image --slug FILE -a APP -o FILE`.
fn export_image(args: &ExportArgs) -> Result<u8> {
    let Some(slug) = &args.slug else {
        bail!(
            "`crew export image` needs --slug FILE: a slug from a server's data directory (apps/APP/slugs/) or from Heroku"
        );
    };
    let Some(app) = &args.app else {
        bail!("which app? pass -a APP");
    };
    let Some(output) = &args.output else {
        bail!("where to? pass -o FILE for the image archive");
    };
    if args.procfile.is_some() || args.run.is_some() || !args.formation.is_empty() {
        bail!("an image holds the slug only; --procfile, -m and --run are for manifests");
    }
    let version = match &args.release {
        Some(text) => parse_version(text)?,
        None => 1,
    };
    let mut spec = image::ImageSpec::new(app, version);
    if let Some(tag) = &args.image {
        spec.tag = Some(tag.clone());
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Written beside the target and renamed, so a failure leaves no half image.
    let temp = tempfile::Builder::new()
        .prefix(".crew-image-")
        .tempfile_in(&parent)
        .with_context(|| format!("creating a file in {}", parent.display()))?;
    let info = image::write_docker_archive(
        slug,
        args.base.as_deref(),
        &spec,
        std::io::BufWriter::new(temp.as_file()),
    )?;
    temp.persist(output)
        .with_context(|| format!("writing {}", output.display()))?;
    crate::say(&format!(
        "Wrote {} ({}, {} layer{}) to {}; load it with `docker load -i {}`\n",
        info.tag.as_deref().unwrap_or("an untagged image"),
        info.id,
        info.layers.len(),
        if info.layers.len() == 1 { "" } else { "s" },
        output.display(),
        output.display(),
    ));
    Ok(0)
}
