//! The conformance suite (`crew_testkit::conformance`, the one crew's own
//! engine and Swarm pass) against [`KubernetesPlacement`]
//! on a real cluster, when one is given:
//!
//! - `CREW_LIVE_KUBECONFIG`: a kubeconfig whose current context may create
//!   and delete namespaces (and what crew asks for in them, README's
//!   "Permissions");
//! - `CREW_LIVE_REGISTRY`: a registry crew can push to from here and the
//!   cluster can pull from, `HOST[:PORT][/PATH]`, with `http://` in front
//!   for one that speaks plain HTTP.
//!
//! Without both the test passes after a `skipped:` line: no cluster runs in
//! crew's CI. With them, each release's image (busybox-static as the stack,
//! as the Swarm tests build it, and a test slug) is pushed to the registry,
//! the app gets a name of its own, and its namespace is deleted at the end,
//! also when a check fails.
//!
//! Where Kubernetes differs by design, the subject says so: a Deployment's
//! pods have no ordinals, so `$DYNO` is the pod's name and `ps` numbers are
//! a view ([`Naming::View`]); and a dyno cannot be made to crash from
//! outside its node, so a killed dyno is a deleted pod, which its
//! Deployment replaces rather than restarts ([`Recovery::Replace`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crew_engine::{Placement, ReleaseSpec};
use crew_kubernetes::{KubernetesConfig, KubernetesPlacement, client_from_kubeconfig};
use crew_testkit::conformance::{self as suite, Naming, Recovery, Subject};
use crew_testkit::placement::{self as support, Logs};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams};
use tokio::sync::mpsc;

struct Kubernetes {
    placement: KubernetesPlacement,
    pods: Api<Pod>,
    app: String,
    slug: (PathBuf, PathBuf),
}

impl Subject for Kubernetes {
    fn placement(&self) -> &dyn Placement {
        &self.placement
    }

    fn release(&self, version: u32) -> ReleaseSpec {
        suite::release(&self.app, version, &self.slug)
    }

    /// Deletes the dyno's pod with a one-second grace period. A crash from
    /// inside the pod is out of reach: the dyno's shell is its container's
    /// PID 1, which the kernel shields from every signal it has no handler
    /// for when it comes from its own PID namespace (where `pods/exec`
    /// runs), SIGKILL included, and the API has no verb that kills a
    /// container. The pod's shell ignores the kubelet's SIGTERM, as PID 1
    /// does, so a second later the kubelet SIGKILLs it, as the Swarm and
    /// local subjects do; unlike a force delete (grace 0), the pod is gone
    /// from the API only once its container is.
    async fn kill(&self, dyno: &str) {
        let dynos = self.placement.dynos().await.expect("the app's pods");
        let pod = &dynos
            .iter()
            .find(|d| d.info.name == dyno)
            .expect("the dyno")
            .pod;
        self.pods
            .delete(pod, &DeleteParams::default().grace_period(1))
            .await
            .expect("delete the dyno's pod");
    }

    /// A step may wait for an image pull, and for pods that stop: the
    /// suite's dynos are shells that ignore SIGTERM, so a scaled-down or
    /// rolled-over pod takes its whole 30 s grace period.
    fn patience(&self) -> Duration {
        Duration::from_secs(180)
    }

    /// The pod's name for a formation's dyno (the pod spec sets `DYNO` from
    /// `metadata.name`); a one-off's `run.N`, which crew sets in its Job.
    async fn dyno_var(&self, dyno: &str) -> Option<String> {
        let dynos = self.placement.dynos().await.ok()?;
        let found = dynos.into_iter().find(|d| d.info.name == dyno)?;
        Some(if found.info.process_type == "run" {
            found.info.name
        } else {
            found.pod
        })
    }

    fn naming(&self) -> Naming {
        Naming::View
    }

    fn recovery(&self) -> Recovery {
        Recovery::Replace
    }
}

