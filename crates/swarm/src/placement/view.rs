//! Tasks as dynos: what one read of the swarm shows, as pure functions of
//! the services and tasks read, so they are tested without a daemon.
//!
//! Swarm numbers a replicated service's tasks by slot, and a replacement
//! task keeps its slot, so `web.2` is the slot 2 of the service `APP-web`;
//! a slot keeps the history of its tasks, which gives `ps` its restarts.
//! A one-off's job service names its dyno (`run.3`) in a label.
//!
//! [`dynos_from_tasks`] gives the dynos and the running web tasks (the
//! router's backends, once the placement knows how to reach them);
//! [`lifecycle_lines`] compares each task's state with the last read's
//! ([`TaskSnapshot`]) and says what changed in Heroku's words. Reading the
//! swarm and writing the lines is `refresh`'s (`refresh.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crew_cluster::PORT;
use crew_engine::{DynoInfo, DynoState, ReleaseSpec};

use crate::docker::{Service, Task};
use crate::logline::parse_time;
use crate::spec::{LABEL_DYNO, LABEL_TYPE, RUN_TYPE};

/// A dyno as Swarm places it: what `ps` shows, plus the node it runs on.
#[derive(Debug, Clone)]
pub struct SwarmDyno {
    pub info: DynoInfo,
    /// The Swarm node id (hostnames repeat across nodes; ids do not).
    pub node: Option<String>,
    /// The task behind the dyno now.
    pub task: String,
}

/// What the last read of the app's tasks saw: the dynos `ps` shows, which
/// dyno each task is (for log lines), and each task's state (for the next
/// read's lifecycle lines).
#[derive(Default)]
pub(super) struct TaskSnapshot {
    pub(super) dynos: Vec<SwarmDyno>,
    /// Task id to dyno name, for log lines.
    pub(super) task_dynos: HashMap<String, Arc<str>>,
    /// Each task's last state seen, for lifecycle lines.
    pub(super) seen: HashMap<String, String>,
    /// Whether there was a read before: the first one (a server that starts
    /// and adopts running services) writes no lifecycle lines.
    pub(super) primed: bool,
}

/// The dyno a task belongs to, as a lifecycle line names it.
#[derive(Debug, Clone)]
pub(super) struct TaskDyno {
    pub(super) name: Arc<str>,
    pub(super) one_off: bool,
    /// The service's Procfile command, for `Starting process with command`.
    pub(super) command: String,
}

/// One read of the swarm, as dynos.
pub(super) struct TaskDynos<'t> {
    /// In `ps` order: by type, then number.
    pub(super) dynos: Vec<SwarmDyno>,
    /// Every running web task, with its dyno's name.
    pub(super) web_tasks: Vec<(Arc<str>, &'t Task)>,
    /// Task id to dyno name, for log lines.
    pub(super) task_dynos: HashMap<String, Arc<str>>,
    /// Task id to its dyno, for lifecycle lines.
    pub(super) by_task: HashMap<&'t str, TaskDyno>,
}

/// A `crew[DYNO]` line to write: the dyno and the text.
pub(super) type LifecycleLine = (Arc<str>, String);

