//! Every writer's output for one release, against files checked in under
//! `tests/golden/`. Types catch field names; these catch drift. When a change
//! is meant, `CREW_UPDATE_GOLDEN=1 cargo test -p crew-cluster` rewrites them.

mod fixture;

use crew_cluster::kubernetes::{self, RunOptions};
use crew_cluster::{render, swarm};
use fixture::{golden, release, worker_only};
use serde_json::Value;

#[test]
fn kubernetes_manifests_match_the_golden_files() {
    let objects = kubernetes::manifests(&release())
        .and_then(|m| m.objects())
        .expect("manifests");
    golden("kubernetes.json", &kubernetes::list(&objects));
    golden("kubernetes.yaml", &kubernetes::yaml(&objects));
    let job = kubernetes::run_job(
        &release(),
        "python3 manage.py shell",
        &RunOptions::default(),
    )
    .and_then(|j| kubernetes::job_object(&j))
    .expect("job");
    golden("kubernetes-run.json", &render::json(&job.value));
}

#[test]
fn swarm_stack_matches_the_golden_files() {
    let stack = swarm::stack(&release()).expect("stack");
    golden("swarm.json", &render::json(&stack));
    golden("swarm.yml", &render::yaml(&stack));
}

fn find<'a>(objects: &'a [kubernetes::Object], kind: &str, name: &str) -> &'a Value {
    &objects
        .iter()
        .find(|o| o.kind == kind && o.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .value
}

#[test]
fn deployments_follow_the_mapping() {
    let objects = kubernetes::manifests(&release())
        .and_then(|m| m.objects())
        .expect("manifests");
    let kinds: Vec<(&str, &str)> = objects
        .iter()
        .map(|o| (o.kind.as_str(), o.name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Namespace", "crew-shop"),
            ("Secret", "shop-config-v3"),
            ("Deployment", "shop-web"),
            ("Deployment", "shop-worker"),
            ("Deployment", "shop-release-phase"),
            ("Service", "shop-web"),
        ]
    );
    let web = find(&objects, "Deployment", "shop-web");
    let selector = &web["spec"]["selector"]["matchLabels"];
    assert!(selector.get("crew/release").is_none(), "{selector}");
    assert_eq!(selector["crew/process-type"], "web");
    assert_eq!(
        web["spec"]["template"]["metadata"]["labels"]["crew/release"],
        "v3"
    );
    assert_eq!(web["spec"]["replicas"], 2);
    assert_eq!(web["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let pod = &web["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["securityContext"]["runAsUser"], 65534);
    let container = &pod["containers"][0];
    assert_eq!(container["workingDir"], "/app");
    assert_eq!(container["command"][0], "/bin/sh");
    assert_eq!(container["command"][1], "-c");
    let line = container["command"][2].as_str().expect("a command line");
    assert!(
        line.ends_with("exec gunicorn app:app --bind 0.0.0.0:$PORT"),
        "{line}"
    );
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], "http");
    assert_eq!(container["ports"][0]["containerPort"], 5000);
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        "shop-config-v3"
    );
    let dyno = container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "DYNO"))
        .expect("DYNO");
    assert_eq!(dyno["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");

    let worker = find(&objects, "Deployment", "shop-worker");
    assert_eq!(worker["spec"]["strategy"]["type"], "Recreate");
    let line = worker["spec"]["template"]["spec"]["containers"][0]["command"][2]
        .as_str()
        .expect("a command line");
    assert!(line.ends_with("; python3 worker.py && echo done"), "{line}");
    assert!(
        worker["spec"]["template"]["spec"]["containers"][0]
            .get("readinessProbe")
            .is_none()
    );
    let secret = find(&objects, "Secret", "shop-config-v3");
    assert_eq!(secret["immutable"], true);

    let objects = kubernetes::manifests(&worker_only())
        .and_then(|m| m.objects())
        .expect("manifests");
    assert!(objects.iter().all(|o| o.kind != "Service"));
}

#[test]
fn the_swarm_stack_follows_the_mapping() {
    let stack = swarm::stack(&release()).expect("stack");
    let web = &stack["services"]["shop-web"];
    assert_eq!(web["deploy"]["replicas"], 2);
    assert_eq!(web["deploy"]["update_config"]["order"], "start-first");
    assert_eq!(web["deploy"]["restart_policy"]["condition"], "any");
    assert_eq!(web["stop_grace_period"], "30s");
    assert_eq!(web["environment"]["DYNO"], "web.{{.Task.Slot}}");
    assert_eq!(web["deploy"]["labels"]["heroku.release"], "v3");
    // compose would substitute the deployer's $PORT; $$ keeps it for the dyno.
    let line = web["entrypoint"][2].as_str().expect("a command line");
    assert!(line.ends_with("--bind 0.0.0.0:$$PORT"), "{line}");
    assert_eq!(
        web["environment"]["GREETING"],
        "say \"hi\"\nthen $$LEAVE {{\"{{\"}}now}}"
    );
    assert_eq!(stack["networks"]["crew-shop"]["driver"], "overlay");
    assert_eq!(
        stack["services"]["shop-release-phase"]["environment"]["DYNO"],
        "Release_Phase.{{.Task.Slot}}"
    );
}

#[test]
fn bad_releases_are_refused_with_reasons() {
    let mut bad = release();
    bad.app = "shop-".to_string();
    let err = kubernetes::manifests(&bad).expect_err("a trailing dash");
    assert!(err.to_string().contains("not a valid app name"), "{err}");

    let mut bad = release();
    bad.processes[1].name = "WEB".to_string();
    let err = swarm::stack(&bad).expect_err("a clash");
    assert!(err.to_string().contains("`web` and `WEB`"), "{err}");

    let mut bad = release();
    bad.processes[1].name = "run".to_string();
    let err = kubernetes::manifests(&bad).expect_err("run is reserved");
    assert!(err.to_string().contains("one-off"), "{err}");

    let mut bad = release();
    bad.config.insert("1BAD".to_string(), String::new());
    let err = kubernetes::manifests(&bad).expect_err("a bad key");
    assert!(err.to_string().contains("1BAD"), "{err}");

    let mut bad = release();
    bad.processes.clear();
    assert!(swarm::stack(&bad).is_err());
}
