//! A release as Kubernetes objects, after research §4.2.
//!
//! - **Namespace** `crew-APP`: deleting the app is deleting it, and quotas or
//!   RBAC per app come with it.
//! - **Secret** `APP-config-vN`, immutable, one per release: a Deployment's pod
//!   template names its release's Secret, so a rollback is re-applying the old
//!   template, and nothing can change a running release's config underneath it.
//! - **Deployment** `APP-TYPE` per process type. Its selector is the app and the
//!   type only, since a selector is immutable and a release changes with every
//!   deploy; the release is a label of the pod template, so every release rolls
//!   the pods. `web` rolls with surge and no unavailability (new pods must be
//!   ready, which the TCP probe on `PORT` says, before old ones go); other types
//!   are `Recreate`, so that two releases' workers never run side by side. Every
//!   pod has Heroku's 30 s between SIGTERM and SIGKILL.
//! - **Service** `APP-web` in front of the web pods, for crew's router.
//! - **Job** for a one-off (`crew run`): never retried, with a deadline, and
//!   removed a while after it finishes.
//!
//! Dynos get `PORT`, `HOME=/app`, and `DYNO` and `PS` from the pod's name (the
//! downward API: Deployments have no ordinals, so there is no `web.1` to give),
//! then the config vars from the Secret. `env` wins over `envFrom` in
//! Kubernetes, so a config var can never move `PORT` away from the probe. Pods
//! get no service-link variables (`APP_WEB_PORT` and kin, which a Heroku dyno
//! never sees) and no API token (a dyno has no business with the cluster's API).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, Namespace, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret,
    SecretEnvSource, Service, ServicePort, ServiceSpec, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::names::type_label;
use crate::render::{self, to_value};
use crate::{ClusterError, DYNO_UID, PORT, Process, Release, STOP_GRACE_SECONDS, dyno_command};

/// The label every object of an app carries: which app it is part of.
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// The label that says crew made an object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The process type of a Deployment and of its pods (`web`, or `run` for one-offs).
pub const PROCESS_TYPE: &str = "crew/process-type";
/// The release of a Secret and of the pods made from it (`v3`).
pub const RELEASE: &str = "crew/release";
/// `kubectl rollout history` shows this annotation as the change's cause.
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The named port of web containers, which the probe and the Service use.
const HTTP: &str = "http";

/// `crew-APP`.
pub fn namespace_name(app: &str) -> String {
    format!("crew-{app}")
}

/// `APP-config-vN`.
pub fn secret_name(release: &Release) -> String {
    format!("{}-config-v{}", release.app, release.version)
}

/// The objects of one release, in the order they must be applied: the
/// namespace first, the Secret before the pods that read it.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub namespace: Namespace,
    pub secret: Secret,
    pub deployments: Vec<Deployment>,
    /// Only when the release has a `web` type.
    pub service: Option<Service>,
}

/// One object as canonical JSON, with what a file name needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `Deployment`.
    pub kind: String,
    /// `shop-web`.
    pub name: String,
    pub value: Value,
}

impl Manifests {
    /// Every object, in apply order, as canonical values.
    pub fn objects(&self) -> Result<Vec<Object>, ClusterError> {
        let mut objects = vec![
            object("Namespace", &self.namespace.metadata, &self.namespace)?,
            object("Secret", &self.secret.metadata, &self.secret)?,
        ];
        for deployment in &self.deployments {
            objects.push(object("Deployment", &deployment.metadata, deployment)?);
        }
        if let Some(service) = &self.service {
            objects.push(object("Service", &service.metadata, service)?);
        }
        Ok(objects)
    }
}

fn object(
    kind: &str,
    metadata: &ObjectMeta,
    resource: &impl serde::Serialize,
) -> Result<Object, ClusterError> {
    let name = metadata
        .name
        .clone()
        .or_else(|| metadata.generate_name.clone())
        .unwrap_or_default();
    Ok(Object {
        kind: kind.to_string(),
        value: to_value(resource, &format!("{kind} {name}"))?,
        name,
    })
}

