//! Pods as dynos: the state each pod is in, in Heroku's words, and the
//! `web.1` names that Deployments do not give.
//!
//! A Deployment's pods are named by the cluster (`shop-web-7d9c5-x2k8q`) and
//! have no ordinal, so crew numbers them: per process type, the living pods by
//! age (oldest is `.1`), then the ones being deleted after them, so that during a
//! rolling deploy the numbers the formation counts are the pods that stay. The
//! numbers are a view, not an identity: when `web.1` goes, `web.2` becomes
//! `web.1`. One-offs carry their `run.N` as a label, set when crew made them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crew_cluster::PORT;
use crew_cluster::kubernetes::PROCESS_TYPE;
use crew_engine::{DynoInfo, DynoState};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The label that names a one-off dyno (`run.3`): its pod's name is the
/// cluster's, and a Job has no ordinal either.
pub const DYNO: &str = "crew/dyno";
/// The annotation that keeps a one-off's command as typed, for `ps`; the
/// container's argv has the profile prelude around it.
pub const COMMAND: &str = "crew/command";
/// The annotation that marks an attached one-off's pod: its output goes to
/// the client attached to it, not to the app's log, as crew's own attached
/// one-offs do.
pub const ATTACHED: &str = "crew/attached";

/// The label the Job controller puts on its pods (the older `job-name` too).
const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// Container waiting reasons that do not pass by themselves: the kubelet
/// retries, but the dyno will not come up without a change, so `ps` says
/// crashed rather than leaving it `starting` forever.
const STUCK: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What `ps` knows about a process type from the applied release.
#[derive(Debug, Clone, Default)]
pub struct TypeInfo {
    /// The Procfile's name (`release_phase`), where the label is `release-phase`.
    pub name: String,
    pub command: String,
    pub size: Option<String>,
}

/// One pod as a dyno, with what Kubernetes adds to crew's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDyno {
    pub info: DynoInfo,
    /// The pod's name on the cluster.
    pub pod: String,
    /// The pod's `metadata.uid`: the same pod across polls, whatever its number.
    pub uid: String,
    /// The node it was scheduled on, once it was.
    pub node: Option<String>,
    /// A one-off's Job, which owns the pod.
    pub job: Option<String>,
    /// How far its container got, which says whether it has a log to read.
    pub logs: LogState,
    /// An attached one-off, whose output is not the log's.
    pub attached: bool,
    /// A one-off's exit code, once its container ended.
    pub exit_code: Option<i32>,
}

/// Whether a pod's log can be read, and whether more will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogState {
    /// Nothing ran yet: the kubelet answers 400 for the log.
    None,
    /// A container runs: follow it.
    Running,
    /// The container ran and ended, `restarts` times restarted; its last
    /// run's log can be read once.
    Ended { restarts: u32 },
}

/// Every pod as a dyno, in the release's type order (`types` maps a type's
/// label to what the release says of it), then one-offs, each type by number.
pub fn dynos(pods: &[Pod], types: &[(String, TypeInfo)]) -> Vec<PodDyno> {
    let mut by_label: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        let label = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(PROCESS_TYPE))
            .cloned()
            .unwrap_or_default();
        if label.is_empty() {
            // Not one of crew's dynos, whatever put it in the namespace.
            continue;
        }
        by_label.entry(label).or_default().push(pod);
    }
    let mut out = Vec::new();
    for (label, mut group) in by_label {
        let info = types
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| TypeInfo {
                name: label.clone(),
                ..TypeInfo::default()
            });
        group.sort_by(|a, b| {
            let key = |p: &Pod| {
                (
                    p.metadata.deletion_timestamp.is_some(),
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        // One-offs keep the number crew gave them; one without (made by
        // someone else) is numbered after the highest.
        let mut next = if label == "run" {
            group
                .iter()
                .filter_map(|p| run_number(p))
                .max()
                .unwrap_or(0)
                + 1
        } else {
            1
        };
        for pod in group {
            let number = match run_number(pod).filter(|_| label == "run") {
                Some(n) => n,
                None => {
                    next += 1;
                    next - 1
                }
            };
            out.push(dyno(pod, &info, number));
        }
    }
    let rank = |d: &PodDyno| {
        types
            .iter()
            .position(|(_, t)| t.name == d.info.process_type)
            .unwrap_or(usize::MAX)
    };
    out.sort_by(|a, b| {
        (rank(a), &a.info.process_type, a.info.number).cmp(&(
            rank(b),
            &b.info.process_type,
            b.info.number,
        ))
    });
    out
}

/// `3` from the label `crew/dyno=run.3`.
fn run_number(pod: &Pod) -> Option<u32> {
    pod.metadata
        .labels
        .as_ref()?
        .get(DYNO)?
        .strip_prefix("run.")?
        .parse()
        .ok()
}

fn dyno(pod: &Pod, info: &TypeInfo, number: u32) -> PodDyno {
    let one_off = info.name == "run";
    let (state, since) = state(pod, one_off);
    let statuses = container_statuses(pod);
    let restarts: u32 = statuses
        .iter()
        .map(|s| u32::try_from(s.restart_count).unwrap_or(0))
        .sum();
    let command = if one_off {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(COMMAND))
            .cloned()
            .unwrap_or_default()
    } else {
        info.command.clone()
    };
    PodDyno {
        info: DynoInfo {
            name: format!("{}.{number}", info.name),
            process_type: info.name.clone(),
            number,
            state,
            since,
            // A pid on another machine means nothing here.
            pid: None,
            // Every dyno listens on the same PORT inside its own pod.
            port: Some(PORT),
            command,
            restarts,
            // The kubelet's backoff is its own and not in the pod's status.
            restart_in: None,
            size: info.size.clone(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            // Pods carry no release label yet: the platform names the current one.
            release: None,
        },
        pod: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        job: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(JOB_NAME).or_else(|| l.get("job-name")))
            .cloned(),
        logs: log_state(pod),
        attached: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ATTACHED))
            .is_some_and(|v| v == "true"),
        exit_code: terminated(pod),
    }
}

