//! Every generated Kubernetes manifest, checked offline against the API's own
//! schemas by `kubernetes-validate --strict` (PyPI), and every YAML output read
//! back by a real YAML parser and compared with the JSON.
//!
//! The validator is installed from PyPI into a venv under Cargo's target
//! directory on first use and reused after that. The test is skipped, saying
//! so, only when python3 or its venv/pip support is missing; a failed install
//! is a failure.
//!
//! This catches schema errors (a misspelt field, a string where a number
//! belongs), not semantic ones: no API server says whether the objects do what
//! they should.

mod fixture;

use std::path::{Path, PathBuf};
use std::process::Command;

use crew_cluster::kubernetes::{self, RunOptions};
use crew_cluster::{render, swarm};

const VALIDATOR: &str = "kubernetes-validate==1.37.0";
const KUBERNETES: &str = "1.33.0";

/// The venv's directory, made and filled when needed; none when this machine
/// cannot make one. Once per test binary: the tests run as threads, and only
/// one of them may build the venv.
fn validator_venv() -> Option<PathBuf> {
    static VENV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    VENV.get_or_init(install_validator).clone()
}

fn install_validator() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-validate-1.37.0");
    let ready = venv.join(".installed");
    if ready.exists() {
        return Some(venv);
    }
    let python_ok = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .status()
        .is_ok_and(|s| s.success());
    if !python_ok {
        eprintln!(
            "SKIPPED: kubernetes-validate needs python3 with venv and pip (Debian: apt-get install python3-venv)"
        );
        return None;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("running python3 -m venv");
    assert!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
    let output = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            VALIDATOR,
        ])
        .output()
        .expect("running pip");
    assert!(
        output.status.success(),
        "pip install {VALIDATOR} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&ready, VALIDATOR).expect("marking the venv ready");
    Some(venv)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a manifest");
    path
}

#[test]
fn every_manifest_passes_kubernetes_validate_strict() {
    let Some(venv) = validator_venv() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut files = Vec::new();
    for (label, release) in [
        ("full", fixture::release()),
        ("worker", fixture::worker_only()),
    ] {
        let objects = kubernetes::manifests(&release)
            .and_then(|m| m.objects())
            .expect("manifests");
        for (i, object) in objects.iter().enumerate() {
            files.push(write(
                dir.path(),
                &format!("{label}-{i}-{}.json", object.kind),
                &render::json(&object.value),
            ));
        }
        files.push(write(
            dir.path(),
            &format!("{label}-all.yaml"),
            &kubernetes::yaml(&objects),
        ));
        for attach in [false, true] {
            let job = kubernetes::run_job(
                &release,
                "rake db:migrate",
                &RunOptions {
                    attach,
                    ..RunOptions::default()
                },
            )
            .and_then(|j| kubernetes::job_object(&j))
            .expect("job");
            // The Job has only a generateName, which the API server accepts
            // but the validator cannot report on; give this copy a name.
            let mut value = job.value.clone();
            value["metadata"]["name"] = serde_json::json!("shop-run-x7k2p");
            files.push(write(
                dir.path(),
                &format!("{label}-job-{attach}.json"),
                &render::json(&value),
            ));
        }
    }
    let output = Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "-k", KUBERNETES])
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubernetes-validate rejected a manifest:\n{stdout}{stderr}"
    );
    // It says INFO ... passed for each document; be sure it looked at all of them.
    let passed = stdout.matches("passed").count();
    assert!(
        passed >= files.len(),
        "only {passed} documents passed out of at least {}:\n{stdout}{stderr}",
        files.len()
    );
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    // Proof that the check above can fail: the same Deployment with a string
    // for replicas.
    let Some(venv) = validator_venv() else {
        return;
    };
    let objects = kubernetes::manifests(&fixture::release())
        .and_then(|m| m.objects())
        .expect("manifests");
    let mut broken = objects
        .iter()
        .find(|o| o.kind == "Deployment")
        .expect("a deployment")
        .value
        .clone();
    broken["spec"]["replicas"] = serde_json::json!("two");
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = write(dir.path(), "broken.json", &render::json(&broken));
    let status = Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "-k", KUBERNETES])
        .arg(&file)
        .output()
        .expect("running kubernetes-validate")
        .status;
    assert!(!status.success());
}

#[test]
fn yaml_output_reads_back_as_the_json() {
    // PyYAML comes with kubernetes-validate; it reads YAML 1.1, the stricter
    // reading for strings like `yes` and `on`.
    let Some(venv) = validator_venv() else {
        return;
    };
    let objects = kubernetes::manifests(&fixture::release())
        .and_then(|m| m.objects())
        .expect("manifests");
    let stack = swarm::stack(&fixture::release()).expect("stack");
    let dir = tempfile::tempdir().expect("a temp dir");
    let cases = [
        (
            write(dir.path(), "k.yaml", &kubernetes::yaml(&objects)),
            write(
                dir.path(),
                "k.json",
                &render::json(&serde_json::Value::Array(
                    objects.iter().map(|o| o.value.clone()).collect(),
                )),
            ),
        ),
        (
            write(
                dir.path(),
                "s.yaml",
                &format!("---\n{}", render::yaml(&stack)),
            ),
            write(
                dir.path(),
                "s.json",
                &render::json(&serde_json::Value::Array(vec![stack.clone()])),
            ),
        ),
    ];
    for (yaml, json) in cases {
        let script = "import json, sys, yaml\n\
                      docs = list(yaml.safe_load_all(open(sys.argv[1])))\n\
                      want = json.load(open(sys.argv[2]))\n\
                      sys.exit(0 if docs == want else 1)";
        let status = Command::new(venv.join("bin/python"))
            .args(["-c", script])
            .arg(&yaml)
            .arg(&json)
            .status()
            .expect("running python");
        assert!(
            status.success(),
            "{} reads differently from {}",
            yaml.display(),
            json.display()
        );
    }
}