/// The objects as one JSON `List`, which `kubectl apply -f` takes whole.
pub fn list(objects: &[Object]) -> String {
    render::json(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects.iter().map(|o| o.value.clone()).collect::<Vec<_>>(),
    }))
}

/// The objects as a YAML stream, one document each.
pub fn yaml(objects: &[Object]) -> String {
    let values: Vec<Value> = objects.iter().map(|o| o.value.clone()).collect();
    render::yaml_documents(&values)
}

/// Everything a release needs on a cluster.
pub fn manifests(release: &Release) -> Result<Manifests, ClusterError> {
    release.validate()?;
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace_name(&release.app)),
            labels: Some(app_labels(release)),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let mut secret_labels = app_labels(release);
    secret_labels.insert(RELEASE.to_string(), release.tag());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(release)),
            namespace: Some(namespace_name(&release.app)),
            labels: Some(secret_labels),
            ..ObjectMeta::default()
        },
        immutable: Some(true),
        type_: Some("Opaque".to_string()),
        // stringData, not data: the manifests stay readable, and the API server
        // stores it as data all the same.
        string_data: Some(release.config.clone()),
        ..Secret::default()
    };
    let deployments = release
        .processes
        .iter()
        .map(|process| deployment(release, process))
        .collect::<Result<Vec<_>, _>>()?;
    let service = match release.processes.iter().find(|p| p.name == "web") {
        Some(web) => Some(service(release, web)?),
        None => None,
    };
    Ok(Manifests {
        namespace,
        secret,
        deployments,
        service,
    })
}

/// `part-of` and `managed-by`.
fn app_labels(release: &Release) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PART_OF.to_string(), release.app.clone()),
        (MANAGED_BY.to_string(), "crew".to_string()),
    ])
}

/// What selects one type's pods: the app and the type, never the release.
fn selector(release: &Release, label: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PART_OF.to_string(), release.app.clone()),
        (PROCESS_TYPE.to_string(), label.to_string()),
    ])
}

fn deployment(release: &Release, process: &Process) -> Result<Deployment, ClusterError> {
    let label = type_label(&process.name)?;
    let name = format!("{}-{label}", release.app);
    let web = process.name == "web";
    let mut labels = app_labels(release);
    labels.insert(PROCESS_TYPE.to_string(), label.clone());
    let mut pod_labels = selector(release, &label);
    pod_labels.insert(RELEASE.to_string(), release.tag());
    let strategy = if web {
        DeploymentStrategy {
            type_: Some("RollingUpdate".to_string()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::String("25%".to_string())),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        }
    } else {
        DeploymentStrategy {
            type_: Some("Recreate".to_string()),
            rolling_update: None,
        }
    };
    let replicas = i32::try_from(process.quantity).map_err(|_| {
        ClusterError::Invalid(format!(
            "{} dynos of {} is more than Kubernetes can count",
            process.quantity, process.name
        ))
    })?;
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace_name(&release.app)),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                CHANGE_CAUSE.to_string(),
                change_cause(release),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector(release, &label)),
                ..LabelSelector::default()
            },
            strategy: Some(strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(
                    release,
                    &label,
                    &process.command,
                    web,
                    process.memory_bytes,
                )),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// `crew v3: Deploy 1a2b3c4`, or just the release when it has no description.
fn change_cause(release: &Release) -> String {
    if release.description.trim().is_empty() {
        format!("crew {}", release.tag())
    } else {
        format!("crew {}: {}", release.tag(), release.description.trim())
    }
}

