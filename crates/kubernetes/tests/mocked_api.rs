//! The Kubernetes placement against a scripted API server.
//!
//! These tests are **our reading of the Kubernetes API, not evidence that a
//! real cluster behaves so**. A kube `Client` runs over a `tower_test` mock;
//! each test's script takes the requests the placement sends, checks the verb,
//! path, query, content type and body against what the API documentation and
//! kubectl's behaviour lead us to expect, and answers with canned JSON that we
//! wrote. What a real API server does with them (server-side apply's field
//! ownership, the scale subresource, rollouts, the Job controller, namespace
//! finalisation) is not exercised here; the live test does that when a
//! kubeconfig is given.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crew_engine::{DynoState, Placement, ReleaseSpec, ReleaseType, RunRequest, WebBackend};
use crew_kubernetes::{KubernetesConfig, KubernetesPlacement, RESTARTED_AT};
use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange, Quantity};
use crew_runtime::DynoInput;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock::{Handle, SendResponse};

type Mock = Handle<Request<Body>, Response<Body>>;

/// One request as the script sees it.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: Value,
}

impl Seen {
    /// Checks the verb and the path, and that the query is exactly `query`.
    fn expect(&self, method: &str, path: &str, query: &[(&str, &str)]) {
        assert_eq!((self.method.as_str(), self.path.as_str()), (method, path));
        let want: BTreeMap<String, String> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(self.query, want, "query of {method} {path}");
    }

    fn expect_apply(&self, path: &str) {
        self.expect(
            "PATCH",
            path,
            &[("fieldManager", "crew"), ("force", "true")],
        );
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "server-side apply of {path}"
        );
    }
}

fn mock() -> (Client, Mock) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn config() -> KubernetesConfig {
    KubernetesConfig {
        registry: Some("registry.example:5000".to_string()),
        // The log task's first poll is an hour away: these tests script every
        // request, and a poll would come in between.
        poll_interval: Duration::from_secs(3600),
        ..KubernetesConfig::default()
    }
}

fn placement(client: Client, config: KubernetesConfig) -> KubernetesPlacement {
    let (logs, _) = mpsc::channel(16);
    KubernetesPlacement::new(client, "shop", config, logs).expect("a placement")
}

async fn next(mock: &mut Mock) -> (Seen, SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(10), mock.next_request())
        .await
        .expect("a request within 10s")
        .expect("the client is still there");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("the body");
    let query = common::query_pairs(parts.uri.query());
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        },
    };
    (seen, send)
}

fn reply(send: SendResponse<Response<Body>>, status: u16, body: Value) {
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("a response");
    send.send_response(response);
}

fn not_found(send: SendResponse<Response<Body>>, what: &str) {
    reply(
        send,
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
    );
}

fn success(send: SendResponse<Response<Body>>) {
    reply(
        send,
        200,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    );
}

fn spec(version: u32, types: &[(&str, &str)]) -> ReleaseSpec {
    ReleaseSpec {
        app: "shop".to_string(),
        version,
        types: types
            .iter()
            .map(|(name, command)| ReleaseType {
                name: name.to_string(),
                command: command.to_string(),
                size: None,
            })
            .collect(),
        env: vec![
            ("PATH".to_string(), "/home/server/bin:/usr/bin".to_string()),
            (
                "HOME".to_string(),
                "/srv/crew/apps/shop/slugs/x".to_string(),
            ),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("SECRET".to_string(), "s3cr$t {{x}}".to_string()),
        ],
        slug_archive: PathBuf::new(),
        slug_dir: PathBuf::new(),
        command_prefix: None,
    }
}

fn formation(entries: &[(&str, u32)]) -> Formation {
    let mut f = Formation::new(entries.iter().map(|(n, _)| n.to_string()), 0);
    let changes: Vec<FormationChange> = entries
        .iter()
        .map(|(n, q)| FormationChange {
            process_type: n.to_string(),
            quantity: Quantity::Set(*q),
            size: None,
        })
        .collect();
    f.apply(&changes).expect("a formation");
    f
}

const NS: &str = "/api/v1/namespaces/crew-shop";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/crew-shop/deployments";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/crew-shop/endpointslices";

/// Answers the list of the app's release Secrets after an apply with
/// `names`.
async fn script_secrets(mock: &mut Mock, names: &[&str]) {
    let (seen, send) = next(mock).await;
    seen.expect(
        "GET",
        &format!("{NS}/secrets"),
        &[(
            "labelSelector",
            "app.kubernetes.io/part-of=shop,app.kubernetes.io/managed-by=crew,crew/release",
        )],
    );
    let items: Vec<Value> = names
        .iter()
        .map(|n| json!({"metadata": {"name": n, "namespace": "crew-shop"}, "immutable": true}))
        .collect();
    reply(
        send,
        200,
        json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": items}),
    );
}

/// Answers the read of the web Service's EndpointSlices that ends an apply.
async fn script_slices(mock: &mut Mock, items: Value) {
    let (seen, send) = next(mock).await;
    seen.expect(
        "GET",
        SLICES,
        &[("labelSelector", "kubernetes.io/service-name=shop-web")],
    );
    reply(
        send,
        200,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
               "metadata": {}, "items": items}),
    );
}

/// Answers the apply of v3 with `web=2 worker=0`, where the cluster also has
/// the Deployment of a `clock` type that v3 dropped, checking every request.
async fn script_apply(mock: &mut Mock) {
    let (seen, send) = next(mock).await;
    seen.expect_apply(NS);
    assert_eq!(seen.body["kind"], "Namespace");
    assert_eq!(seen.body["metadata"]["name"], "crew-shop");
    assert_eq!(
        seen.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "crew"
    );
    reply(send, 200, seen.body);

    let (seen, send) = next(mock).await;
    seen.expect_apply(&format!("{NS}/secrets/shop-config-v3"));
    assert_eq!(seen.body["kind"], "Secret");
    assert_eq!(seen.body["immutable"], true);
    assert_eq!(
        seen.body["stringData"],
        json!({"LANG": "C.UTF-8", "SECRET": "s3cr$t {{x}}"}),
        "the server's HOME and PATH stay on the server"
    );
    reply(send, 200, seen.body);

    for (name, replicas) in [("shop-web", 2), ("shop-worker", 0)] {
        let (seen, send) = next(mock).await;
        seen.expect_apply(&format!("{DEPLOYMENTS}/{name}"));
        assert_eq!(seen.body["kind"], "Deployment");
        assert_eq!(seen.body["apiVersion"], "apps/v1");
        assert_eq!(seen.body["metadata"]["namespace"], "crew-shop");
        assert_eq!(seen.body["spec"]["replicas"], replicas, "SSA owns replicas");
        let container = &seen.body["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example:5000/crew/shop:v3");
        assert_eq!(
            container["envFrom"][0]["secretRef"]["name"],
            "shop-config-v3"
        );
        // No size given: standard-1x's 512 MiB, requested and limited.
        assert_eq!(
            container["resources"],
            json!({"limits": {"memory": "536870912"}, "requests": {"memory": "536870912"}})
        );
        reply(send, 200, seen.body);
    }

    let (seen, send) = next(mock).await;
    seen.expect_apply(&format!("{NS}/services/shop-web"));
    assert_eq!(seen.body["kind"], "Service");
    reply(send, 200, seen.body);

    let (seen, send) = next(mock).await;
    seen.expect(
        "GET",
        DEPLOYMENTS,
        &[(
            "labelSelector",
            "app.kubernetes.io/part-of=shop,app.kubernetes.io/managed-by=crew",
        )],
    );
    let item = |name: &str| json!({"metadata": {"name": name, "namespace": "crew-shop"}});
    reply(
        send,
        200,
        json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
               "items": [item("shop-web"), item("shop-worker"), item("shop-clock")]}),
    );

    let (seen, send) = next(mock).await;
    seen.expect("DELETE", &format!("{DEPLOYMENTS}/shop-clock"), &[]);
    assert_eq!(seen.body["propagationPolicy"], "Background");
    success(send);
}