/// The app's dynos, from its services and their tasks. `commands` gives
/// each service's Procfile command by service id (see [`command_of`]).
///
/// Per slot, the dyno is the task Swarm wants running, else (for a slot the
/// service still has, or a one-off) the newest, so that `ps` shows a crash.
pub(super) fn dynos_from_tasks<'t>(
    services: &[Service],
    tasks: &'t [Task],
    commands: &HashMap<String, String>,
) -> TaskDynos<'t> {
    let mut dynos = Vec::new();
    let mut web_tasks: Vec<(Arc<str>, &Task)> = Vec::new();
    let mut task_dynos = HashMap::new();
    let mut by_task: HashMap<&str, TaskDyno> = HashMap::new();
    for service in services {
        let process_type = service.label(LABEL_TYPE).unwrap_or("unknown");
        let one_off = process_type == RUN_TYPE;
        let replicas = service.replicas().unwrap_or(0);
        let command = commands.get(&service.id).cloned().unwrap_or_default();
        let mut slots: BTreeMap<u32, Vec<&Task>> = BTreeMap::new();
        for task in tasks.iter().filter(|t| t.service_id == service.id) {
            slots.entry(task.slot.unwrap_or(0)).or_default().push(task);
        }
        for (slot, mut history) in slots {
            history.sort_by_key(|t| task_time(t));
            let name: Arc<str> = if one_off {
                Arc::from(service.label(LABEL_DYNO).unwrap_or("run"))
            } else {
                Arc::from(format!("{process_type}.{slot}"))
            };
            for task in &history {
                task_dynos.insert(task.id.clone(), name.clone());
                by_task.insert(
                    &task.id,
                    TaskDyno {
                        name: name.clone(),
                        one_off,
                        command: command.clone(),
                    },
                );
            }
            let current = history
                .iter()
                .rev()
                .find(|t| t.desired_state == "running")
                .or_else(|| {
                    (one_off || u64::from(slot) <= replicas)
                        .then(|| history.last())
                        .flatten()
                });
            let Some(current) = current else { continue };
            let state = dyno_state(&current.status.state, one_off);
            let port = current.published_port(PORT);
            let number = if one_off {
                name.rsplit('.')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            } else {
                slot
            };
            let restarts = history
                .iter()
                .filter(|t| {
                    t.id != current.id
                        && matches!(t.status.state.as_str(), "failed" | "rejected" | "complete")
                })
                .count();
            // Every running web task is a backend, not only the slot's
            // newest: during a start-first update the old task serves
            // until the new one runs, and then Swarm stops it.
            if process_type == "web" {
                for task in history
                    .iter()
                    .filter(|t| t.status.state == "running" && t.desired_state == "running")
                {
                    web_tasks.push((name.clone(), task));
                }
            }
            dynos.push(SwarmDyno {
                info: DynoInfo {
                    name: name.to_string(),
                    process_type: process_type.to_string(),
                    number,
                    state,
                    since: parse_time(&current.status.timestamp).unwrap_or(UNIX_EPOCH),
                    pid: None,
                    port,
                    command: command.clone(),
                    restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
                    restart_in: None,
                    size: None,
                    node: current.node_id.as_deref().map(short_id),
                    // Tasks carry no release label yet: the platform
                    // names the current one.
                    release: None,
                },
                node: current.node_id.clone(),
                task: current.id.clone(),
            });
        }
    }
    dynos.sort_by(|a, b| {
        (&a.info.process_type, a.info.number).cmp(&(&b.info.process_type, b.info.number))
    });
    TaskDynos {
        dynos,
        web_tasks,
        task_dynos,
        by_task,
    }
}