fn container_statuses(pod: &Pod) -> &[ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[])
}

fn time(t: Option<&Time>) -> Option<SystemTime> {
    t.map(|t| SystemTime::from(t.0))
}

/// The pod's state as crew names it, and since when, after research §4.2:
///
/// | pod | dyno |
/// |---|---|
/// | `deletionTimestamp` set | down (it is stopping; crew has no such state) |
/// | Pending, or waiting for the image or the container | starting |
/// | waiting in CrashLoopBackOff, or stuck (bad image, bad config) | crashed |
/// | Running and Ready | up |
/// | Running, not Ready (web before its PORT answers) | starting |
/// | Succeeded | complete |
/// | Failed | crashed; a one-off's is complete, as crew's own one-offs end |
/// | Unknown (its node is unreachable) | down |
pub fn state(pod: &Pod, one_off: bool) -> (DynoState, SystemTime) {
    let created = time(pod.metadata.creation_timestamp.as_ref());
    let fallback = created.unwrap_or_else(SystemTime::now);
    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        // The timestamp is when the grace period ends; the stop began a grace
        // period earlier, but the end is what a reader waits for.
        return (DynoState::Down, SystemTime::from(deleted.0));
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let statuses = container_statuses(pod);
    let ended_at = statuses
        .iter()
        .filter_map(|s| {
            let terminated = s
                .state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .or_else(|| s.last_state.as_ref().and_then(|l| l.terminated.as_ref()))?;
            time(terminated.finished_at.as_ref())
        })
        .max();
    let stuck = statuses.iter().any(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            .is_some_and(|r| STUCK.contains(&r))
    });
    let ready_since = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "True")
        .map(|c| time(c.last_transition_time.as_ref()).unwrap_or(fallback));
    let started = time(status.and_then(|s| s.start_time.as_ref())).unwrap_or(fallback);
    match phase {
        "Succeeded" => (DynoState::Complete, ended_at.unwrap_or(fallback)),
        "Failed" if one_off && ended_at.is_some() => {
            (DynoState::Complete, ended_at.unwrap_or(fallback))
        }
        "Failed" => (DynoState::Crashed, ended_at.unwrap_or(fallback)),
        "Running" | "Pending" if stuck => (DynoState::Crashed, ended_at.unwrap_or(started)),
        "Running" => match ready_since {
            Some(since) => (DynoState::Up, since),
            None => (DynoState::Starting, started),
        },
        "Pending" => (DynoState::Starting, fallback),
        _ => (DynoState::Down, fallback),
    }
}

/// Why a pod's container waits in a state that does not pass by itself
/// (`ImagePullBackOff: …`), if it does.
pub(crate) fn stuck(pod: &Pod) -> Option<String> {
    container_statuses(pod).iter().find_map(|s| {
        let waiting = s.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        if !STUCK.contains(&reason) {
            return None;
        }
        Some(match waiting.message.as_deref() {
            Some(message) => format!("{reason}: {message}"),
            None => reason.to_string(),
        })
    })
}