/// The apply of [`script_apply`], where v3's Secret is the only one and
/// there are no endpoints yet.
async fn script_apply_no_endpoints(mock: &mut Mock) {
    script_apply(mock).await;
    script_secrets(mock, &["shop-config-v3"]).await;
    script_slices(mock, json!([])).await;
}

async fn applied(mock: &mut Mock, placement: &KubernetesPlacement) {
    let apply = placement.apply(
        spec(
            3,
            &[("web", "python3 web.py"), ("worker", "python3 worker.py")],
        ),
        formation(&[("web", 2), ("worker", 0)]),
    );
    let ((), result) = tokio::join!(script_apply_no_endpoints(mock), apply);
    result.expect("apply");
}

#[tokio::test]
async fn apply_server_side_applies_every_object_and_deletes_a_dropped_type() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    applied(&mut mock, &placement).await;
}

#[tokio::test]
async fn a_release_without_web_deletes_the_web_service_and_a_missing_one_is_fine() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    let script = async {
        for path in [
            NS.to_string(),
            format!("{NS}/secrets/shop-config-v4"),
            format!("{DEPLOYMENTS}/shop-worker"),
        ] {
            let (seen, send) = next(&mut mock).await;
            seen.expect_apply(&path);
            reply(send, 200, seen.body);
        }
        let (seen, send) = next(&mut mock).await;
        seen.expect("DELETE", &format!("{NS}/services/shop-web"), &[]);
        not_found(send, "services \"shop-web\"");
        let (seen, send) = next(&mut mock).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("GET", DEPLOYMENTS)
        );
        reply(
            send,
            200,
            json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
                   "items": [{"metadata": {"name": "shop-worker"}}]}),
        );
        script_secrets(&mut mock, &["shop-config-v4"]).await;
        script_slices(&mut mock, json!([])).await;
    };
    let apply = placement.apply(
        spec(4, &[("worker", "python3 worker.py")]),
        formation(&[("worker", 1)]),
    );
    let ((), result) = tokio::join!(script, apply);
    result.expect("apply");
}

/// A pod spec that reads `secret` as the release's config.
fn reads(secret: &str) -> Value {
    json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": secret}}]}]})
}

/// After an apply, the app's release Secrets that nothing names are
/// deleted: not the current one, not one a Deployment, a ReplicaSet that
/// still wants pods, a Job or a pod names, and nothing that is not named as a
/// release Secret.
#[tokio::test]
async fn an_apply_deletes_the_release_secrets_nothing_uses() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    let list = |kind: &str, items: Value| json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {}, "items": items});
    let script = async {
        for path in [
            NS.to_string(),
            format!("{NS}/secrets/shop-config-v6"),
            format!("{DEPLOYMENTS}/shop-worker"),
        ] {
            let (seen, send) = next(&mut mock).await;
            seen.expect_apply(&path);
            reply(send, 200, seen.body);
        }
        let (seen, send) = next(&mut mock).await;
        seen.expect("DELETE", &format!("{NS}/services/shop-web"), &[]);
        not_found(send, "services \"shop-web\"");
        let (seen, send) = next(&mut mock).await;
        assert_eq!(seen.path, DEPLOYMENTS);
        reply(
            send,
            200,
            list("Deployment", json!([{"metadata": {"name": "shop-worker"}}])),
        );

        script_secrets(
            &mut mock,
            &[
                "shop-config-v1",
                "shop-config-v2",
                "shop-config-v3",
                "shop-config-v4",
                "shop-config-v5",
                "shop-config-v6",
                "shop-config-latest",
            ],
        )
        .await;
        // Every Deployment, ReplicaSet, Job and pod of the namespace.
        let (seen, send) = next(&mut mock).await;
        seen.expect("GET", DEPLOYMENTS, &[]);
        reply(
            send,
            200,
            list(
                "Deployment",
                json!([
                    {"metadata": {"name": "shop-worker"}, "spec": {
                        "selector": {}, "template": {"spec": reads("shop-config-v6")}}},
                    {"metadata": {"name": "not-crews"}, "spec": {
                        "selector": {}, "template": {"spec": reads("shop-config-v5")}}},
                ]),
            ),
        );
        let (seen, send) = next(&mut mock).await;
        seen.expect("GET", "/apis/apps/v1/namespaces/crew-shop/replicasets", &[]);
        reply(
            send,
            200,
            list(
                "ReplicaSet",
                json!([
                    {"metadata": {"name": "shop-worker-v1"}, "spec": {"replicas": 0,
                        "selector": {}, "template": {"spec": reads("shop-config-v1")}}},
                    {"metadata": {"name": "shop-worker-v4"}, "spec": {"replicas": 1,
                        "selector": {}, "template": {"spec": reads("shop-config-v4")}}},
                ]),
            ),
        );
        let (seen, send) = next(&mut mock).await;
        seen.expect("GET", "/apis/batch/v1/namespaces/crew-shop/jobs", &[]);
        reply(
            send,
            200,
            list(
                "Job",
                json!([
                    {"metadata": {"name": "shop-run-x"}, "spec": {"template": {"spec": reads("shop-config-v2")}}},
                ]),
            ),
        );
        let (seen, send) = next(&mut mock).await;
        seen.expect("GET", &format!("{NS}/pods"), &[]);
        reply(
            send,
            200,
            list(
                "Pod",
                json!([{"metadata": {"name": "shop-worker-v3-abc"}, "spec": reads("shop-config-v3")}]),
            ),
        );
        let (seen, send) = next(&mut mock).await;
        seen.expect("DELETE", &format!("{NS}/secrets/shop-config-v1"), &[]);
        success(send);

        script_slices(&mut mock, json!([])).await;
    };
    let apply = placement.apply(
        spec(6, &[("worker", "python3 worker.py")]),
        formation(&[("worker", 1)]),
    );
    let ((), result) = tokio::join!(script, apply);
    result.expect("apply");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), mock.next_request())
            .await
            .is_err(),
        "only v1 was deleted"
    );
}

