//! The client side: one request per connection, over a Unix socket or TCP.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
pub use hyper::Method;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::ErrorBody;

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A running `crew start`'s control socket.
    Unix(PathBuf),
    /// `host:port` of a `crew server`.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "http://{addr}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not reach crew at {endpoint}: {source}")]
    Connect {
        endpoint: Endpoint,
        source: std::io::Error,
    },
    /// The TLS handshake failed: most often a certificate the trusted CAs
    /// did not sign, or one for another name.
    #[error(
        "could not talk TLS to crew at https://{address}: {source} (trust the server's CA \
         with CREW_CA=PATH/ca.pem; crew never falls back to plain HTTP)"
    )]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("talking to crew at {endpoint}: {source}")]
    Http {
        endpoint: Endpoint,
        source: hyper::Error,
    },
    /// The API said no; `message` is its explanation.
    #[error("{message}")]
    Api {
        status: StatusCode,
        id: String,
        message: String,
    },
    #[error("crew at {endpoint} answered with something unexpected: {detail}")]
    Decode { endpoint: Endpoint, detail: String },
}

/// Talks to one endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    /// TCP endpoints spoken to over TLS (`https://`).
    tls: Option<Tls>,
}

/// How a client speaks TLS: the roots it trusts and the name the server's
/// certificate must have.
#[derive(Clone)]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

impl Client {
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Client {
        Client {
            endpoint,
            token,
            tls: None,
        }
    }

    /// Speaks TLS to a TCP endpoint, trusting what `config` trusts and
    /// checking the certificate against the endpoint's host name. Never
    /// falls back to plain HTTP.
    pub fn with_tls(
        mut self,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Client, ClientError> {
        let Endpoint::Tcp(addr) = &self.endpoint else {
            return Err(ClientError::Decode {
                endpoint: self.endpoint.clone(),
                detail: "TLS is only for a server's TCP address".into(),
            });
        };
        let host = match addr.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => addr.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
            ClientError::Decode {
                endpoint: self.endpoint.clone(),
                detail: format!("`{host}` is not a name a certificate can have: {e}"),
            }
        })?;
        self.tls = Some(Tls {
            connector: tokio_rustls::TlsConnector::from(config),
            name,
        });
        Ok(self)
    }

    /// Whether requests go over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let body = body.map(|b| (b, "application/json"));
        self.send_with(method, path, body, None).await
    }

    /// Sends one request, with a body of the given content type; with
    /// `upgrade`, asking to switch the connection to that protocol.
    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
        upgrade: Option<&str>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let connect_error = |source| ClientError::Connect {
            endpoint: self.endpoint.clone(),
            source,
        };
        let http_error = |source| ClientError::Http {
            endpoint: self.endpoint.clone(),
            source,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(
                hyper::header::ACCEPT,
                "application/vnd.heroku+json; version=3",
            )
            .header(
                hyper::header::HOST,
                match &self.endpoint {
                    Endpoint::Unix(_) => "localhost",
                    Endpoint::Tcp(addr) => addr.as_str(),
                },
            );
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = body.map(|(bytes, content_type)| {
            request =
                std::mem::take(&mut request).header(hyper::header::CONTENT_TYPE, content_type);
            bytes
        });
        if let Some(protocol) = upgrade {
            request = request
                .header(hyper::header::CONNECTION, "upgrade")
                .header(hyper::header::UPGRADE, protocol);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Decode {
                endpoint: self.endpoint.clone(),
                detail: e.to_string(),
            })?;
        let mut sender = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_error)?;
                http1_over(stream).await.map_err(http_error)?
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(connect_error)?;
                if let Some(tls) = &self.tls {
                    let stream = tls
                        .connector
                        .connect(tls.name.clone(), stream)
                        .await
                        .map_err(|source| ClientError::Tls {
                            address: addr.clone(),
                            source,
                        })?;
                    http1_over(stream).await.map_err(http_error)?
                } else {
                    http1_over(stream).await.map_err(http_error)?
                }
            }
        };
        sender.send_request(request).await.map_err(http_error)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                endpoint: self.endpoint.clone(),
                source,
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            endpoint: self.endpoint.clone(),
            detail: e.to_string(),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::GET, path, None).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::DELETE, path, None).await
    }

    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            endpoint: self.endpoint.clone(),
            detail: e.to_string(),
        })?;
        self.json(method, path, Some(body)).await
    }

    /// POSTs JSON and returns the streamed body, such as a build's output.
    pub async fn stream_post(&self, path: &str, body: Vec<u8>) -> Result<Incoming, ClientError> {
        streamed(self.send(Method::POST, path, Some(body)).await?).await
    }

    /// POSTs JSON asking to switch the connection to `protocol`; the switched
    /// connection, or the API's error.
    pub async fn upgrade(
        &self,
        path: &str,
        body: Vec<u8>,
        protocol: &str,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ClientError> {
        let response = self
            .send_with(
                Method::POST,
                path,
                Some((body, "application/json")),
                Some(protocol),
            )
            .await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(response_error(response).await);
        }
        hyper::upgrade::on(response)
            .await
            .map(TokioIo::new)
            .map_err(|source| ClientError::Http {
                endpoint: self.endpoint.clone(),
                source,
            })
    }

    /// PUTs `bytes` as they are, such as a source tarball.
    pub async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<(), ClientError> {
        let response = self
            .send_with(
                Method::PUT,
                path,
                Some((bytes, "application/octet-stream")),
                None,
            )
            .await?;
        streamed(response).await.map(drop)
    }

    /// A streamed body, such as a log stream, to read frame by frame.
    pub async fn stream(&self, path: &str) -> Result<Incoming, ClientError> {
        streamed(self.send(Method::GET, path, None).await?).await
    }
}

/// The body of a successful response, unread; an error response's JSON as an
/// error.
async fn streamed(response: hyper::Response<Incoming>) -> Result<Incoming, ClientError> {
    if response.status().is_success() {
        return Ok(response.into_body());
    }
    Err(response_error(response).await)
}

/// An error response's JSON (or whatever it says) as an error.
async fn response_error(response: hyper::Response<Incoming>) -> ClientError {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    api_error(status, &bytes)
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Api {
            status,
            id: e.id,
            message: e.message,
        },
        Err(_) => ClientError::Api {
            status,
            id: String::from("unknown"),
            message: format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        },
    }
}

/// An HTTP/1.1 connection over `stream`, driven in the background (upgrades
/// included, for attached one-offs): plain TCP, TLS or a Unix socket alike.
async fn http1_over<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection.with_upgrades());
    Ok(sender)
}
