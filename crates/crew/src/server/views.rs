//! Platform values as Heroku's JSON: apps, releases, dynos, domains, the
//! formation, builds and the one account.
//!
//! Separate from `api` so that the adapter reads as the calls it makes; these
//! only shape what the calls return. A view may look up what its value
//! refers to (an app's current release), but a failed lookup leaves a field
//! empty: the errors a route answers with are `api`'s.

use std::collections::BTreeMap;
use std::path::Path;

use crew_api::types::{
    Account, AppInfo, AppRef, BuildInfo, DomainInfo, Dyno, FormationEntry, IdRef, NameRef,
    NamedRef, ReleaseInfo, ReleaseRef, SourceBlob, UserRef,
};
use crew_engine::DynoInfo;
use crew_platform::Platform;

use crate::api_view::{api_dyno, timestamp};

/// The one account of a crew server: whoever holds the token. Heroku's CLI
/// shows its email as the owner of every app and the author of every release.
const ACCOUNT_ID: &str = "00000000-0000-4000-8000-000000000001";
const ACCOUNT_EMAIL: &str = "crew@localhost";

fn account_ref() -> UserRef {
    UserRef {
        id: ACCOUNT_ID.into(),
        email: ACCOUNT_EMAIL.into(),
    }
}

/// The account, made when the token was: the token file's time.
pub fn account(data: &Path) -> Account {
    let made = std::fs::metadata(crate::paths::token_file(data))
        .and_then(|m| m.modified())
        .map(timestamp)
        .unwrap_or_default();
    Account {
        id: ACCOUNT_ID.into(),
        email: ACCOUNT_EMAIL.into(),
        name: "crew".into(),
        created_at: made.clone(),
        updated_at: made,
        verified: true,
        two_factor_authentication: false,
        beta: false,
        allow_tracking: false,
        federated: false,
        suspended_at: None,
        delinquent_at: None,
        default_organization: None,
        default_team: None,
    }
}

/// Bytes of the files under `dir`, for an app's `repo_size`.
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => tree_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// An app, with the URLs of the server at `url` whose router listens on
/// `router_port`.
pub fn app_info(platform: &Platform, url: &str, router_port: u16, app: crew_store::App) -> AppInfo {
    let store = platform.store();
    let current = store.current_release(&app.name).ok();
    let slug = current
        .as_ref()
        .and_then(|r| r.slug_id.as_ref())
        .and_then(|id| store.slug(id).ok());
    let repo = platform.repos().join(format!("{}.git", app.name));
    let router_errors = platform.router_errors(&app.name);
    let maintenance = store.app_settings(&app.name).is_ok_and(|s| s.maintenance);
    AppInfo {
        git_url: format!("{url}/{}.git", app.name),
        web_url: format!("http://{}.localhost:{router_port}/", app.name),
        id: app.id,
        name: app.name,
        created_at: app.created_at,
        updated_at: app.updated_at,
        generation: NameRef {
            name: "cedar".into(),
        },
        stack: NameRef {
            name: "crew".into(),
        },
        build_stack: NameRef {
            name: "crew".into(),
        },
        owner: account_ref(),
        region: NamedRef {
            id: "local".into(),
            name: "local".into(),
        },
        space: None,
        process_tier: "production".into(),
        maintenance,
        acm: false,
        create_status: "complete".into(),
        released_at: current.as_ref().map(|r| r.created_at.clone()),
        slug_size: slug.as_ref().map(|s| s.size),
        repo_size: Some(tree_size(&repo)),
        buildpack_provided_description: slug.and_then(|s| s.buildpack),
        internal_routing: None,
        archived_at: None,
        isolation: Some(platform.isolation().to_string()),
        router_errors,
    }
}