/// Collecting is housekeeping: when the cluster refuses it, the apply still
/// succeeded, and the endpoints are read all the same.
#[tokio::test]
async fn a_refused_secret_collection_does_not_fail_the_apply() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    let script = async {
        script_apply(&mut mock).await;
        let (seen, send) = next(&mut mock).await;
        assert_eq!(seen.path, format!("{NS}/secrets"));
        reply(
            send,
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "secrets is forbidden: User \"crew\" cannot list",
                   "reason": "Forbidden", "code": 403}),
        );
        script_slices(&mut mock, json!([])).await;
    };
    let apply = placement.apply(
        spec(
            3,
            &[("web", "python3 web.py"), ("worker", "python3 worker.py")],
        ),
        formation(&[("web", 2), ("worker", 0)]),
    );
    let ((), result) = tokio::join!(script, apply);
    result.expect("the apply succeeds");
}

#[tokio::test]
async fn a_refused_apply_says_what_the_cluster_said() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    let script = async {
        let (_, send) = next(&mut mock).await;
        reply(
            send,
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "namespaces \"crew-shop\" is forbidden: User \"ci\" cannot patch",
                   "reason": "Forbidden", "code": 403}),
        );
    };
    let apply = placement.apply(spec(3, &[("web", "w")]), formation(&[("web", 1)]));
    let ((), result) = tokio::join!(script, apply);
    let error = result.expect_err("refused").to_string();
    assert!(error.contains("applying the namespace"), "{error}");
    assert!(error.contains("cannot patch"), "{error}");
}

#[tokio::test]
async fn scale_merge_patches_the_scale_subresource_of_changed_types_only() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    applied(&mut mock, &placement).await;
    let script = async {
        for (name, replicas) in [("shop-web", 3), ("shop-worker", 1)] {
            let (seen, send) = next(&mut mock).await;
            seen.expect(
                "PATCH",
                &format!("{DEPLOYMENTS}/{name}/scale"),
                &[("fieldManager", "crew")],
            );
            assert_eq!(
                seen.content_type.as_deref(),
                Some("application/merge-patch+json")
            );
            assert_eq!(seen.body, json!({"spec": {"replicas": replicas}}));
            reply(
                send,
                200,
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                       "metadata": {"name": name, "namespace": "crew-shop"},
                       "spec": {"replicas": replicas}}),
            );
        }
    };
    let changes = crew_procfile::parse_changes(["web=3", "worker+1", "nosuch=4"]).expect("changes");
    let ((), result) = tokio::join!(script, placement.scale(changes));
    result.expect("scale");
}

fn deployment_reply(send: SendResponse<Response<Body>>, name: &str) {
    reply(
        send,
        200,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": name, "namespace": "crew-shop"}}),
    );
}

fn expect_restarted_at(seen: &Seen, name: &str) {
    seen.expect(
        "PATCH",
        &format!("{DEPLOYMENTS}/{name}"),
        &[("fieldManager", "crew")],
    );
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    let annotations = &seen.body["spec"]["template"]["metadata"]["annotations"];
    let at = annotations[RESTARTED_AT].as_str().expect("restartedAt");
    at.parse::<k8s_openapi::jiff::Timestamp>()
        .expect("an RFC 3339 time");
    assert_eq!(
        annotations.as_object().map(|o| o.len()),
        Some(1),
        "nothing but restartedAt"
    );
}

#[tokio::test]
async fn restart_patches_restarted_at_of_one_type_or_of_every_type() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    applied(&mut mock, &placement).await;
    let script = async {
        let (seen, send) = next(&mut mock).await;
        expect_restarted_at(&seen, "shop-web");
        deployment_reply(send, "shop-web");
    };
    let ((), result) = tokio::join!(script, placement.restart(Some("web".to_string())));
    result.expect("restart web");
    let script = async {
        for name in ["shop-web", "shop-worker"] {
            let (seen, send) = next(&mut mock).await;
            expect_restarted_at(&seen, name);
            deployment_reply(send, name);
        }
    };
    let ((), result) = tokio::join!(script, placement.restart(None));
    result.expect("restart everything");
}

fn pod(name: &str, label: &str, created: &str, status: Value) -> Value {
    json!({
        "metadata": {
            "name": name,
            "uid": format!("uid-{name}"),
            "namespace": "crew-shop",
            "creationTimestamp": created,
            "labels": {"app.kubernetes.io/part-of": "shop", "crew/process-type": label},
        },
        "spec": {"containers": [{"name": label}], "nodeName": "node-1"},
        "status": status,
    })
}

fn container(state: Value, restarts: u32, ready: bool) -> Value {
    json!({"name": "c", "image": "i", "imageID": "", "ready": ready,
           "restartCount": restarts, "state": state})
}

/// A pod of every state research §4.2 maps.
fn pod_list() -> Value {
    let running = json!({"running": {"startedAt": "2026-01-01T00:00:05Z"}});
    let ready = |yes: bool| {
        json!([{"type": "Ready", "status": if yes { "True" } else { "False" },
                "lastTransitionTime": "2026-01-01T00:00:06Z"}])
    };
    let mut stopping = pod(
        "shop-worker-old",
        "worker",
        "2026-01-01T00:00:00Z",
        json!({"phase": "Running", "containerStatuses": [container(running.clone(), 0, true)]}),
    );
    stopping["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
    let mut one_off = pod(
        "shop-run-x7k2p-abcde",
        "run",
        "2026-01-01T00:00:04Z",
        json!({"phase": "Succeeded", "containerStatuses": [container(
            json!({"terminated": {"exitCode": 0, "finishedAt": "2026-01-01T00:00:09Z"}}), 0, false)]}),
    );
    one_off["metadata"]["labels"]["crew/dyno"] = json!("run.2");
    one_off["metadata"]["labels"]["batch.kubernetes.io/job-name"] = json!("shop-run-x7k2p");
    one_off["metadata"]["annotations"] = json!({"crew/command": "rake db:migrate"});
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        pod("shop-web-up", "web", "2026-01-01T00:00:01Z", json!({
            "phase": "Running", "startTime": "2026-01-01T00:00:01Z", "conditions": ready(true),
            "containerStatuses": [container(running.clone(), 0, true)]})),
        pod("shop-web-notready", "web", "2026-01-01T00:00:02Z", json!({
            "phase": "Running", "startTime": "2026-01-01T00:00:02Z", "conditions": ready(false),
            "containerStatuses": [container(running.clone(), 0, false)]})),
        pod("shop-web-pending", "web", "2026-01-01T00:00:03Z", json!({
            "phase": "Pending", "containerStatuses": [container(
                json!({"waiting": {"reason": "ContainerCreating"}}), 0, false)]})),
        stopping,
        pod("shop-worker-loop", "worker", "2026-01-01T00:00:02Z", json!({
            "phase": "Running", "conditions": ready(false), "containerStatuses": [container(
                json!({"waiting": {"reason": "CrashLoopBackOff"}}), 5, false)]})),
        one_off,
    ]})
}

async fn script_pods(mock: &mut Mock) {
    let (seen, send) = next(mock).await;
    seen.expect(
        "GET",
        &format!("{NS}/pods"),
        &[("labelSelector", "app.kubernetes.io/part-of=shop")],
    );
    reply(send, 200, pod_list());
}

