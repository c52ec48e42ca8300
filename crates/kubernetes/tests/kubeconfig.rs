//! `client_from_kubeconfig` and the real transport under it, against a
//! stand-in API server on 127.0.0.1 that answers one canned pod list. Like the
//! mocked tests, the answer is ours, not a cluster's; what this adds is that a
//! kubeconfig file is read and that the client's HTTP stack (not a mock
//! service) carries the request.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crew_engine::{DynoState, Placement};
use crew_kubernetes::{
    KubernetesConfig, KubernetesError, KubernetesPlacement, client_from_kubeconfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn kubeconfig(server: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temp file");
    write!(
        file,
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
users:
- name: tester
  user:
    token: not-a-real-token
contexts:
- name: local
  context:
    cluster: local
    user: tester
current-context: local
"
    )
    .expect("write the kubeconfig");
    file
}

/// Answers one request with a pod list, and returns the request's head.
async fn serve_once(listener: TcpListener) -> String {
    let (mut stream, _) = listener.accept().await.expect("a connection");
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {},
        "items": [{
            "metadata": {"name": "shop-web-a", "uid": "u1",
                         "creationTimestamp": "2026-01-01T00:00:01Z",
                         "labels": {"crew/process-type": "web"}},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }],
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(response.as_bytes())
        .await
        .expect("write the response");
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn a_client_from_a_kubeconfig_file_reaches_its_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(serve_once(listener));
    let file = kubeconfig(&format!("http://{address}"));
    let client = client_from_kubeconfig(Some(file.path()))
        .await
        .expect("a client");
    let (logs, _) = mpsc::channel(1);
    let placement = KubernetesPlacement::new(client, "shop", KubernetesConfig::default(), logs)
        .expect("a placement");
    let dynos = tokio::time::timeout(Duration::from_secs(10), placement.ps())
        .await
        .expect("ps within 10s");
    assert_eq!(dynos.len(), 1);
    assert_eq!(dynos[0].name, "web.1");
    assert_eq!(dynos[0].state, DynoState::Up);
    let head = server.await.expect("the server");
    let request_line = head.lines().next().unwrap_or_default().to_string();
    assert_eq!(
        request_line,
        "GET /api/v1/namespaces/crew-shop/pods?&labelSelector=app.kubernetes.io%2Fpart-of%3Dshop HTTP/1.1"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer not-a-real-token"),
        "{head}"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_an_error_that_names_what_was_asked() {
    // Bound, then closed: nothing listens there any more.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let file = kubeconfig(&format!("https://{address}"));
    let client = client_from_kubeconfig(Some(file.path()))
        .await
        .expect("a client: nothing is dialled yet");
    let (logs, _) = mpsc::channel(1);
    let placement = KubernetesPlacement::new(client, "shop", KubernetesConfig::default(), logs)
        .expect("a placement");
    let error = placement.dynos().await.expect_err("nothing listens");
    assert!(
        error.to_string().starts_with("kubernetes: listing pods: "),
        "{error}"
    );
    assert!(
        placement.ps().await.is_empty(),
        "ps has no room for an error"
    );
}

#[tokio::test]
async fn a_missing_kubeconfig_says_so() {
    let Err(error) = client_from_kubeconfig(Some(Path::new("/nonexistent/kubeconfig"))).await
    else {
        panic!("a client from no file");
    };
    assert!(matches!(error, KubernetesError::Kubeconfig(_)), "{error}");
    assert!(error.to_string().contains("kubeconfig"), "{error}");
}

#[tokio::test]
async fn names_the_cluster_would_refuse_are_refused_up_front() {
    let file = kubeconfig("http://127.0.0.1:9");
    let client = client_from_kubeconfig(Some(file.path()))
        .await
        .expect("a client");
    let (logs, _) = mpsc::channel(1);
    let bad_app = KubernetesPlacement::new(
        client.clone(),
        "shop-",
        KubernetesConfig::default(),
        logs.clone(),
    );
    assert!(matches!(bad_app, Err(KubernetesError::Name(_))));
    let bad_prefix = KubernetesPlacement::new(
        client,
        "shop",
        KubernetesConfig {
            namespace_prefix: "Crew".to_string(),
            ..KubernetesConfig::default()
        },
        logs,
    );
    assert!(matches!(bad_prefix, Err(KubernetesError::Namespace(_))));
}