/// Deletes the app's namespace when dropped, so that a failed check leaves
/// nothing on the cluster (the suite's own `destroy` runs only when every
/// check passed). A drop cannot await, and during a panic the test's
/// runtime is unwinding, so it works on a thread of its own with a runtime
/// and a client of its own.
struct NamespaceGuard {
    kubeconfig: PathBuf,
    namespace: String,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let (kubeconfig, namespace) = (self.kubeconfig.clone(), self.namespace.clone());
        let deleted = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("a runtime: {e}"))?
                .block_on(delete_namespace(&kubeconfig, &namespace))
        })
        .join()
        .unwrap_or_else(|_| Err("the cleanup thread panicked".to_string()));
        if let Err(why) = deleted {
            eprintln!(
                "the namespace {} may be left on the cluster: {why}",
                self.namespace
            );
        }
    }
}

/// Deletes `namespace` and waits until it is gone; one already gone is done.
async fn delete_namespace(kubeconfig: &Path, namespace: &str) -> Result<(), String> {
    let client = client_from_kubeconfig(Some(kubeconfig))
        .await
        .map_err(|e| e.to_string())?;
    let namespaces: Api<Namespace> = Api::all(client);
    match namespaces
        .delete(namespace, &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
        Err(e) => return Err(format!("deleting it: {e}")),
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match namespaces.get_opt(namespace).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if Instant::now() < deadline => {}
            Ok(Some(_)) => return Err("still terminating after 180 s".to_string()),
            Err(e) => return Err(format!("waiting for it to go: {e}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kubernetes() {
    let Some(kubeconfig) = std::env::var_os("CREW_LIVE_KUBECONFIG").map(PathBuf::from) else {
        eprintln!(
            "skipped: the Kubernetes conformance suite needs a real cluster: set \
             CREW_LIVE_KUBECONFIG to a kubeconfig whose context may create and delete \
             namespaces, and CREW_LIVE_REGISTRY to a registry crew can push to and the \
             cluster can pull from"
        );
        return;
    };
    let Ok(registry) = std::env::var("CREW_LIVE_REGISTRY") else {
        eprintln!(
            "skipped: CREW_LIVE_KUBECONFIG is set but CREW_LIVE_REGISTRY is not: the suite's \
             images must be pushed to a registry that crew can push to and the cluster can \
             pull from (HOST[:PORT], http:// in front for plain HTTP)"
        );
        return;
    };
    if support::busybox().is_none() {
        eprintln!(
            "skipped: the Kubernetes conformance suite builds its images from busybox, which \
             is not installed (apt-get install busybox-static)"
        );
        return;
    }
    let started = Instant::now();
    let client = client_from_kubeconfig(Some(&kubeconfig))
        .await
        .expect("a client from CREW_LIVE_KUBECONFIG");
    // A name of its own, so that two runs, or a leftover of one, never meet.
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let app = format!(
        "conformance-{}-{}",
        std::process::id(),
        since_epoch % 1_000_000
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (tx, rx) = mpsc::channel(1024);
    let logs = Logs::collect(rx);
    let config = KubernetesConfig {
        registry: Some(registry),
        base_rootfs: Some(support::busybox_rootfs(dir.path())),
        // Often enough that the log task sees a web pod `starting` before
        // it is ready, which is when it says so.
        poll_interval: Duration::from_millis(500),
        ..KubernetesConfig::default()
    };
    let placement =
        KubernetesPlacement::new(client.clone(), &app, config, tx).expect("a placement");
    let _guard = NamespaceGuard {
        kubeconfig,
        namespace: placement.namespace().to_string(),
    };
    let subject = Kubernetes {
        pods: Api::namespaced(client, placement.namespace()),
        placement,
        app,
        slug: support::slug(dir.path()),
    };
    eprintln!(
        "conformance against KubernetesPlacement (namespace {}):",
        subject.placement.namespace()
    );
    suite::suite(&subject, &logs).await;
    eprintln!("kubernetes tier: {:?}", started.elapsed());
}