/// The pod of one dyno: one container named after its type.
fn pod_spec(
    release: &Release,
    container: &str,
    command: &str,
    web: bool,
    memory_bytes: Option<u64>,
) -> PodSpec {
    let from_pod_name = || {
        Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        })
    };
    let env = vec![
        EnvVar {
            name: "DYNO".to_string(),
            value_from: from_pod_name(),
            ..EnvVar::default()
        },
        EnvVar {
            name: "HOME".to_string(),
            value: Some("/app".to_string()),
            ..EnvVar::default()
        },
        EnvVar {
            name: "PORT".to_string(),
            value: Some(PORT.to_string()),
            ..EnvVar::default()
        },
        EnvVar {
            name: "PS".to_string(),
            value_from: from_pod_name(),
            ..EnvVar::default()
        },
    ];
    let (ports, readiness_probe) = if web {
        (
            Some(vec![ContainerPort {
                name: Some(HTTP.to_string()),
                container_port: i32::from(PORT),
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            }]),
            // A web dyno is up once its PORT accepts TCP, as crew's own rule
            // says; checked often so that a rolling deploy moves quickly.
            Some(Probe {
                tcp_socket: Some(TCPSocketAction {
                    port: IntOrString::String(HTTP.to_string()),
                    ..TCPSocketAction::default()
                }),
                period_seconds: Some(2),
                timeout_seconds: Some(1),
                ..Probe::default()
            }),
        )
    } else {
        (None, None)
    };
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(i64::from(STOP_GRACE_SECONDS)),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(i64::from(DYNO_UID)),
            run_as_group: Some(i64::from(DYNO_UID)),
            run_as_non_root: Some(true),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: container.to_string(),
            image: Some(release.image.clone()),
            command: Some(dyno_command(command)),
            working_dir: Some("/app".to_string()),
            env: Some(env),
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret_name(release),
                    ..SecretEnvSource::default()
                }),
                ..EnvFromSource::default()
            }]),
            ports,
            readiness_probe,
            // The dyno size's memory, requested and limited alike, as a dyno
            // has its quota and no more.
            resources: memory_bytes.map(|bytes| {
                let quantity = Quantity(bytes.to_string());
                ResourceRequirements {
                    limits: Some([("memory".to_string(), quantity.clone())].into()),
                    requests: Some([("memory".to_string(), quantity)].into()),
                    ..ResourceRequirements::default()
                }
            }),
            ..Container::default()
        }],
        ..PodSpec::default()
    }
}

fn service(release: &Release, web: &Process) -> Result<Service, ClusterError> {
    let label = type_label(&web.name)?;
    let mut labels = app_labels(release);
    labels.insert(PROCESS_TYPE.to_string(), label.clone());
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(format!("{}-{label}", release.app)),
            namespace: Some(namespace_name(&release.app)),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector(release, &label)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP.to_string()),
                port: 80,
                target_port: Some(IntOrString::String(HTTP.to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// How a one-off runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Whether a terminal will be attached: the container then gets stdin and
    /// a TTY.
    pub attach: bool,
    /// The longest it may run; Dokku's default is a day.
    pub deadline_seconds: u32,
    /// How long a finished Job (and its log) stays for someone to read.
    pub keep_seconds: u32,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            attach: false,
            deadline_seconds: 24 * 3600,
            keep_seconds: 3600,
        }
    }
}

/// The Job of a one-off dyno running `command` on `release`. Its name is
/// generated by the cluster (`APP-run-x7k2p`), so it is made with `kubectl
/// create`, never `apply`; it is never retried, since a one-off that failed
/// must say so rather than run twice.
pub fn run_job(
    release: &Release,
    command: &str,
    options: &RunOptions,
) -> Result<Job, ClusterError> {
    release.validate()?;
    if command.trim().is_empty() {
        return Err(ClusterError::Invalid(
            "a one-off needs a command".to_string(),
        ));
    }
    let mut labels = app_labels(release);
    labels.insert(PROCESS_TYPE.to_string(), "run".to_string());
    labels.insert(RELEASE.to_string(), release.tag());
    let mut pod = pod_spec(release, "run", command, false, None);
    pod.restart_policy = Some("Never".to_string());
    if options.attach {
        for container in &mut pod.containers {
            container.stdin = Some(true);
            container.stdin_once = Some(true);
            container.tty = Some(true);
        }
    }
    Ok(Job {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-run-", release.app)),
            namespace: Some(namespace_name(&release.app)),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(i64::from(options.deadline_seconds)),
            ttl_seconds_after_finished: Some(
                i32::try_from(options.keep_seconds).unwrap_or(i32::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// A Job as an [`Object`].
pub fn job_object(job: &Job) -> Result<Object, ClusterError> {
    object("Job", &job.metadata, job)
}