/// Lifecycle lines, in Heroku's words, for formation dynos whose tasks
/// changed state since `before`; one-offs' watchers write their own, and a
/// first read (`before` not primed) writes none. `boot_timeout` is the R10
/// limit the line quotes.
pub(super) fn lifecycle_lines(
    before: &TaskSnapshot,
    tasks: &[Task],
    dynos: &TaskDynos<'_>,
    boot_timeout: Duration,
) -> Vec<LifecycleLine> {
    let mut lines = Vec::new();
    for task in tasks {
        let state = task.status.state.as_str();
        let was = before.seen.get(&task.id).map(String::as_str);
        let Some(TaskDyno {
            name,
            one_off,
            command,
        }) = dynos.by_task.get(task.id.as_str())
        else {
            continue;
        };
        if !before.primed || *one_off || was == Some(state) {
            continue;
        }
        if was.is_some_and(is_terminal) {
            continue;
        }
        match state {
            "running" => {
                if was.is_none() {
                    lines.push((
                        name.clone(),
                        format!("Starting process with command `{command}`"),
                    ));
                }
                lines.push((name.clone(), "State changed from starting to up".into()));
            }
            "failed" | "complete" => {
                // Swarm stops a task whose health check never passed once
                // the boot time is over: a web dyno that never bound its
                // PORT.
                let booting = was != Some("running");
                let unhealthy = task
                    .status
                    .err
                    .as_deref()
                    .is_some_and(|e| e.contains("unhealthy"));
                if booting && unhealthy {
                    lines.push((
                        name.clone(),
                        format!(
                            "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within {} seconds of launch",
                            boot_timeout.as_secs()
                        ),
                    ));
                }
                lines.push((
                    name.clone(),
                    format!("Process exited with status {}", exit_code(task)),
                ));
                let from = if booting && unhealthy {
                    "starting"
                } else {
                    "up"
                };
                lines.push((
                    name.clone(),
                    format!("State changed from {from} to crashed"),
                ));
            }
            "rejected" => {
                let why = task.status.err.clone().unwrap_or_default();
                lines.push((name.clone(), format!("Could not start: {why}")));
                lines.push((
                    name.clone(),
                    "State changed from starting to crashed".into(),
                ));
            }
            "shutdown" if was == Some("running") => {
                lines.push((name.clone(), "State changed from up to down".into()));
            }
            _ => {}
        }
    }
    lines
}

/// Each task's state now, to compare the next read with.
pub(super) fn states(tasks: &[Task]) -> HashMap<String, String> {
    tasks
        .iter()
        .map(|t| (t.id.clone(), t.status.state.clone()))
        .collect()
}

/// A service's Procfile command: a one-off's dyno, in parentheses, or the
/// command of its type in `release` (the one applied last, if any).
pub(super) fn command_of(service: &Service, release: Option<&ReleaseSpec>) -> String {
    if let Some(dyno) = service.label(LABEL_DYNO) {
        return format!("({dyno})");
    }
    let process_type = service.label(LABEL_TYPE).unwrap_or("");
    release
        .and_then(|r| {
            r.types
                .iter()
                .find(|t| t.name == process_type)
                .map(|t| t.command.clone())
        })
        .unwrap_or_default()
}

pub(super) fn task_time(task: &Task) -> SystemTime {
    parse_time(&task.created_at).unwrap_or(UNIX_EPOCH)
}

pub(super) fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "complete" | "failed" | "rejected" | "shutdown" | "remove" | "orphaned"
    )
}

/// Swarm's task states in Heroku's words. A formation dyno's exit is a crash
/// whatever its code (`any` restarts it); a one-off's is its completion.
pub(super) fn dyno_state(state: &str, one_off: bool) -> DynoState {
    match state {
        "running" => DynoState::Up,
        "complete" if one_off => DynoState::Complete,
        "complete" | "failed" | "rejected" => DynoState::Crashed,
        "shutdown" | "remove" | "orphaned" => DynoState::Down,
        _ => DynoState::Starting,
    }
}

/// The exit code a finished task reports; Swarm keeps it in the container
/// status, or only in its error text (`task: non-zero exit (3)`).
pub(super) fn exit_code(task: &Task) -> i32 {
    if let Some(code) = task.exit_code()
        && (code != 0 || task.status.state == "complete")
    {
        return i32::try_from(code).unwrap_or(1);
    }
    let err = task.status.err.as_deref().unwrap_or("");
    if let Some(rest) = err.split("exit (").nth(1)
        && let Some(code) = rest.split(')').next().and_then(|c| c.parse().ok())
    {
        return code;
    }
    match task.status.state.as_str() {
        "complete" => 0,
        // Never started: what a shell says when it cannot run a command.
        "rejected" => 127,
        _ => 137,
    }
}

