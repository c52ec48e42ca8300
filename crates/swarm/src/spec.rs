//! A release as Engine API objects: a service per process type, a
//! replicated job per detached one-off, and a plain container per attached
//! one-off. Pure data; [`crate::SwarmPlacement`] sends them.
//!
//! The mapping is research §4.3's, the same as `crew export swarm`'s stack
//! file (crew-cluster), in the Engine API's own shape rather than compose's:
//! names, the dyno's command line and the escaping of Swarm's templates come
//! from crew-cluster, so both agree on what a dyno is.

use std::collections::BTreeMap;
use std::time::Duration;

use crew_cluster::swarm::go_template_literal;
use crew_cluster::{DYNO_UID, PORT, dyno_command, object_name, type_label};
use crew_engine::ReleaseSpec;
use serde_json::{Value, json};

use crate::SwarmError;

/// Labels crew puts on everything it makes, and finds things by.
pub const LABEL_APP: &str = "heroku.app";
pub const LABEL_TYPE: &str = "heroku.type";
pub const LABEL_RELEASE: &str = "heroku.release";
/// A one-off's dyno name, `run.3`.
pub const LABEL_DYNO: &str = "heroku.dyno";

/// What one-off dynos are called, on every engine.
pub const RUN_TYPE: &str = "run";

/// Timings that tests shorten.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub stop_grace: Duration,
    pub restart_delay: Duration,
}

/// `crew-APP`, the app's attachable overlay network.
pub fn network_name(app: &str) -> String {
    format!("crew-{app}")
}

/// `APP-run-N`, a one-off's service or container.
pub fn run_name(app: &str, number: u32) -> String {
    format!("{app}-{RUN_TYPE}-{number}")
}

pub fn image_tag(release: &ReleaseSpec) -> String {
    crew_cluster::image::default_tag(&release.app, release.version)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The dyno's environment as `K=V`: the release's (config vars and the
/// platform's base), then the request's, then the platform's own variables,
/// which win. `escape` is set where Swarm expands Go templates (service env),
/// so that a config var holding `{{` arrives as written.
fn environment(
    base: &[(String, String)],
    extra: &[(String, String)],
    dyno: &str,
    escape: bool,
) -> Vec<String> {
    let mut env: BTreeMap<&str, String> = BTreeMap::new();
    for (k, v) in base.iter().chain(extra) {
        let v = if escape {
            go_template_literal(v)
        } else {
            v.clone()
        };
        env.insert(k, v);
    }
    env.insert("DYNO", dyno.to_string());
    env.insert("PS", dyno.to_string());
    env.insert("HOME", "/app".to_string());
    env.insert("PORT", PORT.to_string());
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn labels(app: &str, process_type: &str, release: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_APP.to_string(), app.to_string()),
        (LABEL_TYPE.to_string(), process_type.to_string()),
        (LABEL_RELEASE.to_string(), format!("v{release}")),
    ])
}

/// The service `APP-TYPE` for one process type of `release`.
///
/// Web tasks publish `PORT` in host mode on a port the daemon picks, one per
/// task: crew's router reaches each web dyno on this node at
/// `127.0.0.1:that-port`. (The ingress mesh would give one port for all, but
/// it needs IPVS in the kernel, which not every host has.)
pub fn service_spec(
    release: &ReleaseSpec,
    process_type: &str,
    command: &str,
    replicas: u32,
    force_update: u64,
    timings: Timings,
) -> Result<Value, SwarmError> {
    let name = object_name(&release.app, process_type)?;
    let size = release
        .types
        .iter()
        .find(|t| t.name == process_type)
        .and_then(|t| t.size.clone())
        .unwrap_or_default();
    let slot = format!("{process_type}.{{{{.Task.Slot}}}}");
    let labels = labels(&release.app, process_type, release.version);
    let web = process_type == "web";
    let mut spec = json!({
        "Name": name,
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image_tag(release),
                "Command": dyno_command(command),
                "Env": environment(&release.env, &[], &slot, true),
                "Dir": "/app",
                "User": format!("{DYNO_UID}:{DYNO_UID}"),
                "Hostname": format!("{}.{{{{.Task.Slot}}}}", type_label(process_type)?),
                "Labels": labels,
                "StopGracePeriod": nanos(timings.stop_grace),
            },
            // `any`: a dyno that exits, even with 0, comes back, as on Heroku.
            // Swarm has no backoff of its own; the delay is the whole policy.
            "RestartPolicy": {
                "Condition": "any",
                "Delay": nanos(timings.restart_delay),
                "MaxAttempts": 0,
            },
            "Networks": [{ "Target": network_name(&release.app) }],
            "ForceUpdate": force_update,
            // The dyno size's memory and process limits, as an isolated dyno
            // on crew's own machine gets them.
            "Resources": { "Limits": { "MemoryBytes": size.memory_bytes, "Pids": size.pids } },
        },
        "Mode": { "Replicated": { "Replicas": replicas } },
        "UpdateConfig": if web {
            // A new web task runs before an old one stops.
            json!({ "Parallelism": 1, "Order": "start-first", "FailureAction": "continue" })
        } else {
            // Like Kubernetes' Recreate: one release's workers at a time.
            json!({ "Parallelism": 0, "Order": "stop-first", "FailureAction": "continue" })
        },
    });
    if web {
        spec["EndpointSpec"] = json!({
            "Mode": "vip",
            "Ports": [{ "Protocol": "tcp", "TargetPort": PORT, "PublishMode": "host" }],
        });
    }
    Ok(spec)
}

