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
/// What a container that is not a dyno is for.
pub const LABEL_ROLE: &str = "crew.role";
/// [`LABEL_ROLE`] of the router's gateway onto the app's network.
pub const ROLE_GATEWAY: &str = "router-gateway";

/// What one-off dynos are called, on every cluster.
pub const RUN_TYPE: &str = "run";

/// Timings that tests shorten.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub stop_grace: Duration,
    pub restart_delay: Duration,
    /// Between a web task's health checks.
    pub health_interval: Duration,
    /// How long a web task may take to listen before failed checks count.
    pub boot_timeout: Duration,
}

/// Failed checks in a row, after the boot time, that make a web task
/// unhealthy; Swarm then stops it and starts another.
const HEALTH_RETRIES: u32 = 3;
/// How long one check may take: it reads two small files, but an exec on a
/// loaded machine can be slow, and a slow check must not kill a dyno.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A web task's health check: passes once a socket listens on `PORT` in the
/// task's own network namespace. The stack is only promised `/bin/sh` (no
/// `nc`, no bash `/dev/tcp`), so it reads the kernel's socket tables,
/// `/proc/net/tcp` and `tcp6` (local `ADDR:PORT` in hex, state `0A` for
/// LISTEN), with shell builtins alone. A listening socket is one that
/// accepts connections: the kernel completes the handshake itself.
pub fn port_check_script(port: u16) -> String {
    format!(
        "for f in /proc/net/tcp /proc/net/tcp6; do \
         [ -r \"$f\" ] || continue; \
         while read -r sl local remote state rest; do \
         case \"$local $state\" in *':{port:04X} 0A') exit 0;; esac; \
         done < \"$f\"; \
         done; exit 1"
    )
}

/// `crew-APP`, the app's attachable overlay network.
pub fn network_name(app: &str) -> String {
    format!("crew-{app}")
}

/// `crew-APP-router`, the container that holds the router's place on the
/// app's network.
pub fn gateway_name(app: &str) -> String {
    format!("{}-router", network_name(app))
}

/// The gateway: a container on the app's network, on this node, that runs
/// nothing but a shell blocked reading a stdin that stays open (the stack
/// only promises `/bin/sh`, so no `sleep`). It exists for its network
/// namespace, where crew makes the router's sockets to the web tasks. It
/// runs as the dynos' user, with no capabilities and a read-only root, and
/// comes back with the daemon.
pub fn gateway_config(app: &str, image: &str) -> Value {
    let network = network_name(app);
    json!({
        "Image": image,
        "Entrypoint": ["/bin/sh", "-c", "read -r _"],
        "Cmd": [],
        "User": format!("{DYNO_UID}:{DYNO_UID}"),
        "Labels": { LABEL_APP: app, LABEL_ROLE: ROLE_GATEWAY },
        "OpenStdin": true,
        "StdinOnce": false,
        "HostConfig": {
            "NetworkMode": network,
            "RestartPolicy": { "Name": "unless-stopped" },
            "CapDrop": ["ALL"],
            "ReadonlyRootfs": true,
            "Memory": 16 * 1024 * 1024,
            "PidsLimit": 4,
        },
        "NetworkingConfig": { "EndpointsConfig": { network.clone(): {} } },
    })
}

/// `APP-run-N`, a one-off's service or container.
pub fn run_name(app: &str, number: u32) -> String {
    format!("{app}-{RUN_TYPE}-{number}")
}

/// `APP-release-vN`, the container of a release's release command: one per
/// release, so that two releases' commands never take each other's name.
pub fn release_name(release: &ReleaseSpec) -> String {
    format!("{}-release-v{}", release.app, release.version)
}

/// `crew/APP:vN`: what a release's docker-archive is tagged, and loaded as.
pub fn image_tag(release: &ReleaseSpec) -> String {
    crew_cluster::image::default_tag(&release.app, release.version)
}

/// `vN`.
pub fn version_tag(release: &ReleaseSpec) -> String {
    format!("v{}", release.version)
}

/// `REGISTRY/crew/APP`: where an app's release images are pushed, and every
/// node pulls them from (the same names as the Kubernetes placement's).
pub fn registry_repo(registry: &str, app: &str) -> String {
    format!("{}/crew/{app}", registry.trim_end_matches('/'))
}

