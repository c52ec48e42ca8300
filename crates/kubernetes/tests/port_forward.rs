//! Web pods reached through the API server's `pods/portforward`, for a crew
//! server outside the cluster's network, against a stand-in API server.
//!
//! These tests are **our reading of the Kubernetes API, not evidence that a
//! real cluster behaves so**. The stand-in is a real HTTP/1.1 server on
//! 127.0.0.1 that a kube `Client` reaches over TCP. It answers the apply,
//! lists one EndpointSlice whose only endpoint is a pod at an address that
//! is not routed anywhere, and takes the `portforward` WebSocket upgrade,
//! where it speaks the port-forward channel protocol as we read kube-rs and
//! the Kubernetes sources: channel 0 carries the data of the first port and
//! channel 1 its errors, and each channel's first message is the port number
//! (two bytes, little-endian). It carries channel 0 to and from a real HTTP
//! server of the test's, the pod.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crew_engine::{Placement, ReleaseSpec, ReleaseType, WebBackend};
use crew_kubernetes::{KubernetesConfig, KubernetesPlacement};
use crew_procfile::Formation;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use common::{
    Socket, channel, empty_list, json_body, json_response, method_not_allowed, upgrade_websocket,
};

const NS: &str = "/api/v1/namespaces/crew-shop";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/crew-shop/endpointslices";
const POD: &str = "shop-web-7d9f8-x2k4q";
/// A documentation address (RFC 5737): nothing answers there, so a backend
/// at the pod's IP could not serve.
const POD_IP: &str = "192.0.2.7";
/// The web container's `PORT`.
const PORT: u16 = 5000;
/// Every wait of these tests ends by then.
const WAIT: Duration = Duration::from_secs(20);

/// What the stand-in saw and is told.
#[derive(Default)]
struct Stand {
    /// The `ports` query of every port-forward upgrade.
    forwards: Mutex<Vec<String>>,
    /// Off: the slice lists no endpoint, as when the pod has gone.
    endpoint: AtomicBool,
}

/// The stand-in API server, forwarding to `pod` (the pod's `PORT`).
async fn stand_in(pod: SocketAddr) -> (String, Arc<Stand>) {
    let stand = Arc::new(Stand {
        endpoint: AtomicBool::new(true),
        ..Stand::default()
    });
    let shared = stand.clone();
    let url = common::serve(move |request| handle(request, shared.clone(), pod)).await;
    (url, stand)
}

async fn handle(
    mut request: Request<Incoming>,
    stand: Arc<Stand>,
    pod: SocketAddr,
) -> Response<Full<Bytes>> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = common::query_pairs(request.uri().query());
    if path == format!("{NS}/pods/{POD}/portforward") {
        stand
            .forwards
            .lock()
            .expect("record")
            .push(query.get("ports").cloned().unwrap_or_default());
        return upgrade_websocket(&mut request, "v4.channel.k8s.io", move |ws| {
            forward(ws, pod)
        });
    }
    let body = json_body(request).await;
    match (method.as_str(), path.as_str()) {
        // The apply: server-side apply answers with the object.
        ("PATCH", _) => json_response(200, &body),
        ("GET", SLICES) => {
            let endpoints = if stand.endpoint.load(Ordering::SeqCst) {
                json!([{
                    "addresses": [POD_IP],
                    "conditions": {"ready": true},
                    "targetRef": {"kind": "Pod", "name": POD, "namespace": "crew-shop"},
                }])
            } else {
                json!([])
            };
            json_response(
                200,
                &json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                    "metadata": {},
                    "items": [{
                        "metadata": {"name": "shop-web-abcde",
                                     "labels": {"kubernetes.io/service-name": "shop-web"}},
                        "addressType": "IPv4",
                        "endpoints": endpoints,
                        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
                    }],
                }),
            )
        }
        ("GET", _) => json_response(200, &empty_list()),
        _ => method_not_allowed(),
    }
}

