//! The router's HTTP/1 relay against dynos written here byte by byte, for the
//! framings and connection habits a Python test app does not show: chunked
//! and streamed bodies, large uploads, `100-continue`, pipelining, `HEAD`,
//! bodies that end with the connection, kept connections the dyno closed, and
//! requests that are not HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crew_engine::{DynoState, WebBackend};
use crew_router::{AppRoute, Router, RouterConfig, Routes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(10);

struct OneApp {
    backends: watch::Receiver<Arc<Vec<WebBackend>>>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Routes for OneApp {
    fn route(&self, host: &str) -> Option<AppRoute> {
        let lines = self.lines.clone();
        // `down.localhost` is the same app in maintenance mode.
        (host == "app.localhost" || host == "down.localhost").then(|| AppRoute {
            app: "app".to_string(),
            backends: self.backends.clone(),
            log: Arc::new(move |line| lines.lock().unwrap().push(line)),
            maintenance: host == "down.localhost",
        })
    }
}

/// A router in front of one dyno that runs `serve` for every connection.
struct Setup {
    router: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    _backends: watch::Sender<Arc<Vec<WebBackend>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn setup<F, Fut>(serve: F) -> Setup
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let config = RouterConfig {
        request_timeout: Duration::from_secs(5),
        ..RouterConfig::default()
    };
    setup_with(config, serve).await
}

async fn setup_with<F, Fut>(config: RouterConfig, serve: F) -> Setup
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dyno = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dyno_addr = dyno.local_addr().unwrap();
    let dyno_task = tokio::spawn(async move {
        while let Ok((stream, _)) = dyno.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    let (tx, rx) = watch::channel(Arc::new(vec![WebBackend {
        name: "web.1".to_string(),
        addr: dyno_addr,
        state: DynoState::Up,
        namespace: None,
        requests: Default::default(),
    }]));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_addr = listener.local_addr().unwrap();
    let router = Arc::new(Router::new(
        OneApp {
            backends: rx,
            lines: lines.clone(),
        },
        config,
        router_addr.port(),
    ));
    let router_task = tokio::spawn(router.serve(listener));
    Setup {
        router: router_addr,
        lines,
        _backends: tx,
        tasks: vec![dyno_task, router_task],
    }
}

/// Reads a request head, returning it with whatever body bytes came with it.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0; 65536];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Reads from `stream` until `buf` holds `want` bytes or more.
async fn read_at_least(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize) {
    timeout(DEADLINE, async {
        while buf.len() < want {
            let mut chunk = [0; 65536];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed after {} of {want} bytes", buf.len());
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("bytes in time");
}

/// Reads until `buf` contains `needle`.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) {
    timeout(DEADLINE, async {
        while !buf.windows(needle.len()).any(|w| w == needle) {
            let mut chunk = [0; 65536];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed before {:?}: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {:?} in time, got {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(buf)
        )
    });
}

/// Reads until the router closes the connection.
async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    timeout(DEADLINE, stream.read_to_end(&mut all))
        .await
        .expect("closed in time")
        .expect("read");
    String::from_utf8_lossy(&all).into_owned()
}

/// The access lines, once there are `n`: they are written after the response,
/// and a router thread sends its lines in batches.
async fn access_lines(setup: &Setup, n: usize) -> Vec<String> {
    timeout(DEADLINE, async {
        loop {
            let lines = setup.lines.lock().unwrap().clone();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} access lines: {:?}", setup.lines.lock().unwrap()))
}

async fn connect(setup: &Setup) -> TcpStream {
    TcpStream::connect(setup.router).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_responses_stream_and_the_connection_goes_on() {
    let (go_tx, go_rx) = mpsc::unbounded_channel::<()>();
    let go = Arc::new(tokio::sync::Mutex::new(go_rx));
    let setup = setup(move |mut stream| {
        let go = go.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(head) = read_head(&mut stream, &mut buf).await {
                if head.starts_with("GET /stream") {
                    stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
                        )
                        .await
                        .unwrap();
                    // The rest only once the client has seen the first chunk.
                    go.lock().await.recv().await;
                    stream
                        .write_all(b"6\r\nsecond\r\n0\r\nX-Trailer: yes\r\n\r\n")
                        .await
                        .unwrap();
                } else {
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
                        .await
                        .unwrap();
                }
            }
        }
    })
    .await;
    let mut client = connect(&setup).await;
    client
        .write_all(b"GET /stream HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut client, &mut got, b"5\r\nfirst\r\n").await;
    assert!(!got.windows(6).any(|w| w == b"second"));
    go_tx.send(()).unwrap();
    read_until(&mut client, &mut got, b"X-Trailer: yes\r\n\r\n").await;
    client
        .write_all(b"GET /after HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut client, &mut got, b"next").await;
    let lines = access_lines(&setup, 2).await;
    assert!(
        lines[0].contains("path=\"/stream\"") && lines[0].contains("status=200"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_in_maintenance_gets_the_maintenance_page_and_h80_and_no_dyno_sees_it() {
    let seen = Arc::new(Mutex::new(0usize));
    let counted = seen.clone();
    let setup = setup(move |mut stream| {
        let counted = counted.clone();
        async move {
            let mut buf = Vec::new();
            while read_head(&mut stream, &mut buf).await.is_some() {
                *counted.lock().unwrap() += 1;
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    let mut client = connect(&setup).await;
    // A kept connection goes on after the page; a body it did not read
    // closes it.
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: down.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut client, &mut got, b"</html>\n").await;
    let page = String::from_utf8_lossy(&got).into_owned();
    assert!(page.starts_with("HTTP/1.1 503 "), "{page}");
    assert!(page.contains("maintenance"), "{page}");
    client
        .write_all(b"POST /b HTTP/1.1\r\nHost: down.localhost\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let rest = read_to_end(&mut client).await;
    assert!(rest.starts_with("HTTP/1.1 503 "), "{rest}");
    let lines = access_lines(&setup, 2).await;
    for line in &lines {
        assert!(
            line.starts_with("at=info code=H80 desc=\"Maintenance mode\" method=")
                && line.contains("host=down.localhost")
                && line.contains("status=503"),
            "{lines:?}"
        );
    }
    assert_eq!(*seen.lock().unwrap(), 0, "a dyno saw a request");
    // The same app out of maintenance reaches its dyno.
    let mut client = connect(&setup).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_end(&mut client).await.ends_with("ok"));
}

/// A dyno that answers every request with the length of its body and a
/// checksum, for uploads of either framing.
async fn counting_dyno(mut stream: TcpStream) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut stream, &mut buf).await {
        let body: Vec<u8> = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            let mut body = Vec::new();
            loop {
                while !buf.windows(2).any(|w| w == b"\r\n") {
                    let mut chunk = [0; 65536];
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                let end = buf.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&buf[..end]).unwrap(), 16).unwrap();
                buf.drain(..end + 2);
                while buf.len() < size + 2 {
                    let mut chunk = [0; 65536];
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            let want = content_length(&head);
            while buf.len() < want {
                let mut chunk = [0; 65536];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..want).collect()
        };
        let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
        let text = format!("len={} sum={sum}", body.len());
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn large_uploads_pass_through_in_either_framing_and_with_100_continue() {
    let setup = setup(counting_dyno).await;
    let body: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let expected = format!("len={} sum={sum}", body.len());

    let mut client = connect(&setup).await;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut client, &mut got, expected.as_bytes()).await;

    // Chunked, in uneven pieces, on the same connection.
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    for piece in body.chunks(777_777) {
        client
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        client.write_all(piece).await.unwrap();
        client.write_all(b"\r\n").await.unwrap();
    }
    client.write_all(b"0\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    read_until(&mut client, &mut got, expected.as_bytes()).await;

    // The client waits for the router's go-ahead before sending the body.
    let small = b"hello";
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut client, &mut got, b"HTTP/1.1 100 Continue\r\n\r\n").await;
    client.write_all(small).await.unwrap();
    read_until(&mut client, &mut got, b"len=5 sum=532").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    let setup = setup(|mut stream| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buf).await {
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                path.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
        }
    })
    .await;
    let mut client = connect(&setup).await;
    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: app.localhost\r\n\r\nGET /two HTTP/1.1\r\nHost: app.localhost\r\n\r\nGET /three HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_end(&mut client).await;
    let one = all.find("/one").expect(&all);
    let two = all.find("/two").expect(&all);
    let three = all.find("/three").expect(&all);
    assert!(one < two && two < three, "{all}");
    assert!(all.contains("connection: close"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn head_responses_and_bodies_that_end_with_the_connection() {
    let setup = setup(|mut stream| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buf).await {
            if head.starts_with("HEAD") {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n")
                    .await
                    .unwrap();
            } else {
                // No length: the body is whatever comes before the close.
                stream
                    .write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
                    .await
                    .unwrap();
                return;
            }
        }
    })
    .await;
    let mut client = connect(&setup).await;
    client
        .write_all(b"HEAD / HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut client, &mut got, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.contains("content-length: 1000"), "{head}");
    assert!(
        !head.contains("keep-alive"),
        "the dyno's hop-by-hop headers are the dyno's: {head}"
    );
    // No body came; the connection takes the next request.
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        .await
        .unwrap();
    let rest = read_to_end(&mut client).await;
    assert!(rest.starts_with("HTTP/1.0 200 OK\r\n"), "{rest}");
    assert!(rest.contains("connection: close\r\n"), "{rest}");
    assert!(rest.ends_with("\r\n\r\nuntil the end"), "{rest}");
    let lines = access_lines(&setup, 2).await;
    assert!(lines[1].contains("bytes=13"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_connection_the_dyno_closed_is_replaced() {
    // Answers one request per connection, then closes without saying so.
    let setup = setup(|mut stream| async move {
        let mut buf = Vec::new();
        if read_head(&mut stream, &mut buf).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    for _ in 0..20 {
        let mut client = connect(&setup).await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let all = read_to_end(&mut client).await;
        assert!(
            all.starts_with("HTTP/1.1 200 OK") && all.ends_with("ok"),
            "{all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_that_are_not_http_get_a_400_and_huge_heads_a_431() {
    let setup = setup(|_stream| async {}).await;
    let mut client = connect(&setup).await;
    client.write_all(b"HELLO THERE\r\n\r\n").await.unwrap();
    let all = read_to_end(&mut client).await;
    assert!(all.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{all}");

    let mut client = connect(&setup).await;
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_end(&mut client).await;
    assert!(all.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{all}");
    assert!(
        all.contains("both Transfer-Encoding and Content-Length"),
        "{all}"
    );

    let mut client = connect(&setup).await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    // The router may answer and close before it has read it all.
    let _ = client.write_all(huge.as_bytes()).await;
    let mut got = Vec::new();
    read_at_least(&mut client, &mut got, 12).await;
    assert!(
        got.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// A router like [`setup`]'s whose idle timeout is short.
async fn setup_idle<F, Fut>(idle: Duration, serve: F) -> Setup
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    setup_with(
        RouterConfig {
            request_timeout: Duration::from_secs(5),
            idle_timeout: idle,
            ..RouterConfig::default()
        },
        serve,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_dynos_and_clients_are_cut_off_with_h15_and_h28() {
    let idle = Duration::from_millis(300);
    // Half a body, then nothing; or a request whose body never comes.
    let setup = setup_idle(idle, |mut stream| async move {
        let mut buf = Vec::new();
        if let Some(head) = read_head(&mut stream, &mut buf).await
            && head.starts_with("GET /stall")
        {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
    .await;

    let mut client = connect(&setup).await;
    client
        .write_all(b"GET /stall HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_end(&mut client).await;
    assert!(all.ends_with("\r\n\r\nhalf"), "{all}");
    let lines = access_lines(&setup, 1).await;
    assert!(
        lines[0].starts_with("at=error code=H15 desc=\"Idle connection\"")
            && lines[0].contains("path=\"/stall\""),
        "{lines:?}"
    );

    let mut client = connect(&setup).await;
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    read_to_end(&mut client).await;
    let lines = access_lines(&setup, 2).await;
    assert!(
        lines[1].starts_with("at=error code=H28 desc=\"Client Connection Idle\""),
        "{lines:?}"
    );

    // A kept connection with no next request is closed, without a line.
    let mut client = connect(&setup).await;
    let started = std::time::Instant::now();
    assert_eq!(read_to_end(&mut client).await, "");
    assert!(started.elapsed() >= idle, "{:?}", started.elapsed());
    assert_eq!(setup.lines.lock().unwrap().len(), 2);
}

/// What a dyno of [`setup_dynos`] does with each connection.
type Serve = fn(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A router in front of dynos that each run their own `serve`, all `up`.
async fn setup_dynos(serves: Vec<Serve>) -> Setup {
    let mut tasks = Vec::new();
    let mut list = Vec::new();
    for (i, serve) in serves.into_iter().enumerate() {
        let dyno = TcpListener::bind("127.0.0.1:0").await.unwrap();
        list.push(WebBackend {
            name: format!("web.{}", i + 1),
            addr: dyno.local_addr().unwrap(),
            state: DynoState::Up,
            namespace: None,
            requests: Default::default(),
        });
        tasks.push(tokio::spawn(async move {
            while let Ok((stream, _)) = dyno.accept().await {
                tokio::spawn(serve(stream));
            }
        }));
    }
    let (tx, rx) = watch::channel(Arc::new(list));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_addr = listener.local_addr().unwrap();
    let config = RouterConfig {
        request_timeout: Duration::from_secs(5),
        ..RouterConfig::default()
    };
    let router = Arc::new(Router::new(
        OneApp {
            backends: rx,
            lines: lines.clone(),
        },
        config,
        router_addr.port(),
    ));
    tasks.push(tokio::spawn(router.serve(listener)));
    Setup {
        router: router_addr,
        lines,
        _backends: tx,
        tasks,
    }
}

/// How many requests the dying dyno of these tests was sent.
static DYING_GOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A dyno on its way out: it reads a request, then closes the connection
/// without an answer, as one that got SIGTERM (or SIGKILL) under it does.
fn dying(mut stream: TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut buf = Vec::new();
        if read_head(&mut stream, &mut buf).await.is_some() {
            DYING_GOT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    })
}

/// Answers every request on a kept connection with `ok`.
fn answering(mut stream: TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buf).await {
            let length = content_length(&head);
            read_at_least(&mut stream, &mut buf, length).await;
            buf.drain(..length);
            let answered = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            if answered.is_err() {
                return;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_request_a_dyno_closed_on_without_answering_goes_to_another_dyno() {
    let setup = setup_dynos(vec![dying, answering]).await;
    let mut client = connect(&setup).await;
    let mut buf = Vec::new();
    // Round robin sends every other request to the dying dyno first.
    for method in ["GET", "HEAD", "PUT", "DELETE", "GET", "GET"] {
        let request = format!("{method} / HTTP/1.1\r\nHost: app.localhost\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let head = timeout(DEADLINE, read_head(&mut client, &mut buf))
            .await
            .expect("an answer in time")
            .expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{method}: {head}");
        if method != "HEAD" {
            read_at_least(&mut client, &mut buf, 2).await;
            buf.drain(..2);
        }
    }
    let lines = access_lines(&setup, 6).await;
    assert!(lines.iter().all(|l| l.contains("dyno=web.2 ")), "{lines:?}");
}

static POSTS_GOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// [`dying`], counting in [`POSTS_GOT`].
fn dying_on_posts(mut stream: TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut buf = Vec::new();
        if read_head(&mut stream, &mut buf).await.is_some() {
            POSTS_GOT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_a_dyno_closed_on_without_answering_is_not_sent_again() {
    // The dyno may have acted on it: only the client can tell whether to
    // send it again.
    let setup = setup_dynos(vec![dying_on_posts]).await;
    let mut client = connect(&setup).await;
    client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        .await
        .unwrap();
    let all = read_to_end(&mut client).await;
    assert!(all.starts_with("HTTP/1.1 503"), "{all}");
    let lines = access_lines(&setup, 1).await;
    assert!(lines[0].contains("code=H13"), "{lines:?}");
    assert_eq!(POSTS_GOT.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A dyno answering every request with `200 ok`.
async fn ok_dyno(mut stream: TcpStream) {
    let mut buf = Vec::new();
    while read_head(&mut stream, &mut buf).await.is_some() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Whether the router closes `stream` within `within`, reading whatever it
/// sends first.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// One request on a new connection from `from`; the response, if any.
async fn get_from(setup: &Setup, from: &str) -> Option<String> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(format!("{from}:0").parse().ok()?).ok()?;
    let mut stream = socket.connect(setup.router).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut response = Vec::new();
    timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_from_one_client_is_capped_and_other_clients_still_get_in() {
    let config = RouterConfig {
        max_connections: 64,
        max_per_client: 16,
        ..RouterConfig::default()
    };
    let setup = setup_with(config, ok_dyno).await;
    // Each sends one header line and stops, as a flood of half requests does.
    let mut flood = Vec::new();
    for _ in 0..200 {
        let Ok(mut stream) = TcpStream::connect(setup.router).await else {
            continue;
        };
        let _ = stream.write_all(b"GET / HTTP/1.1\r\n").await;
        flood.push(stream);
    }
    let mut closed = 0;
    for stream in &mut flood {
        if closed_within(stream, Duration::from_millis(50)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 200 - 16,
        "only {closed} of 200 connections from one address were closed"
    );
    let answer = get_from(&setup, "127.0.0.2").await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(flood);
    let mut again = None;
    for _ in 0..100 {
        again = get_from(&setup, "127.0.0.1").await;
        if again
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        again.is_some_and(|a| a.starts_with("HTTP/1.1 200")),
        "the flooding address gets in again once its connections close"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_trickled_a_byte_at_a_time_is_cut_off() {
    let idle = Duration::from_millis(300);
    let setup = setup_idle(idle, ok_dyno).await;
    let mut client = connect(&setup).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    // A byte every 100 ms never leaves the connection idle for 300 ms; the
    // head as a whole must still arrive within that.
    let mut sent = 0;
    let cut = loop {
        if sent == 50 {
            break false;
        }
        if client.write_all(b"a").await.is_err()
            || closed_within(&mut client, Duration::from_millis(100)).await
        {
            break true;
        }
        sent += 1;
    };
    assert!(
        cut,
        "a head trickled for {sent} bytes (5 s) was still being read"
    );
}