/// The image a release's dynos run: `REGISTRY/crew/APP:vN` once pushed to a
/// registry, else `crew/APP:vN` as loaded into the daemons.
pub fn image_reference(release: &ReleaseSpec, registry: Option<&str>) -> String {
    match registry {
        Some(registry) => format!(
            "{}:{}",
            registry_repo(registry, &release.app),
            version_tag(release)
        ),
        None => image_tag(release),
    }
}

/// Checks a registry as image references name one: `HOST[:PORT][/PATH]`,
/// without a scheme. The host must look like one (a dot, a port, or
/// `localhost`): Docker reads a bare first word as a Docker Hub account,
/// and would push there.
pub fn check_registry(registry: &str) -> Result<(), SwarmError> {
    let bad = |why: &str| Err(SwarmError::Invalid(format!("registry `{registry}`: {why}")));
    let trimmed = registry.trim_end_matches('/');
    if trimmed.is_empty() {
        return bad("empty");
    }
    if trimmed.contains("://") {
        return bad("give HOST[:PORT][/PATH], without a scheme");
    }
    if let Some(c) = trimmed
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-_:/[]".contains(*c)))
    {
        return bad(&format!("`{c}` cannot be part of an image name"));
    }
    let (host, path) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    if host.is_empty() || (!path.is_empty() && path.split('/').any(str::is_empty)) {
        return bad("an empty name component");
    }
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return bad(
            "Docker would read the first part as a Docker Hub account; name the host with a dot or a port (`registry.local`, `HOST:5000`)",
        );
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("a repository path is lowercase");
    }
    Ok(())
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
/// task: crew's router reaches each web dyno at its node's address and
/// that port. (The ingress mesh would give one port for all, but it needs
/// IPVS in the kernel, which not every host has.)
pub fn service_spec(
    release: &ReleaseSpec,
    image: &str,
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
                "Image": image,
                "Command": dyno_command(command),
                "Env": environment(&release.env, &[], &slot, true),
                "Dir": "/app",
                "User": format!("{DYNO_UID}:{DYNO_UID}"),
                "Hostname": format!("{}.{{{{.Task.Slot}}}}", type_label(process_type)?),
                "Labels": labels,
                "StopGracePeriod": nanos(timings.stop_grace),
                "Healthcheck": if web {
                    // Swarm counts a task as running only once it is
                    // healthy, so a start-first update keeps the old web
                    // task until the new one listens, and the router never
                    // gets a backend that refuses connections. Failures in
                    // the boot time do not count; after it, a dyno that
                    // does not listen is stopped and replaced, as Heroku's
                    // R10 crashes it.
                    json!({
                        "Test": ["CMD-SHELL", port_check_script(PORT)],
                        "Interval": nanos(timings.health_interval),
                        "Timeout": nanos(HEALTH_TIMEOUT),
                        "StartPeriod": nanos(timings.boot_timeout),
                        "Retries": HEALTH_RETRIES,
                    })
                } else {
                    // No check, not even one the stack's image declares.
                    json!({ "Test": ["NONE"] })
                },
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
    image: &str,
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
                "Image": image,
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

/// An attached one-off, `dyno` (`run.3`, or a release command's
/// [`crew_engine::RELEASE_DYNO`]): a container on this node (Swarm cannot
/// attach to a task), on the app's network, with a terminal when the client
/// has one. Its type label is the dyno's type.
pub fn container_config(
    release: &ReleaseSpec,
    image: &str,
    dyno: &str,
    command: &str,
    extra_env: &[(String, String)],
    tty: Option<(u16, u16)>,
) -> Value {
    let process_type = dyno.split('.').next().unwrap_or(RUN_TYPE);
    let mut labels = labels(&release.app, process_type, release.version);
    labels.insert(LABEL_DYNO.to_string(), dyno.to_string());
    let network = network_name(&release.app);
    let mut config = json!({
        "Image": image,
        // As Entrypoint, so nothing of a base image's slips in front.
        "Entrypoint": dyno_command(command),
        "Cmd": [],
        "Env": environment(&release.env, extra_env, dyno, false),
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
    use crew_engine::RELEASE_DYNO;
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
            health_interval: Duration::from_secs(2),
            boot_timeout: Duration::from_secs(60),
        };
        let spec = service_spec(
            &release(),
            "crew/shop:v3",
            "web",
            "python3 web.py",
            2,
            0,
            timings,
        )
        .expect("a valid spec");
        assert_eq!(spec["Name"], "shop-web");
        assert_eq!(
            spec["TaskTemplate"]["ContainerSpec"]["Image"],
            "crew/shop:v3"
        );
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
        let health = &task["ContainerSpec"]["Healthcheck"];
        assert_eq!(health["Test"][0], "CMD-SHELL");
        assert_eq!(health["Test"][1], port_check_script(5000));
        assert_eq!(health["StartPeriod"], 60_000_000_000u64);
        let worker =
            service_spec(&release(), "crew/shop:v3", "worker", "w", 1, 0, timings).expect("spec");
        assert_eq!(worker["UpdateConfig"]["Order"], "stop-first");
        assert_eq!(
            worker["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"][0],
            "NONE"
        );
        assert!(worker.get("EndpointSpec").is_none());
        assert!(service_spec(&release(), "crew/shop:v3", "run", "x", 1, 0, timings).is_err());
    }

    /// The check itself, run by this machine's shells against a listener of
    /// the test's own (the socket tables are the test's network
    /// namespace's, as a container's check reads its own).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_port_check_sees_a_listener_with_shell_builtins_alone() {
        let shells: Vec<Vec<&str>> = [
            vec!["/bin/sh"],
            vec!["/bin/busybox", "sh"],
            vec!["/bin/dash"],
        ]
        .into_iter()
        .filter(|s| std::path::Path::new(s[0]).exists())
        .collect();
        let run = |shell: &[&str], port: u16| -> Option<i32> {
            std::process::Command::new(shell[0])
                .args(&shell[1..])
                .arg("-c")
                .arg(port_check_script(port))
                // Builtins alone: nothing on the PATH.
                .env_clear()
                .output()
                .expect("a shell")
                .status
                .code()
        };
        for loopback in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = std::net::TcpListener::bind(loopback) else {
                continue;
            };
            let port = listener.local_addr().expect("an address").port();
            for shell in &shells {
                assert_eq!(run(shell, port), Some(0), "{shell:?} on {loopback}");
            }
            drop(listener);
            for shell in &shells {
                assert_eq!(run(shell, port), Some(1), "{shell:?}, nothing on {port}");
            }
        }
        // A connected socket on the port is no listener.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let port = listener.local_addr().expect("an address").port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("a connection");
        let _accepted = listener.accept().expect("accepted");
        drop(listener);
        for shell in &shells {
            assert_eq!(run(shell, port), Some(1), "{shell:?}, only a connection");
        }
        drop(client);
    }

    #[test]
    fn pushed_images_are_named_after_the_registry() {
        assert_eq!(image_reference(&release(), None), "crew/shop:v3");
        assert_eq!(
            image_reference(&release(), Some("10.0.0.1:5000/")),
            "10.0.0.1:5000/crew/shop:v3"
        );
        assert_eq!(
            registry_repo("registry.example/team", "shop"),
            "registry.example/team/crew/shop"
        );
        for good in [
            "10.0.0.1:5000",
            "registry.example/team/",
            "localhost",
            "[fd00::1]:5000",
        ] {
            assert!(check_registry(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "http://r.example",
            "registry",
            "r.example/Team",
            "r.example//x",
            "a b.c",
        ] {
            assert!(check_registry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_offs_are_jobs_or_containers() {
        let job = job_spec(&release(), "crew/shop:v3", 4, "exit 3", &[]);
        assert_eq!(job["Name"], "shop-run-4");
        assert_eq!(job["Mode"]["ReplicatedJob"]["MaxConcurrent"], 1);
        assert_eq!(job["TaskTemplate"]["RestartPolicy"]["Condition"], "none");
        let container = container_config(
            &release(),
            "crew/shop:v3",
            "run.5",
            "sh",
            &[],
            Some((80, 24)),
        );
        assert_eq!(container["Tty"], true);
        assert_eq!(container["HostConfig"]["ConsoleSize"], json!([24, 80]));
        let env = container["Env"].as_array().expect("env");
        assert!(env.contains(&json!("GREETING=a{{b}}")), "no templates here");
        assert!(env.contains(&json!("DYNO=run.5")));
        assert_eq!(container["Labels"][LABEL_TYPE], "run");
        let release_phase =
            container_config(&release(), "crew/shop:v3", RELEASE_DYNO, "x", &[], None);
        assert_eq!(release_phase["Hostname"], "release.1");
        assert_eq!(release_phase["Labels"][LABEL_TYPE], "release");
        assert_eq!(release_phase["Labels"][LABEL_DYNO], "release.1");
        assert_eq!(release_name(&release()), "shop-release-v3");
    }
}