/// One of `app`'s releases; its output stream is served under `url`.
pub fn release_info(
    platform: &Platform,
    url: &str,
    app: &str,
    release: crew_store::Release,
) -> ReleaseInfo {
    let store = platform.store();
    let current = store
        .current_release(app)
        .map(|r| r.version == release.version)
        .unwrap_or(false);
    let app_ref = store.app(app).ok().map(|a| AppRef {
        id: a.id,
        name: a.name,
    });
    let succeeded = release.status.as_str() == "succeeded";
    let output_stream_url = store
        .release_output(&release.id)
        .ok()
        .flatten()
        .map(|o| format!("{url}/release-outputs/{}/{}", o.release_id, o.secret));
    ReleaseInfo {
        eligible_for_rollback: succeeded && release.slug_id.is_some(),
        id: release.id,
        version: release.version,
        description: release.description,
        status: release.status.as_str().to_string(),
        current,
        created_at: release.created_at,
        updated_at: release.updated_at,
        slug: release.slug_id.map(|id| IdRef { id }),
        app: app_ref,
        user: account_ref(),
        addon_plan_names: Vec::new(),
        output_stream_url,
    }
}

/// Dynos as the API shows them, each with the release it started on
/// (`heroku ps:wait` waits for them all to be on the current one). A
/// placement that does not say names the current release.
pub fn dynos_of(platform: &Platform, app: &crew_store::App, infos: Vec<DynoInfo>) -> Vec<Dyno> {
    let store = platform.store();
    let as_ref = |r: crew_store::Release| ReleaseRef {
        id: r.id,
        version: r.version,
    };
    let current = store.current_release(&app.name).ok();
    let release_of = |info: &DynoInfo| match (info.release, &current) {
        (Some(version), Some(c)) if version != c.version => {
            store.release(&app.name, version).ok().map(as_ref)
        }
        _ => current.clone().map(as_ref),
    };
    let app_ref = AppRef {
        id: app.id.clone(),
        name: app.name.clone(),
    };
    infos
        .into_iter()
        .map(|info| {
            let size = info
                .size
                .clone()
                .unwrap_or_else(|| crew_store::DEFAULT_SIZE.to_string());
            let release = release_of(&info);
            api_dyno(info, app_ref.clone(), &size, release)
        })
        .collect()
}

/// The formation's rows, each with its command from `commands` (the current
/// slug's process types).
pub fn formation(
    info: &crew_store::App,
    rows: Vec<crew_store::FormationRow>,
    commands: &BTreeMap<String, String>,
) -> Vec<FormationEntry> {
    rows.into_iter()
        .map(|r| FormationEntry {
            command: commands.get(&r.process_type).cloned().unwrap_or_default(),
            id: format!("{}:{}", info.id, r.process_type),
            process_type: r.process_type,
            quantity: r.quantity,
            size: r.size,
            app: Some(AppRef {
                id: info.id.clone(),
                name: info.name.clone(),
            }),
            created_at: info.created_at.clone(),
            updated_at: info.updated_at.clone(),
        })
        .collect()
}

/// The app's own hostname under `crew_platform::LOCAL_SUFFIX` (`kind: heroku`).
pub fn own_domain(info: crew_store::App) -> DomainInfo {
    DomainInfo {
        id: info.id.clone(),
        hostname: format!("{}{}", info.name, crew_platform::LOCAL_SUFFIX),
        kind: "heroku".into(),
        created_at: info.created_at.clone(),
        cname: None,
        status: "none".into(),
        app: Some(AppRef {
            id: info.id,
            name: info.name,
        }),
        acm_status: None,
        sni_endpoint: None,
        updated_at: info.created_at,
    }
}

/// A custom domain, without its app and `cname`, which the caller knows.
pub fn domain_info(d: crew_store::Domain) -> DomainInfo {
    DomainInfo {
        id: d.id,
        hostname: d.hostname,
        kind: "custom".into(),
        updated_at: d.created_at.clone(),
        created_at: d.created_at,
        cname: None,
        // Routed as soon as it is added: nothing to wait for.
        status: "none".into(),
        app: None,
        acm_status: None,
        sni_endpoint: None,
    }
}

pub fn build_info(b: crew_store::Build) -> BuildInfo {
    BuildInfo {
        id: b.id,
        status: b.status.as_str().to_string(),
        source_blob: SourceBlob {
            url: String::new(),
            version: Some(b.source),
        },
        slug: b.slug_id.map(|id| IdRef { id }),
        created_at: b.created_at,
        updated_at: b.updated_at,
    }
}
