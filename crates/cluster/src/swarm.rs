//! A release as a Docker Swarm stack file (compose format 3.8), after research
//! §4.3, for `docker stack deploy -c stack.yml crew`.
//!
//! Each process type is a replicated service `APP-TYPE` (Swarm prefixes the
//! stack's name: `crew_shop-web`). A task's slot is a stable number that a
//! replacement task inherits, so it gives Heroku's dyno names for free:
//! `DYNO=web.{{.Task.Slot}}` is expanded by Swarm for each task. Services
//! restart on any exit, stop with 30 s of grace, and web services update
//! start-first: a new task runs before an old one stops. Every app has its own
//! attachable overlay network, `crew-APP`, which crew's router joins to reach
//! the web tasks; nothing is published on the nodes.
//!
//! Two kinds of text in the file are read by something other than the app, so
//! values are escaped for both: `docker stack deploy` substitutes `$VAR` from
//! the deploying shell (`$` is written `$$`), and Swarm expands Go templates in
//! environment values (`{{` in a config var is written as a template that
//! prints `{{`).
//!
//! The config vars are in the file in clear, as a service's environment is in
//! Swarm's own state: keep the file as private as the config.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::names::{object_name, type_label};
use crate::render::to_value;
use crate::{ClusterError, DYNO_UID, PORT, Release, STOP_GRACE_SECONDS, dyno_command};

/// The compose format version: the newest that Debian's docker 20.10 reads.
const VERSION: &str = "3.8";

/// The whole file.
#[derive(Debug, Serialize)]
struct Stack {
    version: &'static str,
    services: BTreeMap<String, ServiceDef>,
    networks: BTreeMap<String, NetworkDef>,
}

/// One process type.
#[derive(Debug, Serialize)]
struct ServiceDef {
    image: String,
    /// The whole command line: an entrypoint replaces the image's and clears
    /// its `CMD`, so nothing from a base image slips in front of the dyno.
    entrypoint: Vec<String>,
    working_dir: &'static str,
    user: String,
    hostname: String,
    environment: BTreeMap<String, String>,
    /// On the containers, for `docker ps --filter label=heroku.app=shop`.
    labels: BTreeMap<String, String>,
    stop_grace_period: String,
    networks: Vec<String>,
    deploy: Deploy,
}

#[derive(Debug, Serialize)]
struct Deploy {
    mode: &'static str,
    replicas: u32,
    /// On the service.
    labels: BTreeMap<String, String>,
    restart_policy: RestartPolicy,
    update_config: UpdateConfig,
}

#[derive(Debug, Serialize)]
struct RestartPolicy {
    /// `any`: a dyno that exits, even with 0, is restarted, as on Heroku.
    condition: &'static str,
}

#[derive(Debug, Serialize)]
struct UpdateConfig {
    /// How many tasks change at once; 0 is all of them.
    parallelism: u32,
    /// `start-first` or `stop-first`.
    order: &'static str,
}

#[derive(Debug, Serialize)]
struct NetworkDef {
    /// Fixed rather than prefixed with the stack's name, so that the router
    /// can find it.
    name: String,
    driver: &'static str,
    attachable: bool,
    labels: BTreeMap<String, String>,
}

/// The stack file's content for `release`, as a canonical value; render it
/// with [`crate::render::yaml`] or [`crate::render::json`].
pub fn stack(release: &Release) -> Result<Value, ClusterError> {
    release.validate()?;
    let network = format!("crew-{}", release.app);
    let mut services = BTreeMap::new();
    for process in &release.processes {
        let web = process.name == "web";
        let labels = BTreeMap::from([
            ("heroku.app".to_string(), release.app.clone()),
            ("heroku.type".to_string(), process.name.clone()),
            ("heroku.release".to_string(), release.tag()),
        ]);
        let dyno = format!("{}.{{{{.Task.Slot}}}}", process.name);
        let mut environment: BTreeMap<String, String> = release
            .config
            .iter()
            .map(|(k, v)| (k.clone(), go_template_literal(v)))
            .collect();
        // The platform's variables win over config vars, as on crew's server.
        environment.insert("DYNO".to_string(), dyno.clone());
        environment.insert("PS".to_string(), dyno.clone());
        environment.insert("HOME".to_string(), "/app".to_string());
        environment.insert("PORT".to_string(), PORT.to_string());
        let service = ServiceDef {
            image: release.image.clone(),
            entrypoint: dyno_command(&process.command),
            working_dir: "/app",
            user: format!("{DYNO_UID}:{DYNO_UID}"),
            // The dyno's name, as crew's own isolated dynos have it, in
            // hostname characters.
            hostname: format!("{}.{{{{.Task.Slot}}}}", type_label(&process.name)?),
            environment,
            labels: labels.clone(),
            stop_grace_period: format!("{STOP_GRACE_SECONDS}s"),
            networks: vec![network.clone()],
            deploy: Deploy {
                mode: "replicated",
                replicas: process.quantity,
                labels,
                restart_policy: RestartPolicy { condition: "any" },
                update_config: if web {
                    UpdateConfig {
                        parallelism: 1,
                        order: "start-first",
                    }
                } else {
                    // Like Kubernetes' Recreate: one release's workers at a time.
                    UpdateConfig {
                        parallelism: 0,
                        order: "stop-first",
                    }
                },
            },
        };
        services.insert(object_name(&release.app, &process.name)?, service);
    }
    let stack = Stack {
        version: VERSION,
        services,
        networks: BTreeMap::from([(
            network.clone(),
            NetworkDef {
                name: network,
                driver: "overlay",
                attachable: true,
                labels: BTreeMap::from([("heroku.app".to_string(), release.app.clone())]),
            },
        )]),
    };
    Ok(escape_dollars(to_value(&stack, "the stack file")?))
}

/// `{{` as a Go template action that prints `{{`, so that Swarm's expansion of
/// environment values leaves a config var as it was. Public for the Engine
/// API client (`crew-swarm`), whose service specs Swarm templates the same way.
pub fn go_template_literal(value: &str) -> String {
    value.replace("{{", "{{\"{{\"}}")
}

/// Every `$` in every string as `$$`, which compose's interpolation turns back
/// into `$`: `$PORT` in a command is for the dyno's shell, not the deployer's.
fn escape_dollars(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace('$', "$$")),
        Value::Array(items) => Value::Array(items.into_iter().map(escape_dollars).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, escape_dollars(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_braces_and_dollars_survive() {
        assert_eq!(go_template_literal("a{{b}}"), "a{{\"{{\"}}b}}");
        assert_eq!(
            escape_dollars(serde_json::json!({"k": ["$PORT", "x$$y"]})),
            serde_json::json!({"k": ["$$PORT", "x$$$$y"]})
        );
    }
}