#[tokio::test]
async fn ps_maps_every_pod_state_and_names_dynos_by_age() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    applied(&mut mock, &placement).await;
    let ((), dynos) = tokio::join!(script_pods(&mut mock), placement.ps());
    let got: Vec<(&str, DynoState, u32, &str)> = dynos
        .iter()
        .map(|d| (d.name.as_str(), d.state, d.restarts, d.command.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("web.1", DynoState::Up, 0, "python3 web.py"),
            ("web.2", DynoState::Starting, 0, "python3 web.py"),
            ("web.3", DynoState::Starting, 0, "python3 web.py"),
            ("worker.1", DynoState::Crashed, 5, "python3 worker.py"),
            ("worker.2", DynoState::Down, 0, "python3 worker.py"),
            ("run.2", DynoState::Complete, 0, "rake db:migrate"),
        ]
    );
    let up = &dynos[0];
    assert_eq!(
        up.since,
        std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_606),
        "up since the Ready condition's transition"
    );
    assert_eq!(up.port, Some(5000));
    assert_eq!(up.pid, None);
}

#[tokio::test]
async fn the_pod_and_node_of_each_dyno_are_there_for_whoever_wants_them() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    let ((), dynos) = tokio::join!(script_pods(&mut mock), placement.dynos());
    let dynos = dynos.expect("dynos");
    let web = dynos
        .iter()
        .find(|d| d.info.name == "web.1")
        .expect("web.1");
    assert_eq!(web.pod, "shop-web-up");
    assert_eq!(web.node.as_deref(), Some("node-1"));
    let run = dynos
        .iter()
        .find(|d| d.info.name == "run.2")
        .expect("run.2");
    assert_eq!(run.job.as_deref(), Some("shop-run-x7k2p"));
}

#[tokio::test]
async fn restart_of_one_dyno_deletes_its_pod() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    applied(&mut mock, &placement).await;
    let script = async {
        script_pods(&mut mock).await;
        let (seen, send) = next(&mut mock).await;
        seen.expect("DELETE", &format!("{NS}/pods/shop-web-notready"), &[]);
        success(send);
    };
    let ((), result) = tokio::join!(script, placement.restart(Some("web.2".to_string())));
    result.expect("restart web.2");
    let script = script_pods(&mut mock);
    let ((), result) = tokio::join!(script, placement.restart(Some("web.9".to_string())));
    assert!(matches!(
        result,
        Err(crew_engine::EngineError::UnknownDyno(name)) if name == "web.9"
    ));
}

#[tokio::test]
async fn stop_of_a_type_scales_it_to_zero_and_restart_brings_it_back() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    applied(&mut mock, &placement).await;
    let scale_reply = |send: SendResponse<Response<Body>>, replicas: i32| {
        reply(
            send,
            200,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                   "metadata": {"name": "shop-web"}, "spec": {"replicas": replicas}}),
        )
    };
    let script = async {
        let (seen, send) = next(&mut mock).await;
        seen.expect(
            "PATCH",
            &format!("{DEPLOYMENTS}/shop-web/scale"),
            &[("fieldManager", "crew")],
        );
        assert_eq!(seen.body, json!({"spec": {"replicas": 0}}));
        scale_reply(send, 0);
    };
    let ((), result) = tokio::join!(script, placement.stop("web".to_string()));
    result.expect("stop web");
    let script = async {
        let (seen, send) = next(&mut mock).await;
        assert_eq!(seen.path, format!("{DEPLOYMENTS}/shop-web/scale"));
        assert_eq!(
            seen.body,
            json!({"spec": {"replicas": 2}}),
            "the formation kept its count"
        );
        scale_reply(send, 2);
        let (seen, send) = next(&mut mock).await;
        expect_restarted_at(&seen, "shop-web");
        deployment_reply(send, "shop-web");
    };
    let ((), result) = tokio::join!(script, placement.restart(Some("web".to_string())));
    result.expect("restart web");
}

#[tokio::test]
async fn stop_of_a_one_off_deletes_its_job() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    applied(&mut mock, &placement).await;
    let script = async {
        script_pods(&mut mock).await;
        let (seen, send) = next(&mut mock).await;
        seen.expect(
            "DELETE",
            "/apis/batch/v1/namespaces/crew-shop/jobs/shop-run-x7k2p",
            &[],
        );
        assert_eq!(seen.body["propagationPolicy"], "Background");
        success(send);
    };
    let ((), result) = tokio::join!(script, placement.stop("run.2".to_string()));
    result.expect("stop run.2");
}

#[tokio::test]
async fn run_detached_creates_a_job_never_retried_and_named_after_the_last_one_off() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    applied(&mut mock, &placement).await;
    let jobs = "/apis/batch/v1/namespaces/crew-shop/jobs";
    let script = async {
        let (seen, send) = next(&mut mock).await;
        seen.expect(
            "GET",
            jobs,
            &[(
                "labelSelector",
                "app.kubernetes.io/part-of=shop,crew/process-type=run",
            )],
        );
        let job = |dyno: &str| json!({"metadata": {"name": "j", "labels": {"crew/dyno": dyno}}});
        reply(
            send,
            200,
            json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {},
                   "items": [job("run.1"), job("run.4"), job("nonsense")]}),
        );
        let (seen, send) = next(&mut mock).await;
        seen.expect("POST", jobs, &[("fieldManager", "crew")]);
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        let body = &seen.body;
        assert_eq!(body["kind"], "Job");
        assert_eq!(body["metadata"]["generateName"], "shop-run-");
        assert_eq!(body["metadata"]["labels"]["crew/dyno"], "run.5");
        assert_eq!(body["spec"]["backoffLimit"], 0);
        let template = &body["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["crew/dyno"], "run.5");
        assert_eq!(
            template["metadata"]["annotations"]["crew/command"],
            "rake db:migrate"
        );
        assert_eq!(template["spec"]["restartPolicy"], "Never");
        let container = &template["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example:5000/crew/shop:v3");
        assert!(container.get("tty").is_none(), "detached: no terminal");
        assert!(container.get("stdin").is_none(), "detached: no stdin");
        assert!(
            template["metadata"]["annotations"]
                .get("crew/attached")
                .is_none(),
            "detached: its output is the log's"
        );
        let env: BTreeMap<&str, &Value> = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|v| (v["name"].as_str().unwrap_or(""), &v["value"]))
            .collect();
        assert_eq!(env["DYNO"], "run.5");
        assert_eq!(env["PS"], "run.5");
        assert_eq!(env["FOO"], "bar");
        let mut made = body.clone();
        made["metadata"]["name"] = json!("shop-run-q8z2k");
        reply(send, 201, made);
    };
    let request = RunRequest {
        command: "rake db:migrate".to_string(),
        env: vec![("FOO".to_string(), "bar".to_string())],
        size: None,
        input: DynoInput::Idle,
    };
    let ((), result) = tokio::join!(script, placement.run(request));
    let (info, attachment) = result.expect("run");
    assert!(attachment.is_none());
    assert_eq!(info.name, "run.5");
    assert_eq!(info.state, DynoState::Starting);
}

const JOBS: &str = "/apis/batch/v1/namespaces/crew-shop/jobs";