/// A node's id as `docker node ls` shows it: its first 12 characters.
pub(super) fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crew_engine::ReleaseType;
    use serde_json::{Value, json};

    use super::*;

    fn service(id: &str, process_type: &str, replicas: u64, dyno: Option<&str>) -> Service {
        let mut labels = json!({ "heroku.app": "shop", LABEL_TYPE: process_type });
        if let Some(dyno) = dyno {
            labels[LABEL_DYNO] = json!(dyno);
        }
        serde_json::from_value(json!({
            "ID": id,
            "Version": { "Index": 7 },
            "Spec": {
                "Name": format!("shop-{process_type}"),
                "Labels": labels,
                "Mode": { "Replicated": { "Replicas": replicas } },
            },
        }))
        .expect("a service")
    }

    /// A task of `service` in `slot`, made at second `created` of the day.
    fn task(id: &str, service: &str, slot: u32, created: u32, desired: &str, state: &str) -> Task {
        with(id, service, slot, created, desired, state, json!({}))
    }

    fn with(
        id: &str,
        service: &str,
        slot: u32,
        created: u32,
        desired: &str,
        state: &str,
        status: Value,
    ) -> Task {
        let mut status_json = json!({
            "Timestamp": format!("2026-11-27T20:00:{created:02}.5Z"),
            "State": state,
        });
        if let (Some(to), Some(from)) = (status_json.as_object_mut(), status.as_object()) {
            to.extend(from.clone());
        }
        serde_json::from_value(json!({
            "ID": id,
            "ServiceID": service,
            "Slot": slot,
            "NodeID": "node0123456789abcdef",
            "DesiredState": desired,
            "Status": status_json,
            "CreatedAt": format!("2026-11-27T20:00:{created:02}Z"),
            "Version": { "Index": 1 },
        }))
        .expect("a task")
    }

    fn commands(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(id, c)| (id.to_string(), c.to_string()))
            .collect()
    }

    fn names(read: &TaskDynos<'_>) -> Vec<(String, DynoState, u32)> {
        read.dynos
            .iter()
            .map(|d| (d.info.name.clone(), d.info.state, d.info.restarts))
            .collect()
    }

    #[test]
    fn a_slot_is_a_dyno_showing_the_task_swarm_wants_running() {
        let services = [
            service("w", "worker", 1, None),
            service("s", "web", 2, None),
        ];
        let tasks = [
            task("a", "s", 1, 1, "shutdown", "failed"),
            task("b", "s", 1, 2, "running", "running"),
            task("c", "s", 2, 3, "running", "preparing"),
            task("d", "w", 1, 4, "running", "running"),
        ];
        let read = dynos_from_tasks(&services, &tasks, &commands(&[("s", "rackup")]));
        assert_eq!(
            names(&read),
            [
                ("web.1".to_string(), DynoState::Up, 1),
                ("web.2".to_string(), DynoState::Starting, 0),
                ("worker.1".to_string(), DynoState::Up, 0),
            ]
        );
        let web1 = &read.dynos[0];
        assert_eq!(web1.task, "b");
        assert_eq!(web1.info.command, "rackup");
        assert_eq!(web1.info.number, 1);
        assert_eq!(web1.node.as_deref(), Some("node0123456789abcdef"));
        assert_eq!(web1.info.node.as_deref(), Some("node01234567"));
        assert_eq!(read.task_dynos.get("a").map(|n| &**n), Some("web.1"));
        assert_eq!(read.task_dynos.get("d").map(|n| &**n), Some("worker.1"));
    }

    #[test]
    fn a_crashed_slot_shows_its_newest_task_until_scaled_away() {
        let services = [service("s", "web", 1, None)];
        let tasks = [
            task("a", "s", 1, 1, "shutdown", "failed"),
            task("b", "s", 1, 2, "shutdown", "complete"),
            // Slot 2 is beyond the replicas: scaled down, not a dyno.
            task("c", "s", 2, 3, "shutdown", "shutdown"),
        ];
        let read = dynos_from_tasks(&services, &tasks, &HashMap::new());
        assert_eq!(names(&read), [("web.1".to_string(), DynoState::Crashed, 1)]);
        assert_eq!(read.dynos[0].task, "b");
    }

    #[test]
    fn every_running_web_task_is_a_backend_during_an_update() {
        let services = [
            service("s", "web", 1, None),
            service("w", "worker", 1, None),
        ];
        let tasks = [
            task("old", "s", 1, 1, "running", "running"),
            task("new", "s", 1, 2, "running", "running"),
            task("gone", "s", 1, 0, "shutdown", "running"),
            task("work", "w", 1, 3, "running", "running"),
        ];
        let read = dynos_from_tasks(&services, &tasks, &HashMap::new());
        let mut backends: Vec<(&str, &str)> = read
            .web_tasks
            .iter()
            .map(|(name, t)| (&**name, t.id.as_str()))
            .collect();
        backends.sort();
        assert_eq!(backends, [("web.1", "new"), ("web.1", "old")]);
    }

    #[test]
    fn a_one_off_is_named_by_its_label_and_completes() {
        let services = [service("j", RUN_TYPE, 1, Some("run.4"))];
        let tasks = [with(
            "t",
            "j",
            1,
            1,
            "complete",
            "complete",
            json!({ "ContainerStatus": { "ExitCode": 0 } }),
        )];
        let read = dynos_from_tasks(&services, &tasks, &HashMap::new());
        assert_eq!(
            names(&read),
            [("run.4".to_string(), DynoState::Complete, 0)]
        );
        assert_eq!(read.dynos[0].info.number, 4);
        assert!(read.web_tasks.is_empty());
        assert!(read.by_task["t"].one_off);
    }

    /// The lines `tasks` gives after a read that saw `before` (task id,
    /// state), with one web service `s` whose command is `rackup`.
    fn lines_after(before: &[(&str, &str)], tasks: &[Task]) -> Vec<String> {
        let services = [
            service("s", "web", 2, None),
            service("j", RUN_TYPE, 1, Some("run.1")),
        ];
        let read = dynos_from_tasks(&services, tasks, &commands(&[("s", "rackup")]));
        let snapshot = TaskSnapshot {
            seen: before
                .iter()
                .map(|(id, state)| (id.to_string(), state.to_string()))
                .collect(),
            primed: true,
            ..TaskSnapshot::default()
        };
        lifecycle_lines(&snapshot, tasks, &read, Duration::from_secs(60))
            .into_iter()
            .map(|(dyno, text)| format!("{dyno}: {text}"))
            .collect()
    }

    #[test]
    fn a_first_read_writes_no_lines() {
        let tasks = [task("a", "s", 1, 1, "running", "running")];
        let services = [service("s", "web", 1, None)];
        let read = dynos_from_tasks(&services, &tasks, &HashMap::new());
        let lines = lifecycle_lines(
            &TaskSnapshot::default(),
            &tasks,
            &read,
            Duration::from_secs(60),
        );
        assert!(lines.is_empty());
        assert_eq!(states(&tasks).get("a").map(String::as_str), Some("running"));
    }

    #[test]
    fn a_new_task_that_runs_starts_and_comes_up() {
        let tasks = [
            task("a", "s", 1, 1, "running", "running"),
            task("b", "s", 2, 1, "running", "running"),
        ];
        assert_eq!(
            lines_after(&[("b", "starting")], &tasks),
            [
                "web.1: Starting process with command `rackup`",
                "web.1: State changed from starting to up",
                "web.2: State changed from starting to up",
            ]
        );
    }

    #[test]
    fn an_exit_is_a_crash_with_its_status() {
        let tasks = [with(
            "a",
            "s",
            1,
            1,
            "shutdown",
            "failed",
            json!({ "Err": "task: non-zero exit (3)" }),
        )];
        assert_eq!(
            lines_after(&[("a", "running")], &tasks),
            [
                "web.1: Process exited with status 3",
                "web.1: State changed from up to crashed",
            ]
        );
    }

    #[test]
    fn a_web_task_that_never_listens_is_a_boot_timeout() {
        let tasks = [with(
            "a",
            "s",
            1,
            1,
            "shutdown",
            "failed",
            json!({
                "Err": "task: non-zero exit (137): dockerexec: unhealthy container",
                "ContainerStatus": { "ExitCode": 137 },
            }),
        )];
        assert_eq!(
            lines_after(&[("a", "starting")], &tasks),
            [
                "web.1: Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 60 seconds of launch",
                "web.1: Process exited with status 137",
                "web.1: State changed from starting to crashed",
            ]
        );
    }

    #[test]
    fn a_rejected_task_could_not_start() {
        let tasks = [with(
            "a",
            "s",
            1,
            1,
            "shutdown",
            "rejected",
            json!({ "Err": "No such image: crew/shop:v3" }),
        )];
        assert_eq!(
            lines_after(&[("a", "pending")], &tasks),
            [
                "web.1: Could not start: No such image: crew/shop:v3",
                "web.1: State changed from starting to crashed",
            ]
        );
    }

    #[test]
    fn a_running_task_shut_down_goes_down() {
        let tasks = [
            task("a", "s", 1, 1, "shutdown", "shutdown"),
            // Never ran: no line.
            task("b", "s", 2, 1, "shutdown", "shutdown"),
        ];
        assert_eq!(
            lines_after(&[("a", "running"), ("b", "pending")], &tasks),
            ["web.1: State changed from up to down"]
        );
    }

    #[test]
    fn unchanged_ended_and_one_off_tasks_write_nothing() {
        let tasks = [
            task("a", "s", 1, 1, "running", "running"),
            task("b", "s", 2, 1, "shutdown", "shutdown"),
            task("j", "j", 1, 1, "running", "running"),
        ];
        assert!(lines_after(&[("a", "running"), ("b", "failed")], &tasks).is_empty());
    }

    #[test]
    fn the_exit_code_comes_from_the_container_or_the_error() {
        let code = |state: &str, status: Value| exit_code(&with("a", "s", 1, 1, "", state, status));
        assert_eq!(
            code("failed", json!({ "ContainerStatus": { "ExitCode": 2 } })),
            2
        );
        assert_eq!(
            code("failed", json!({ "Err": "task: non-zero exit (4)" })),
            4
        );
        assert_eq!(
            code("complete", json!({ "ContainerStatus": { "ExitCode": 0 } })),
            0
        );
        assert_eq!(code("complete", json!({})), 0);
        assert_eq!(code("rejected", json!({})), 127);
        assert_eq!(code("shutdown", json!({})), 137);
    }

    #[test]
    fn a_services_command_is_its_types_in_the_release() {
        let release = ReleaseSpec {
            app: "shop".into(),
            version: 3,
            types: vec![ReleaseType {
                name: "web".into(),
                command: "rackup".into(),
                size: None,
            }],
            env: Vec::new(),
            slug_archive: PathBuf::new(),
            slug_dir: PathBuf::new(),
            command_prefix: None,
        };
        let web = service("s", "web", 1, None);
        assert_eq!(command_of(&web, Some(&release)), "rackup");
        assert_eq!(command_of(&web, None), "");
        let one_off = service("j", RUN_TYPE, 1, Some("run.2"));
        assert_eq!(command_of(&one_off, Some(&release)), "(run.2)");
    }

    #[test]
    fn task_states_map_to_herokus() {
        assert_eq!(dyno_state("running", false), DynoState::Up);
        assert_eq!(dyno_state("preparing", false), DynoState::Starting);
        assert_eq!(dyno_state("failed", false), DynoState::Crashed);
        assert_eq!(dyno_state("complete", false), DynoState::Crashed);
        assert_eq!(dyno_state("complete", true), DynoState::Complete);
        assert_eq!(dyno_state("shutdown", false), DynoState::Down);
    }

    #[test]
    fn times_keep_their_nanoseconds() {
        let t = parse_time("2026-11-27T20:11:16.324106628Z").expect("a time");
        let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
        assert_eq!(d.subsec_nanos(), 324_106_628);
    }
}