/// One forwarded connection, as the stand-in plays the kubelet: both
/// channels announce the port, then channel 0 is carried to the pod and
/// back until either side ends.
async fn forward(mut ws: Socket, pod: SocketAddr) {
    let port = PORT.to_le_bytes();
    if ws.send(channel(0, &port)).await.is_err() || ws.send(channel(1, &port)).await.is_err() {
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(pod).await else {
        let _ = ws.send(channel(1, b"connection refused")).await;
        return;
    };
    let mut buf = vec![0; 16 * 1024];
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Binary(frame))) if frame.first() == Some(&0) => {
                    if upstream.write_all(&frame[1..]).await.is_err() {
                        break;
                    }
                }
                Some(Ok(message)) if !message.is_close() => {}
                _ => break,
            },
            read = upstream.read(&mut buf) => match read {
                Ok(n) if n > 0 => {
                    if ws.send(channel(0, &buf[..n])).await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
        }
    }
    let _ = ws.close(None).await;
}

/// The pod: answers every request on a connection with `hello from the
/// pod`, keeping the connection.
async fn pod() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        let body = "hello from the pod";
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends `GET /` on `stream` and reads the response to its end.
async fn get(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .expect("send the request");
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    let done = |got: &[u8]| {
        let text = String::from_utf8_lossy(got);
        text.split_once("\r\n\r\n")
            .is_some_and(|(_, body)| body == "hello from the pod")
    };
    while !done(&got) {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("an answer within the deadline")
            .expect("read the answer");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn release() -> ReleaseSpec {
    ReleaseSpec {
        app: "shop".to_string(),
        version: 2,
        types: vec![ReleaseType {
            name: "web".to_string(),
            command: "python3 -m http.server $PORT".to_string(),
            size: None,
        }],
        env: Vec::new(),
        slug_archive: PathBuf::new(),
        slug_dir: PathBuf::new(),
        command_prefix: None,
    }
}

/// Waits until the backends are what `f` accepts.
async fn backends_until(
    placement: &KubernetesPlacement,
    what: &str,
    f: impl Fn(&[WebBackend]) -> bool,
) -> Arc<Vec<WebBackend>> {
    let mut backends = placement.web_backends();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = backends.borrow_and_update().clone();
        if f(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {now:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), backends.changed()).await;
    }
}

#[tokio::test]
async fn web_pods_are_reached_through_the_api_server_from_loopback() {
    let pod = pod().await;
    let (url, stand) = stand_in(pod).await;
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("a URL"))).expect("a client");
    let (logs, _events) = mpsc::channel(64);
    let placement = KubernetesPlacement::new(
        client,
        "shop",
        KubernetesConfig {
            port_forward: true,
            poll_interval: Duration::from_millis(100),
            ..KubernetesConfig::default()
        },
        logs,
    )
    .expect("a placement");
    tokio::time::timeout(
        WAIT,
        placement.apply(release(), Formation::new(["web".to_string()], 1)),
    )
    .await
    .expect("the apply within the deadline")
    .expect("the apply");

    // The pod is a backend on loopback, not at its IP.
    let backends = backends_until(&placement, "one backend", |b| b.len() == 1).await;
    let backend = &backends[0];
    assert_eq!(backend.name, POD, "named after its pod until ps knows it");
    assert!(backend.addr.ip().is_loopback(), "{backend:?}");
    assert_ne!(backend.addr.ip().to_string(), POD_IP);

    // Two requests on one connection: one forward. Another connection:
    // another forward. Each asks for the pod's PORT.
    let mut first = TcpStream::connect(backend.addr).await.expect("connect");
    for _ in 0..2 {
        let answer = get(&mut first).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }
    let mut second = TcpStream::connect(backend.addr).await.expect("connect");
    get(&mut second).await;
    let forwards = stand.forwards.lock().expect("record").clone();
    assert_eq!(forwards, vec![PORT.to_string(), PORT.to_string()]);

    // The pod goes: so do its backend and its listener.
    stand.endpoint.store(false, Ordering::SeqCst);
    backends_until(&placement, "no backend", |b| b.is_empty()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(backend.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gone pod's listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A connection made before goes on.
    get(&mut first).await;
    placement.shutdown();
}
