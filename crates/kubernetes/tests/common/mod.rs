//! What the stand-ins of the API server in several test files share.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A stand-in API server on a fresh loopback port: HTTP/1.1, upgrades
/// allowed, every request answered by `handle`. Gives its URL.
pub async fn serve<H, Fut>(handle: H) -> String
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let answer = handle(request);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    url
}

/// A request's body as JSON; null when it has none, or none that parses.
pub async fn json_body(request: Request<Incoming>) -> Value {
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// The `Status` an API server answers a verb it does not take with.
pub fn method_not_allowed() -> Response<Full<Bytes>> {
    json_response(
        405,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": "MethodNotAllowed", "code": 405}),
    )
}

/// A binary message on a channel of the Kubernetes channel protocols
/// (attach, port-forward): the channel's number, then the payload.
pub fn channel(number: u8, payload: &[u8]) -> Message {
    let mut frame = vec![number];
    frame.extend_from_slice(payload);
    Message::binary(frame)
}

/// The connection a stand-in's WebSocket session runs on.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

pub fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("json"),
        )))
        .expect("a response")
}

pub fn empty_list() -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []})
}

/// Answers a WebSocket upgrade (`pods/attach`, `pods/portforward`) whose
/// client offers `protocol`, and runs `session` on the connection once hyper
/// hands it over; a 400 `Status` when the offer lacks it, as an API server
/// refuses a subprotocol it does not speak.
pub fn upgrade_websocket<F, Fut>(
    request: &mut Request<Incoming>,
    protocol: &'static str,
    session: F,
) -> Response<Full<Bytes>>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = header("sec-websocket-key");
    let offer = header("sec-websocket-protocol");
    if !offer.split(',').any(|p| p.trim() == protocol) {
        return json_response(
            400,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": format!("no supported subprotocol in {offer:?}"), "code": 400}),
        );
    }
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(ws).await;
    });
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .header("sec-websocket-protocol", protocol)
        .body(Full::new(Bytes::new()))
        .expect("a response")
}

/// A request's query string (`a=1&b=x%2Fy`) as decoded pairs.
pub fn query_pairs(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Undoes a query string's percent-encoding, and `+` for a space.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8")
}