/// Answers what a release command of v4 asks before its pod: the namespace,
/// the release's Secret and the Job, which the cluster names
/// `shop-release-r7x2q`; checks that the Job runs `command` as `release.1`
/// with v4's image and config, never retried, within the hour.
async fn script_release_job(mock: &mut Mock, command: &str) {
    let (seen, send) = next(mock).await;
    seen.expect_apply(NS);
    reply(send, 200, seen.body);
    let (seen, send) = next(mock).await;
    seen.expect_apply(&format!("{NS}/secrets/shop-config-v4"));
    assert_eq!(
        seen.body["stringData"],
        json!({"LANG": "C.UTF-8", "SECRET": "s3cr$t {{x}}"}),
    );
    reply(send, 200, seen.body);
    let (seen, send) = next(mock).await;
    seen.expect("POST", JOBS, &[("fieldManager", "crew")]);
    let body = &seen.body;
    assert_eq!(body["kind"], "Job");
    assert_eq!(body["metadata"]["generateName"], "shop-release-");
    assert_eq!(body["metadata"]["labels"]["crew/process-type"], "release");
    assert_eq!(body["metadata"]["labels"]["crew/dyno"], "release.1");
    assert_eq!(body["spec"]["backoffLimit"], 0);
    assert_eq!(body["spec"]["activeDeadlineSeconds"], 3600);
    let template = &body["spec"]["template"];
    assert_eq!(
        template["metadata"]["labels"]["crew/process-type"],
        "release"
    );
    assert_eq!(template["metadata"]["labels"]["crew/dyno"], "release.1");
    assert_eq!(template["metadata"]["annotations"]["crew/command"], command);
    assert_eq!(template["spec"]["restartPolicy"], "Never");
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["name"], "run");
    assert_eq!(container["image"], "registry.example:5000/crew/shop:v4");
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        "shop-config-v4"
    );
    let argv = container["command"].to_string() + &container["args"].to_string();
    assert!(argv.contains(command), "{argv}");
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or(""), &v["value"]))
        .collect();
    assert_eq!(env["DYNO"], "release.1");
    assert_eq!(env["PS"], "release.1");
    let mut made = body.clone();
    made["metadata"]["name"] = json!("shop-release-r7x2q");
    reply(send, 201, made);
}

/// Answers the list of the release Job's pods with one pod in `status`.
async fn script_release_pod(mock: &mut Mock, status: Value) {
    let (seen, send) = next(mock).await;
    seen.expect(
        "GET",
        &format!("{NS}/pods"),
        &[(
            "labelSelector",
            "batch.kubernetes.io/job-name=shop-release-r7x2q",
        )],
    );
    let mut pod = pod(
        "shop-release-r7x2q-k4j9z",
        "release",
        "2026-01-01T00:00:01Z",
        status,
    );
    pod["spec"]["containers"][0]["name"] = json!("run");
    reply(
        send,
        200,
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]}),
    );
}

/// Expects the release Job's deletion, with its pod (background).
async fn script_release_job_deleted(mock: &mut Mock) {
    let (seen, send) = next(mock).await;
    seen.expect("DELETE", &format!("{JOBS}/shop-release-r7x2q"), &[]);
    assert_eq!(seen.body["propagationPolicy"], "Background");
    success(send);
}

fn release_command(
    command: &str,
) -> (crew_engine::ReleaseCommand, mpsc::UnboundedReceiver<String>) {
    let (output, lines) = mpsc::unbounded_channel();
    let command = crew_engine::ReleaseCommand {
        command: command.to_string(),
        timeout: Duration::from_secs(3600),
        output,
    };
    (command, lines)
}

/// The release phase: before v4 is applied, its release command runs as a
/// Job of v4 (v4's Secret made first), its pod's log is followed into the
/// output, the exit code is the container's terminated state's, and the Job
/// goes afterwards. No Deployment is applied: that is the platform's apply,
/// once the command succeeded.
#[tokio::test]
async fn a_release_command_is_a_job_of_the_new_release_and_applies_no_deployment() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    let pod = "shop-release-r7x2q-k4j9z";
    let script = async {
        script_release_job(&mut mock, "rake db:migrate").await;
        script_release_pod(
            &mut mock,
            json!({"phase": "Running", "containerStatuses": [{
                "name": "run", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}}]}),
        )
        .await;
        let (seen, send) = next(&mut mock).await;
        seen.expect(
            "GET",
            &format!("{NS}/pods/{pod}/log"),
            &[("follow", "true"), ("timestamps", "true")],
        );
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(
                    b"2026-01-01T00:00:02Z migrating\n2026-01-01T00:00:03Z it \xff broke\r\n"
                        .to_vec(),
                ))
                .expect("a response"),
        );
        let (seen, send) = next(&mut mock).await;
        seen.expect("GET", &format!("{NS}/pods/{pod}"), &[]);
        let mut ended = json!({"phase": "Failed", "containerStatuses": [{
            "name": "run", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3, "finishedAt": "2026-01-01T00:00:04Z"}}}]});
        ended = pod_with_status(pod, ended);
        reply(send, 200, ended);
        script_release_job_deleted(&mut mock).await;
    };
    let (command, mut lines) = release_command("rake db:migrate");
    let run = placement.release_command(
        spec(
            4,
            &[("web", "python3 web.py"), ("worker", "python3 worker.py")],
        ),
        command,
    );
    let ((), result) = tokio::join!(script, run);
    let status = result.expect("the release command ran");
    assert_eq!(status, Some(crew_runtime::ExitStatus::Code(3)));
    let mut said = Vec::new();
    while let Ok(line) = lines.try_recv() {
        said.push(line);
    }
    assert_eq!(said, ["migrating", "it \u{fffd} broke"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), mock.next_request())
            .await
            .is_err(),
        "nothing else was asked: no Deployment, no Service"
    );
}

/// A release command whose pod cannot start fails with the kubelet's reason,
/// and its Job still goes.
#[tokio::test]
async fn a_release_command_that_cannot_start_says_why_and_its_job_goes() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    let script = async {
        script_release_job(&mut mock, "true").await;
        script_release_pod(
            &mut mock,
            json!({"phase": "Pending", "containerStatuses": [{
                "name": "run", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                                      "message": "no such image"}}}]}),
        )
        .await;
        script_release_job_deleted(&mut mock).await;
    };
    let (command, _lines) = release_command("true");
    let run = placement.release_command(spec(4, &[("web", "w")]), command);
    let ((), result) = tokio::join!(script, run);
    let error = result.expect_err("the pod never ran").to_string();
    assert!(
        error.contains("cannot start: ImagePullBackOff: no such image"),
        "{error}"
    );
}

fn pod_with_status(name: &str, status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "crew-shop"},
           "spec": {"containers": [{"name": "run"}]},
           "status": status})
}

#[tokio::test]
async fn run_before_any_apply_has_no_release() {
    let (client, _mock) = mock();
    let placement = placement(client, config());
    let result = placement.run(RunRequest {
        command: "true".to_string(),
        ..RunRequest::default()
    });
    assert!(matches!(
        result.await,
        Err(crew_engine::EngineError::NoRelease)
    ));
}

