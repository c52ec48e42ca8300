//! The placement against a real cluster, when one is given: set
//! `CREW_LIVE_KUBECONFIG` to a kubeconfig whose current context may create and
//! delete namespaces. Without it the test passes after saying it was skipped;
//! no Kubernetes cluster runs in crew's CI.
//!
//! It applies a release with `web=1 worker=1`, scales `worker` to 2, checks
//! that `ps` lists the three pods under crew's names, and destroys the app.
//! The image is `REGISTRY/crew/APP:v1` with `CREW_LIVE_REGISTRY` as the
//! registry (or `crew/APP:v1` without); nobody pushes it, so unless it is
//! there the pods never come up and `ps` shows them crashed (ImagePullBackOff)
//! or starting. That is enough to check the objects and the names; whether
//! dynos serve is for a test with a pushed image.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crew_engine::{Placement, ReleaseSpec, ReleaseType};
use crew_kubernetes::{KubernetesConfig, KubernetesPlacement, client_from_kubeconfig};
use crew_procfile::Formation;
use tokio::sync::mpsc;

#[tokio::test]
async fn apply_scale_ps_destroy_on_a_real_cluster() {
    let Some(kubeconfig) = std::env::var_os("CREW_LIVE_KUBECONFIG") else {
        println!("skipped: set CREW_LIVE_KUBECONFIG to run against a real cluster");
        return;
    };
    let client = client_from_kubeconfig(Some(Path::new(&kubeconfig)))
        .await
        .expect("a client from CREW_LIVE_KUBECONFIG");
    // A name of its own, so that two runs or a leftover never collide.
    let app = format!("live-{}", std::process::id());
    let (logs, mut events) = mpsc::channel(1024);
    // Drained so that the log task never waits on a full channel.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let placement = KubernetesPlacement::new(
        client,
        &app,
        KubernetesConfig {
            registry: std::env::var("CREW_LIVE_REGISTRY").ok(),
            ..KubernetesConfig::default()
        },
        logs,
    )
    .expect("a placement");
    let release = ReleaseSpec {
        app: app.clone(),
        version: 1,
        types: ["web", "worker"]
            .iter()
            .map(|t| ReleaseType {
                name: t.to_string(),
                command: format!("echo {t}; sleep 3600"),
                size: None,
            })
            .collect(),
        env: vec![("GREETING".to_string(), "hello".to_string())],
        slug_archive: PathBuf::new(),
        slug_dir: PathBuf::new(),
        command_prefix: None,
    };
    let formation = Formation::new(["web".to_string(), "worker".to_string()], 1);
    let outcome = async {
        placement.apply(release, formation).await?;
        placement
            .scale(crew_procfile::parse_changes(["worker=2"])?)
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut names: Vec<String> = placement.ps().await.into_iter().map(|d| d.name).collect();
            names.sort();
            if names == ["web.1", "worker.1", "worker.2"] {
                return Ok::<_, Box<dyn std::error::Error>>(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("ps still shows {names:?} after 60s").into());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    .await;
    // Whatever happened, the namespace goes.
    placement.destroy().await;
    if let Err(error) = outcome {
        panic!("{error}");
    }
}