/// A detached one-off: a replicated job that runs once and is never
/// restarted, so its task's status carries the exit code.
pub fn job_spec(
    release: &ReleaseSpec,
    number: u32,
    command: &str,
    extra_env: &[(String, String)],
) -> Value {
    let dyno = format!("{RUN_TYPE}.{number}");
    let mut labels = labels(&release.app, RUN_TYPE, release.version);
    labels.insert(LABEL_DYNO.to_string(), dyno.clone());
    json!({
        "Name": run_name(&release.app, number),
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image_tag(release),
                "Command": dyno_command(command),
                "Env": environment(&release.env, extra_env, &dyno, true),
                "Dir": "/app",
                "User": format!("{DYNO_UID}:{DYNO_UID}"),
                "Hostname": dyno,
                "Labels": labels,
            },
            "RestartPolicy": { "Condition": "none" },
            "Networks": [{ "Target": network_name(&release.app) }],
        },
        "Mode": { "ReplicatedJob": { "MaxConcurrent": 1, "TotalCompletions": 1 } },
    })
}

/// An attached one-off: a container on this node (Swarm cannot attach to a
/// task), on the app's network, with a terminal when the client has one.
pub fn container_config(
    release: &ReleaseSpec,
    number: u32,
    command: &str,
    extra_env: &[(String, String)],
    tty: Option<(u16, u16)>,
) -> Value {
    let dyno = format!("{RUN_TYPE}.{number}");
    let mut labels = labels(&release.app, RUN_TYPE, release.version);
    labels.insert(LABEL_DYNO.to_string(), dyno.clone());
    let network = network_name(&release.app);
    let mut config = json!({
        "Image": image_tag(release),
        // As Entrypoint, so nothing of a base image's slips in front.
        "Entrypoint": dyno_command(command),
        "Cmd": [],
        "Env": environment(&release.env, extra_env, &dyno, false),
        "WorkingDir": "/app",
        "User": format!("{DYNO_UID}:{DYNO_UID}"),
        "Hostname": dyno,
        "Labels": labels,
        "AttachStdin": true,
        "AttachStdout": true,
        "AttachStderr": true,
        "OpenStdin": true,
        // The container's stdin closes when the client's does.
        "StdinOnce": true,
        "Tty": tty.is_some(),
        "HostConfig": { "NetworkMode": network },
        "NetworkingConfig": { "EndpointsConfig": { network.clone(): {} } },
    });
    if let Some((cols, rows)) = tty {
        config["HostConfig"]["ConsoleSize"] = json!([rows, cols]);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn release() -> ReleaseSpec {
        ReleaseSpec {
            app: "shop".into(),
            version: 3,
            types: Vec::new(),
            env: vec![
                ("GREETING".into(), "a{{b}}".into()),
                ("PORT".into(), "1".into()),
            ],
            slug_archive: PathBuf::new(),
            slug_dir: PathBuf::new(),
            command_prefix: None,
        }
    }

    #[test]
    fn web_services_publish_per_task_and_roll_start_first() {
        let timings = Timings {
            stop_grace: Duration::from_secs(30),
            restart_delay: Duration::from_secs(5),
        };
        let spec =
            service_spec(&release(), "web", "python3 web.py", 2, 0, timings).expect("a valid spec");
        assert_eq!(spec["Name"], "shop-web");
        assert_eq!(spec["Mode"]["Replicated"]["Replicas"], 2);
        assert_eq!(spec["UpdateConfig"]["Order"], "start-first");
        assert_eq!(spec["EndpointSpec"]["Ports"][0]["PublishMode"], "host");
        let task = &spec["TaskTemplate"];
        assert_eq!(task["ContainerSpec"]["StopGracePeriod"], 30_000_000_000u64);
        assert_eq!(task["RestartPolicy"]["Condition"], "any");
        // No size given: standard-1x's limits, as on crew's own machine.
        assert_eq!(task["Resources"]["Limits"]["MemoryBytes"], 512u64 << 20);
        assert_eq!(task["Resources"]["Limits"]["Pids"], 256);
        let env: Vec<&str> = task["ContainerSpec"]["Env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(env.contains(&"DYNO=web.{{.Task.Slot}}"));
        assert!(env.contains(&"PORT=5000"), "the platform's PORT wins");
        assert!(env.contains(&"GREETING=a{{\"{{\"}}b}}"));
        let worker = service_spec(&release(), "worker", "w", 1, 0, timings).expect("spec");
        assert_eq!(worker["UpdateConfig"]["Order"], "stop-first");
        assert!(worker.get("EndpointSpec").is_none());
        assert!(service_spec(&release(), "run", "x", 1, 0, timings).is_err());
    }

    #[test]
    fn one_offs_are_jobs_or_containers() {
        let job = job_spec(&release(), 4, "exit 3", &[]);
        assert_eq!(job["Name"], "shop-run-4");
        assert_eq!(job["Mode"]["ReplicatedJob"]["MaxConcurrent"], 1);
        assert_eq!(job["TaskTemplate"]["RestartPolicy"]["Condition"], "none");
        let container = container_config(&release(), 5, "sh", &[], Some((80, 24)));
        assert_eq!(container["Tty"], true);
        assert_eq!(container["HostConfig"]["ConsoleSize"], json!([24, 80]));
        let env = container["Env"].as_array().expect("env");
        assert!(env.contains(&json!("GREETING=a{{b}}")), "no templates here");
        assert!(env.contains(&json!("DYNO=run.5")));
    }
}