#[tokio::test]
async fn destroy_deletes_the_namespace_and_waits_until_it_is_gone() {
    let (client, mut mock) = mock();
    let placement = placement(
        client,
        KubernetesConfig {
            poll_interval: Duration::from_millis(10),
            ..config()
        },
    );
    let script = async {
        let (seen, send) = next(&mut mock).await;
        seen.expect("DELETE", NS, &[]);
        assert_eq!(seen.body["propagationPolicy"], "Background");
        let terminating = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "crew-shop", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Terminating"}});
        reply(send, 200, terminating.clone());
        let (seen, send) = next(&mut mock).await;
        seen.expect("GET", NS, &[]);
        reply(send, 200, terminating);
        let (seen, send) = next(&mut mock).await;
        seen.expect("GET", NS, &[]);
        not_found(send, "namespaces \"crew-shop\"");
    };
    let ((), ()) = tokio::join!(script, placement.destroy());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), mock.next_request())
            .await
            .is_err(),
        "nothing after the namespace is gone"
    );
}

fn slice(name: &str, endpoints: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "crew-shop",
                     "labels": {"kubernetes.io/service-name": "shop-web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 5000, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn endpoint(ip: &str, pod: &str, ready: bool, terminating: bool) -> Value {
    json!({
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready, "terminating": terminating},
        "targetRef": {"kind": "Pod", "name": pod, "namespace": "crew-shop"},
        "nodeName": "node-1",
    })
}

fn backend(name: &str, addr: &str, state: DynoState) -> WebBackend {
    WebBackend {
        name: name.to_string(),
        addr: addr.parse().expect("an address"),
        state,
        namespace: None,
        requests: Default::default(),
    }
}

#[tokio::test]
async fn web_backends_are_empty_before_any_apply_and_stay_open() {
    let (client, _mock) = mock();
    let placement = placement(client, config());
    let backends = placement.web_backends();
    assert!(backends.borrow().is_empty());
    assert!(backends.has_changed().is_ok(), "the sender is still there");
}

/// The end of an apply reads the web Service's EndpointSlices, and the pods
/// for their `ps` names: ready is up, not ready is starting, terminating is
/// down, and a pod the list does not have keeps its own name.
#[tokio::test]
async fn an_apply_publishes_the_web_endpoints_under_their_dyno_names() {
    let (client, mut mock) = mock();
    let placement = placement(client, config());
    let mut backends = placement.web_backends();
    let script = async {
        script_apply(&mut mock).await;
        script_secrets(&mut mock, &["shop-config-v3"]).await;
        script_slices(
            &mut mock,
            json!([
                slice(
                    "shop-web-a",
                    json!([
                        endpoint("10.1.0.1", "shop-web-up", true, false),
                        endpoint("10.1.0.2", "shop-web-notready", false, false),
                    ])
                ),
                slice(
                    "shop-web-b",
                    json!([endpoint("10.1.0.3", "shop-web-gone", false, true),])
                ),
            ]),
        )
        .await;
        script_pods(&mut mock).await;
    };
    let apply = placement.apply(
        spec(
            3,
            &[("web", "python3 web.py"), ("worker", "python3 worker.py")],
        ),
        formation(&[("web", 2), ("worker", 0)]),
    );
    let ((), result) = tokio::join!(script, apply);
    result.expect("apply");
    assert!(backends.has_changed().expect("open"), "the router is woken");
    assert_eq!(
        **backends.borrow_and_update(),
        [
            backend("shop-web-gone", "10.1.0.3:5000", DynoState::Down),
            backend("web.1", "10.1.0.1:5000", DynoState::Up),
            backend("web.2", "10.1.0.2:5000", DynoState::Starting),
        ]
    );
}