fn log_state(pod: &Pod) -> LogState {
    let statuses = container_statuses(pod);
    if statuses
        .iter()
        .any(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
    {
        return LogState::Running;
    }
    let ended = statuses.iter().any(|s| {
        s.state.as_ref().is_some_and(|st| st.terminated.is_some())
            || s.last_state
                .as_ref()
                .is_some_and(|st| st.terminated.is_some())
    });
    if ended {
        LogState::Ended {
            restarts: statuses
                .iter()
                .map(|s| u32::try_from(s.restart_count).unwrap_or(0))
                .sum(),
        }
    } else {
        LogState::None
    }
}

/// The container of a one-off's pod, as `crew_cluster` names it.
pub(crate) const CONTAINER: &str = "run";

/// The one-off container's exit code, once it terminated.
pub(crate) fn terminated(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == CONTAINER)
        .and_then(|s| s.state.as_ref()?.terminated.as_ref())
        .map(|t| t.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("a pod")
    }

    fn types() -> Vec<(String, TypeInfo)> {
        vec![
            (
                "web".to_string(),
                TypeInfo {
                    name: "web".to_string(),
                    command: "python3 web.py".to_string(),
                    size: None,
                },
            ),
            (
                "release-phase".to_string(),
                TypeInfo {
                    name: "release_phase".to_string(),
                    command: "true".to_string(),
                    size: Some("standard-2x".to_string()),
                },
            ),
        ]
    }

    fn web(name: &str, created: &str, extra: serde_json::Value) -> Pod {
        let mut value = serde_json::json!({
            "metadata": {
                "name": name,
                "uid": format!("uid-{name}"),
                "creationTimestamp": created,
                "labels": {"crew/process-type": "web"},
            },
            "spec": {"containers": [{"name": "web"}], "nodeName": "node-a"},
            "status": {"phase": "Running", "startTime": created},
        });
        merge(&mut value, extra);
        pod(value)
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    #[test]
    fn numbers_follow_age_and_terminating_pods_come_last() {
        let pods = vec![
            web("c", "2026-01-01T00:00:03Z", serde_json::json!({})),
            web(
                "a",
                "2026-01-01T00:00:01Z",
                serde_json::json!({"metadata": {"deletionTimestamp": "2026-01-01T00:01:00Z"}}),
            ),
            web("b", "2026-01-01T00:00:02Z", serde_json::json!({})),
        ];
        let names: Vec<(String, String)> = dynos(&pods, &types())
            .into_iter()
            .map(|d| (d.info.name, d.pod))
            .collect();
        assert_eq!(
            names,
            [
                ("web.1".to_string(), "b".to_string()),
                ("web.2".to_string(), "c".to_string()),
                ("web.3".to_string(), "a".to_string()),
            ]
        );
    }

    #[test]
    fn a_type_label_maps_back_to_the_procfile_name_and_its_size() {
        let pods = vec![pod(serde_json::json!({
            "metadata": {"name": "p", "labels": {"crew/process-type": "release-phase"}},
            "status": {"phase": "Pending"},
        }))];
        let d = &dynos(&pods, &types())[0];
        assert_eq!(d.info.name, "release_phase.1");
        assert_eq!(d.info.size.as_deref(), Some("standard-2x"));
        assert_eq!(d.info.state, DynoState::Starting);
        assert_eq!(d.logs, LogState::None);
    }

    #[test]
    fn pods_without_a_process_type_are_not_dynos() {
        let pods = vec![pod(serde_json::json!({"metadata": {"name": "stray"}}))];
        assert!(dynos(&pods, &types()).is_empty());
    }

    #[test]
    fn unknown_phase_is_down() {
        let p = web(
            "a",
            "2026-01-01T00:00:01Z",
            serde_json::json!({"status": {"phase": "Unknown"}}),
        );
        assert_eq!(state(&p, false).0, DynoState::Down);
    }

    #[test]
    fn a_failed_one_off_that_ran_is_complete_and_one_that_never_ran_crashed() {
        let ran = pod(serde_json::json!({
            "metadata": {"name": "r"},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "run", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 3, "finishedAt": "2026-01-01T00:00:09Z"}},
            }]},
        }));
        assert_eq!(state(&ran, true).0, DynoState::Complete);
        assert_eq!(state(&ran, false).0, DynoState::Crashed);
        let never =
            pod(serde_json::json!({"metadata": {"name": "r"}, "status": {"phase": "Failed"}}));
        assert_eq!(state(&never, true).0, DynoState::Crashed);
    }

    #[test]
    fn a_stuck_image_pull_is_crashed_not_starting() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "web", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff"}},
            }]},
        }));
        assert_eq!(state(&p, false).0, DynoState::Crashed);
    }
}