/// Between applies the task polls: an unanswered poll keeps the last list, a
/// new pod shows up starting, and a list that did not change wakes nobody.
#[tokio::test]
async fn the_backend_task_polls_keeps_the_list_on_an_error_and_follows_changes() {
    let (client, mut mock) = mock();
    let placement = placement(
        client,
        KubernetesConfig {
            poll_interval: Duration::from_millis(20),
            ..config()
        },
    );
    let mut backends = placement.web_backends();
    applied(&mut mock, &placement).await;
    assert!(backends.borrow_and_update().is_empty());
    let server = tokio::spawn(async move {
        let mut slice_lists = 0;
        loop {
            let (seen, send) = next(&mut mock).await;
            if seen.path == SLICES {
                slice_lists += 1;
                let items = match slice_lists {
                    1 => json!([slice(
                        "s",
                        json!([endpoint("10.1.0.1", "shop-web-up", true, false)])
                    )]),
                    2 => {
                        reply(
                            send,
                            500,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": "etcd is unhappy", "reason": "InternalError", "code": 500}),
                        );
                        continue;
                    }
                    _ => json!([slice(
                        "s",
                        json!([
                            endpoint("10.1.0.1", "shop-web-up", true, false),
                            endpoint("10.1.0.2", "shop-web-notready", false, false),
                        ])
                    )]),
                };
                reply(
                    send,
                    200,
                    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                           "metadata": {}, "items": items}),
                );
                if slice_lists == 5 {
                    return;
                }
            } else if seen.path == format!("{NS}/pods") {
                reply(send, 200, pod_list());
            } else if seen.path.starts_with(&format!("{NS}/pods/")) && seen.path.ends_with("/log") {
                // The log task follows the running pods; nothing to say.
                send.send_response(
                    Response::builder()
                        .status(200)
                        .body(Body::from(Vec::new()))
                        .expect("a response"),
                );
            } else {
                panic!("unexpected {} {}", seen.method, seen.path);
            }
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut lists = Vec::new();
    while lists.len() < 2 {
        tokio::time::timeout_at(deadline, backends.changed())
            .await
            .expect("a change within 10s")
            .expect("open");
        lists.push((**backends.borrow_and_update()).clone());
    }
    assert_eq!(
        lists,
        [
            vec![backend("web.1", "10.1.0.1:5000", DynoState::Up)],
            vec![
                backend("web.1", "10.1.0.1:5000", DynoState::Up),
                backend("web.2", "10.1.0.2:5000", DynoState::Starting),
            ],
        ],
        "the failed poll in between changed nothing"
    );
    tokio::time::timeout_at(deadline, server)
        .await
        .expect("five polls within 10s")
        .expect("the script");
    assert!(
        !backends.has_changed().expect("open"),
        "polls that found the same endpoints woke nobody"
    );
    drop(placement);
}

/// The log task: pods are listed every poll, a running pod's log is followed
/// with timestamps, a state change is a platform line, and a re-followed log
/// starts after the last line passed on without repeating it.
#[tokio::test]
async fn logs_follow_each_running_pod_and_never_repeat_a_line() {
    let (client, mut mock) = mock();
    let (logs, mut events) = mpsc::channel(64);
    let placement = KubernetesPlacement::new(
        client,
        "shop",
        KubernetesConfig {
            poll_interval: Duration::from_millis(20),
            ..config()
        },
        logs,
    )
    .expect("a placement");
    applied(&mut mock, &placement).await;

    let server = tokio::spawn(async move {
        let mut lists = 0;
        let mut reads: Vec<BTreeMap<String, String>> = Vec::new();
        loop {
            let (seen, send) = next(&mut mock).await;
            if seen.path == format!("{NS}/pods") {
                lists += 1;
                let ready = if lists == 1 { "False" } else { "True" };
                let web = pod(
                    "shop-web-a",
                    "web",
                    "2026-01-01T00:00:01Z",
                    json!({"phase": "Running", "startTime": "2026-01-01T00:00:01Z",
                           "conditions": [{"type": "Ready", "status": ready}],
                           "containerStatuses": [container(
                               json!({"running": {}}), 0, ready == "True")]}),
                );
                reply(
                    send,
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [web]}),
                );
            } else if seen.path == SLICES {
                // The backend task polls too; no web endpoints here.
                reply(
                    send,
                    200,
                    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                           "metadata": {}, "items": []}),
                );
            } else if seen.path == format!("{NS}/pods/shop-web-a/log") {
                reads.push(seen.query.clone());
                // The first read has two lines; the second, as a read from
                // sinceTime would, starts at the last line's second (both
                // lines of it) and brings one more.
                let text = if reads.len() == 1 {
                    "2026-01-01T00:00:02.000000001Z first\n2026-01-01T00:00:02.5Z second\n"
                } else {
                    "2026-01-01T00:00:02.000000001Z first\n2026-01-01T00:00:02.5Z second\n2026-01-01T00:00:03Z third"
                };
                send.send_response(
                    Response::builder()
                        .status(200)
                        .body(Body::from(text.as_bytes().to_vec()))
                        .expect("a response"),
                );
                if reads.len() == 2 {
                    return reads;
                }
            } else {
                panic!("unexpected {} {}", seen.method, seen.path);
            }
        }
    });

    let mut lines = Vec::new();
    let mut platform = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lines.len() < 3 || platform.is_empty() {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("log events within 10s")
            .expect("the channel is open");
        match event {
            LogEvent::Output { dyno, lines: l, .. } => {
                lines.push(format!("{dyno}: {}", String::from_utf8_lossy(&l)));
            }
            LogEvent::Platform { dyno, text, .. } => platform.push(format!("{dyno}: {text}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        lines,
        ["web.1: first\n", "web.1: second\n", "web.1: third\n"]
    );
    assert_eq!(platform, ["web.1: State changed from starting to up"]);
    let reads = server.await.expect("the script");
    assert_eq!(reads[0].get("follow").map(String::as_str), Some("true"));
    assert_eq!(reads[0].get("timestamps").map(String::as_str), Some("true"));
    assert_eq!(reads[0].get("sinceTime"), None);
    assert_eq!(
        reads[1].get("sinceTime").map(String::as_str),
        Some("2026-01-01T00:00:02Z"),
        "a re-follow starts at the second of the last line passed on, never after it"
    );
    drop(placement);
}

#[tokio::test]
async fn a_detached_one_off_says_how_it_ended_after_its_output() {
    let (client, mut mock) = mock();
    let (logs, mut events) = mpsc::channel(64);
    let placement = KubernetesPlacement::new(
        client,
        "shop",
        KubernetesConfig {
            poll_interval: Duration::from_millis(20),
            ..config()
        },
        logs,
    )
    .expect("a placement");
    applied(&mut mock, &placement).await;

    let server = tokio::spawn(async move {
        loop {
            let (seen, send) = next(&mut mock).await;
            if seen.path == format!("{NS}/pods") {
                let mut one_off = pod(
                    "shop-run-x7k2p-abcde",
                    "run",
                    "2026-01-01T00:00:04Z",
                    json!({"phase": "Failed", "containerStatuses": [container(
                        json!({"terminated": {"exitCode": 3,
                                              "finishedAt": "2026-01-01T00:00:09Z"}}),
                        0, false)]}),
                );
                one_off["metadata"]["labels"]["batch.kubernetes.io/job-name"] =
                    json!("shop-run-x7k2p");
                // A one-off's container, as crew's Jobs name it.
                one_off["status"]["containerStatuses"][0]["name"] = json!("run");
                reply(
                    send,
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                           "items": [one_off]}),
                );
            } else if seen.path == SLICES {
                reply(
                    send,
                    200,
                    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                           "metadata": {}, "items": []}),
                );
            } else if seen.path == format!("{NS}/pods/shop-run-x7k2p-abcde/log") {
                send.send_response(
                    Response::builder()
                        .status(200)
                        .body(Body::from(b"2026-01-01T00:00:08Z out\n".to_vec()))
                        .expect("a response"),
                );
            } else {
                panic!("unexpected {} {}", seen.method, seen.path);
            }
        }
    });

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|l: &String| l.contains("Process exited")) {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("log events within 10s")
            .expect("the channel is open");
        match event {
            LogEvent::Output { dyno, lines, .. } => {
                seen.push(format!("{dyno}: {}", String::from_utf8_lossy(&lines)));
            }
            LogEvent::Platform { dyno, text, .. } => seen.push(format!("{dyno}: {text}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        ["run.1: out\n", "run.1: Process exited with status 3"]
    );
    // Once only, however many polls follow.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(&event, LogEvent::Platform { text, .. } if text.contains("Process exited")),
            "{event:?}"
        );
    }
    server.abort();
    drop(placement);
}

#[tokio::test]
async fn another_namespace_prefix_moves_every_object() {
    let (client, mut mock) = mock();
    let placement = placement(
        client,
        KubernetesConfig {
            namespace_prefix: "paas".to_string(),
            ..config()
        },
    );
    assert_eq!(placement.namespace(), "paas-shop");
    let script = async {
        let (seen, send) = next(&mut mock).await;
        seen.expect_apply("/api/v1/namespaces/paas-shop");
        assert_eq!(seen.body["metadata"]["name"], "paas-shop");
        reply(send, 200, seen.body);
        let (seen, send) = next(&mut mock).await;
        seen.expect_apply("/api/v1/namespaces/paas-shop/secrets/shop-config-v3");
        assert_eq!(seen.body["metadata"]["namespace"], "paas-shop");
        reply(send, 200, seen.body);
        let (seen, send) = next(&mut mock).await;
        seen.expect_apply("/apis/apps/v1/namespaces/paas-shop/deployments/shop-web");
        assert_eq!(seen.body["metadata"]["namespace"], "paas-shop");
        reply(
            send,
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "etcd is unhappy", "reason": "InternalError", "code": 500}),
        );
    };
    let apply = placement.apply(spec(3, &[("web", "w")]), formation(&[("web", 1)]));
    let ((), result) = tokio::join!(script, apply);
    let error = result
        .expect_err("the script failed the Deployment")
        .to_string();
    assert!(
        error.contains("applying Deployment shop-web: etcd is unhappy"),
        "{error}"
    );
}

fn tar_file<W: Write>(tar: &mut tar::Builder<W>, name: &str, body: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_size(body.len() as u64);
    tar.append_data(&mut header, name, body)
        .expect("adding a file");
}

/// A slug at `path`, a tar.gz holding `procfile`.
fn slug_with(path: &Path, procfile: &str) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).expect("the slug"),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    tar_file(&mut tar, "Procfile", procfile.as_bytes());
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|mut f| f.flush())
        .expect("finishing the slug");
}

/// A slug and a stand-in base (a tar holding `bin/sh`) for the image an
/// apply pushes.
fn slug_and_base(dir: &Path) -> (PathBuf, PathBuf) {
    let slug = dir.join("slug.tgz");
    slug_with(&slug, "web: w\n");
    let base = dir.join("base.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&base).expect("the base"));
    tar_file(&mut tar, "bin/sh", b"not really a shell");
    tar.into_inner()
        .and_then(|mut f| f.flush())
        .expect("finishing the base");
    (slug, base)
}

/// Answers an apply of v3 with one `web` type, calling `first` when the
/// first request (the namespace) arrives, and checks that the Deployment
/// runs `image`.
async fn script_web_apply(mock: &mut Mock, image: &str, first: impl FnOnce()) {
    let (seen, send) = next(mock).await;
    first();
    seen.expect_apply(NS);
    reply(send, 200, seen.body);
    let (seen, send) = next(mock).await;
    seen.expect_apply(&format!("{NS}/secrets/shop-config-v3"));
    reply(send, 200, seen.body);
    let (seen, send) = next(mock).await;
    seen.expect_apply(&format!("{DEPLOYMENTS}/shop-web"));
    assert_eq!(
        seen.body["spec"]["template"]["spec"]["containers"][0]["image"],
        image
    );
    reply(send, 200, seen.body);
    let (seen, send) = next(mock).await;
    seen.expect_apply(&format!("{NS}/services/shop-web"));
    reply(send, 200, seen.body);
    let (seen, send) = next(mock).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", DEPLOYMENTS)
    );
    reply(
        send,
        200,
        json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
               "items": [{"metadata": {"name": "shop-web"}}]}),
    );
    script_secrets(mock, &["shop-config-v3"]).await;
    script_slices(mock, json!([])).await;
}

/// The platform lines an apply wrote, as `SOURCE: text`.
fn platform_lines(logs: &mut mpsc::Receiver<LogEvent>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(event) = logs.try_recv() {
        if let LogEvent::Platform { dyno, text, .. } = event {
            lines.push(format!("{dyno}: {text}"));
        }
    }
    lines
}

/// With a registry and a base, an apply builds the release's image and
/// pushes it to a real registry (Debian's `docker-registry`) before the
/// cluster hears of the release: when the namespace's apply arrives, the
/// registry already serves the manifest. Applying v3 again pushes nothing,
/// and neither does another placement (a restarted server) that finds the
/// same image under the tag.
#[tokio::test]
async fn an_apply_with_a_registry_pushes_the_image_before_it_applies_anything() {
    let running = match crew_testkit::registry::TestRegistry::start().expect("the registry starts")
    {
        Ok(running) => running,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let (slug, base) = slug_and_base(dir.path());
    let config = KubernetesConfig {
        registry: Some(running.name()),
        base_rootfs: Some(base),
        ..config()
    };
    let image = format!("{}/crew/shop:v3", running.name());
    let release = || ReleaseSpec {
        slug_archive: slug.clone(),
        ..spec(3, &[("web", "w")])
    };
    let manifest_there = || {
        let reply = crew_testkit::registry::get(
            running.addr,
            "/v2/crew/shop/manifests/v3",
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        )
        .expect("asking the registry");
        reply.status == 200
    };
    assert!(!manifest_there(), "nothing pushed yet");

    let (client, mut first_mock) = mock();
    let (logs, mut lines) = mpsc::channel(16);
    let placement =
        KubernetesPlacement::new(client, "shop", config.clone(), logs).expect("a placement");
    let mut pushed_first = false;
    let script = script_web_apply(&mut first_mock, &image, || pushed_first = manifest_there());
    let apply = placement.apply(release(), formation(&[("web", 1)]));
    let ((), result) = tokio::join!(script, apply);
    result.unwrap_or_else(|e| panic!("apply: {e}\n{}", running.log()));
    assert!(
        pushed_first,
        "the image was in the registry before the namespace was applied"
    );
    assert_eq!(
        platform_lines(&mut lines),
        vec![format!("api: Pushed {image}")]
    );

    let script = script_web_apply(&mut first_mock, &image, || {});
    let apply = placement.apply(release(), formation(&[("web", 1)]));
    let ((), result) = tokio::join!(script, apply);
    result.expect("the same release again");
    assert_eq!(
        platform_lines(&mut lines),
        Vec::<String>::new(),
        "pushed once per release"
    );

    let (client, mut other_mock) = mock();
    let (logs, mut lines) = mpsc::channel(16);
    let restarted_config = config.clone();
    let restarted = KubernetesPlacement::new(client, "shop", config, logs).expect("a placement");
    let script = script_web_apply(&mut other_mock, &image, || {});
    let apply = restarted.apply(release(), formation(&[("web", 1)]));
    let ((), result) = tokio::join!(script, apply);
    result.expect("v3 from another server");
    assert_eq!(
        platform_lines(&mut lines),
        Vec::<String>::new(),
        "the registry already has this very image"
    );

    // Another slug numbered v3 (a crew whose data was reset) replaces the
    // registry's v3 rather than running its old image.
    let another_slug = dir.path().join("another.tgz");
    slug_with(&another_slug, "web: w --again\n");
    let (client, mut third_mock) = mock();
    let (logs, mut lines) = mpsc::channel(16);
    let reset =
        KubernetesPlacement::new(client, "shop", restarted_config, logs).expect("a placement");
    let script = script_web_apply(&mut third_mock, &image, || {});
    let apply = reset.apply(
        ReleaseSpec {
            slug_archive: another_slug,
            ..spec(3, &[("web", "w")])
        },
        formation(&[("web", 1)]),
    );
    let ((), result) = tokio::join!(script, apply);
    result.expect("another v3");
    assert_eq!(
        platform_lines(&mut lines),
        vec![format!("api: Pushed {image}")]
    );
}

/// A push that fails fails the apply, in the registry's words, before
/// anything is asked of the cluster.
#[tokio::test]
async fn a_failed_push_fails_the_apply_before_the_cluster_hears_of_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (slug, base) = slug_and_base(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (client, mut mock) = mock();
    let placement = placement(
        client,
        KubernetesConfig {
            registry: Some(format!("127.0.0.1:{port}")),
            base_rootfs: Some(base),
            ..config()
        },
    );
    let release = ReleaseSpec {
        slug_archive: slug,
        ..spec(3, &[("web", "w")])
    };
    let error = placement
        .apply(release, formation(&[("web", 1)]))
        .await
        .expect_err("nothing listens on the registry's port")
        .to_string();
    assert!(
        error.starts_with(&format!(
            "kubernetes: pushing the image 127.0.0.1:{port}/crew/shop:v3: registry 127.0.0.1:{port}: looking for manifest crew/shop:v3: "
        )),
        "{error}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(50), mock.next_request())
            .await
            .is_err(),
        "the cluster was not asked anything"
    );
}
