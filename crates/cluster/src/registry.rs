//! Pushing a release's image to a registry, over the OCI Distribution API
//! (the registry HTTP API v2), so that a cluster's nodes can pull it.
//!
//! A push is what `docker push` does, reduced to the one way crew needs: for
//! each blob (the layers, then the config) `HEAD /v2/NAME/blobs/DIGEST`, and
//! when the registry lacks it, `POST /v2/NAME/blobs/uploads/` and one `PUT` of
//! the whole blob to the upload's `Location` with `digest=` added (a
//! monolithic upload); then `PUT /v2/NAME/manifests/TAG` with the OCI
//! manifest. The registry checks every digest against the bytes, so a push
//! that succeeds is one a client can pull and verify.
//!
//! A registry is named as image references name one, `HOST[:PORT][/PATH]`,
//! and spoken to over HTTPS, or over plain HTTP when the host is a loopback
//! one (as docker's default insecure registries are) or the name starts with
//! `http://`. HTTPS trusts the machine's root certificates. There are no
//! credentials: a registry that asks for them gets a clear refusal back.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::image::{Image, OCI_MANIFEST};

/// What every request here sends.
type Body = UnsyncBoxBody<Bytes, io::Error>;

/// How long a request other than a blob upload may take, to its response's
/// head: a registry that hangs fails the push instead of the deploy waiting
/// for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest upload allowed, in bytes a second, on top of
/// [`REQUEST_TIMEOUT`]: a large base layer over a slow link needs minutes, a
/// stuck one should not take hours.
const UPLOAD_BYTES_PER_SECOND: u64 = 1 << 20;
/// How much of a refusal's body goes into the error.
const ERROR_BODY_LIMIT: usize = 2048;

/// Why a push (or a look at the registry) failed. Each names the registry and
/// what crew was doing; a refusal carries the registry's own words.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry `{registry}`: {reason}")]
    Invalid { registry: String, reason: String },
    #[error("registry {registry}: {step}: {status}{}", body_text(.body))]
    Refused {
        registry: String,
        step: String,
        status: StatusCode,
        body: String,
    },
    #[error("registry {registry}: {step}: {reason}")]
    Failed {
        registry: String,
        step: String,
        reason: String,
    },
}

fn body_text(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// The scheme a registry is spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The registry's name as image references carry it: without the scheme a
/// `--registry` may start with, or a trailing `/`.
pub fn reference_name(registry: &str) -> &str {
    let rest = registry
        .strip_prefix("http://")
        .or_else(|| registry.strip_prefix("https://"))
        .unwrap_or(registry);
    rest.trim_end_matches('/')
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:…` of the manifest, which the registry now has under the tag.
    pub digest: String,
    /// The blobs sent, in order.
    pub uploaded: Vec<String>,
    /// The blobs the registry already had.
    pub skipped: Vec<String>,
}

/// One registry, and a client for it.
pub struct Registry {
    /// `HOST[:PORT][/PATH]`, for messages and image references.
    name: String,
    scheme: Scheme,
    /// `HOST[:PORT]`.
    authority: String,
    /// `PATH`, or empty: repositories are `PATH/REPO`.
    prefix: String,
    /// Made on first use, so that a placement that never pushes never reads
    /// the machine's certificates.
    transport: OnceLock<Result<Transport, String>>,
}

/// The two clients: plain HTTP needs no TLS set-up (and works on a machine
/// with no root certificates), HTTPS does.
enum Transport {
    Plain(HttpClient<HttpConnector, Body>),
    Tls(HttpClient<hyper_rustls::HttpsConnector<HttpConnector>, Body>),
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("name", &self.name)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry `registry` names: `HOST[:PORT][/PATH]`, optionally after
    /// `http://` or `https://`. The host must look like one (a dot, a port,
    /// or `localhost`), since a runtime reads a bare first word of an image
    /// reference as a Docker Hub account and would pull from there.
    pub fn new(registry: &str) -> Result<Registry, RegistryError> {
        let invalid = |reason: &str| RegistryError::Invalid {
            registry: registry.to_string(),
            reason: reason.to_string(),
        };
        let scheme = if registry.starts_with("http://") {
            Some(Scheme::Http)
        } else if registry.starts_with("https://") {
            Some(Scheme::Https)
        } else if registry.contains("://") {
            return Err(invalid(
                "only http:// and https:// registries are spoken to",
            ));
        } else {
            None
        };
        let name = reference_name(registry);
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        let (authority, prefix) = name.split_once('/').unwrap_or((name, ""));
        if authority.is_empty() || authority.parse::<hyper::http::uri::Authority>().is_err() {
            return Err(invalid("the host is not HOST[:PORT]"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials in the name are not supported"));
        }
        if !(authority.contains('.') || authority.contains(':') || host(authority) == "localhost") {
            return Err(invalid(
                "name the host with a dot or a port (`registry.local`, `HOST:5000`); a bare word would be read as a Docker Hub account",
            ));
        }
        if !prefix.is_empty() && !prefix.split('/').all(repository_component) {
            return Err(invalid(
                "a repository path is lowercase letters, digits and `._-` between slashes",
            ));
        }
        let scheme = scheme.unwrap_or(if is_loopback(authority) {
            Scheme::Http
        } else {
            Scheme::Https
        });
        Ok(Registry {
            name: name.to_string(),
            scheme,
            authority: authority.to_string(),
            prefix: prefix.to_string(),
            transport: OnceLock::new(),
        })
    }

    /// `HOST[:PORT][/PATH]`, as image references start.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The repository `repo` (`crew/shop`) is in this registry: under its
    /// path, if it has one.
    pub fn repository(&self, repo: &str) -> String {
        if self.prefix.is_empty() {
            repo.to_string()
        } else {
            format!("{}/{repo}", self.prefix)
        }
    }

    /// The digest of the manifest the registry has under `repository:tag`,
    /// if it has one. `None` also when the registry does not say which digest
    /// it is, since then it cannot be compared.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<String>, RegistryError> {
        let step = format!("looking for manifest {repository}:{tag}");
        let request = self
            .request(Method::HEAD, &format!("/v2/{repository}/manifests/{tag}"))
            .header(header::ACCEPT, OCI_MANIFEST);
        let response = self.send(&step, request, empty(), REQUEST_TIMEOUT).await?;
        match response.status() {
            StatusCode::OK => Ok(response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.refused(&step, response).await),
        }
    }

    /// Whether the registry has the blob `digest` in `repository`.
    pub async fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        let step = format!("looking for blob {digest} in {repository}");
        let request = self.request(Method::HEAD, &format!("/v2/{repository}/blobs/{digest}"));
        let response = self.send(&step, request, empty(), REQUEST_TIMEOUT).await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.refused(&step, response).await),
        }
    }

    /// Pushes `image` as `repository:tag`: every blob the registry lacks,
    /// then the manifest, which moves the tag. Blobs it has are not sent
    /// again.
    pub async fn push(
        &self,
        repository: &str,
        tag: &str,
        image: &Image,
    ) -> Result<Pushed, RegistryError> {
        let manifest = image.oci_manifest().map_err(|e| RegistryError::Failed {
            registry: self.name.clone(),
            step: format!("making the manifest of {repository}:{tag}"),
            reason: e.to_string(),
        })?;
        let digest = sha256_digest(&manifest);
        let mut pushed = Pushed {
            digest: digest.clone(),
            uploaded: Vec::new(),
            skipped: Vec::new(),
        };
        for layer in image.layers() {
            let info = layer.info();
            // A base that is also the slug is one blob, listed twice.
            if pushed.uploaded.contains(&info.digest) || pushed.skipped.contains(&info.digest) {
                continue;
            }
            if self.has_blob(repository, &info.digest).await? {
                pushed.skipped.push(info.digest.clone());
                continue;
            }
            let step = format!("reading layer {} back", info.digest);
            let file = layer.open().map_err(|e| self.failed(&step, e))?;
            let body = file_body(tokio::fs::File::from_std(file));
            self.upload(repository, &info.digest, info.size, body)
                .await?;
            pushed.uploaded.push(info.digest.clone());
        }
        let config = image.config_digest();
        if self.has_blob(repository, config).await? {
            pushed.skipped.push(config.to_string());
        } else {
            let bytes = Bytes::copy_from_slice(image.config());
            let size = bytes.len() as u64;
            self.upload(repository, config, size, full(bytes)).await?;
            pushed.uploaded.push(config.to_string());
        }

        let step = format!("putting manifest {repository}:{tag}");
        let request = self
            .request(Method::PUT, &format!("/v2/{repository}/manifests/{tag}"))
            .header(header::CONTENT_TYPE, OCI_MANIFEST)
            .header(header::CONTENT_LENGTH, manifest.len());
        let response = self
            .send(&step, request, full(Bytes::from(manifest)), REQUEST_TIMEOUT)
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.refused(&step, response).await);
        }
        if let Some(theirs) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && theirs != digest
        {
            return Err(self.failed(
                &step,
                format!("the registry stored it as {theirs}, not as {digest}"),
            ));
        }
        Ok(pushed)
    }

    /// One blob, in one `PUT` to the upload the `POST` starts.
    async fn upload(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
        body: Body,
    ) -> Result<(), RegistryError> {
        let step = format!("starting the upload of blob {digest} to {repository}");
        let path = format!("/v2/{repository}/blobs/uploads/");
        let request = self
            .request(Method::POST, &path)
            .header(header::CONTENT_LENGTH, 0);
        let response = self.send(&step, request, empty(), REQUEST_TIMEOUT).await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.refused(&step, response).await);
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.failed(&step, "the registry gave no upload Location"))?;
        let uri = upload_uri(self.scheme, &self.authority, &path, location, digest)
            .map_err(|reason| self.failed(&step, reason))?;

        let step = format!("uploading blob {digest} ({size} bytes) to {repository}");
        let request = Request::builder()
            .method(Method::PUT)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size);
        let timeout = REQUEST_TIMEOUT + Duration::from_secs(size / UPLOAD_BYTES_PER_SECOND);
        let response = self.send(&step, request, body, timeout).await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.refused(&step, response).await);
        }
        Ok(())
    }

    /// A request to `path` on this registry.
    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        Request::builder().method(method).uri(format!(
            "{}://{}{path}",
            self.scheme.as_str(),
            self.authority
        ))
    }

    async fn send(
        &self,
        step: &str,
        request: hyper::http::request::Builder,
        body: Body,
        timeout: Duration,
    ) -> Result<Response<Incoming>, RegistryError> {
        let request = request
            .header(
                header::USER_AGENT,
                concat!("crew/", env!("CARGO_PKG_VERSION")),
            )
            .body(body)
            .map_err(|e| self.failed(step, format!("making the request: {e}")))?;
        let transport = self
            .transport
            .get_or_init(|| self.transport())
            .as_ref()
            .map_err(|e| self.failed(step, e))?;
        let response = match transport {
            Transport::Plain(client) => {
                tokio::time::timeout(timeout, client.request(request)).await
            }
            Transport::Tls(client) => tokio::time::timeout(timeout, client.request(request)).await,
        };
        match response {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.failed(step, error_chain(&e))),
            Err(_) => Err(self.failed(step, format!("no answer within {}s", timeout.as_secs()))),
        }
    }

    fn transport(&self) -> Result<Transport, String> {
        match self.scheme {
            Scheme::Http => Ok(Transport::Plain(
                HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new()),
            )),
            Scheme::Https => {
                // ring, named here rather than left to rustls' process-wide
                // default, which is ambiguous when a build enables two
                // providers.
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                    .map_err(|e| format!("setting up TLS: {e}"))?
                    // A Location may send the upload elsewhere; it is
                    // followed in whatever scheme it names.
                    .https_or_http()
                    .enable_http1()
                    .build();
                Ok(Transport::Tls(
                    HttpClient::builder(TokioExecutor::new()).build(connector),
                ))
            }
        }
    }

    fn failed(&self, step: &str, reason: impl std::fmt::Display) -> RegistryError {
        RegistryError::Failed {
            registry: self.name.clone(),
            step: step.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The refusal `response` is, with as much of its body (the registry's
    /// JSON `errors`) as fits.
    async fn refused(&self, step: &str, response: Response<Incoming>) -> RegistryError {
        let status = response.status();
        let body = tokio::time::timeout(
            REQUEST_TIMEOUT,
            Limited::new(response.into_body(), 64 * 1024).collect(),
        )
        .await;
        let mut text = match body {
            Ok(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes())
                .trim()
                .to_string(),
            _ => String::new(),
        };
        if text.len() > ERROR_BODY_LIMIT {
            let mut end = ERROR_BODY_LIMIT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            text = format!("{text} (crew pushes without credentials)")
                .trim()
                .to_string();
        }
        RegistryError::Refused {
            registry: self.name.clone(),
            step: step.to_string(),
            status,
            body: text,
        }
    }
}

/// Where to `PUT` a blob: the upload's `Location` (absolute, or relative to
/// the `POST` that started it) with `digest=` added to its query.
pub fn upload_uri(
    scheme: Scheme,
    authority: &str,
    post_path: &str,
    location: &str,
    digest: &str,
) -> Result<Uri, String> {
    let location = location.trim();
    let location = location.split('#').next().unwrap_or(location);
    let separator = if location.contains('?') { '&' } else { '?' };
    let with_digest = format!("{location}{separator}digest={}", digest.replace(':', "%3A"));
    let lower = with_digest.to_ascii_lowercase();
    let absolute = if lower.starts_with("http://") || lower.starts_with("https://") {
        with_digest
    } else if with_digest.starts_with("//") {
        format!("{}:{with_digest}", scheme.as_str())
    } else if with_digest.starts_with('/') {
        format!("{}://{authority}{with_digest}", scheme.as_str())
    } else {
        // Relative to the directory of the path posted to.
        let dir = &post_path[..post_path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{}://{authority}{dir}{with_digest}", scheme.as_str())
    };
    absolute
        .parse::<Uri>()
        .map_err(|e| format!("the upload Location `{location}` is not a URL: {e}"))
}

/// `sha256:…` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn host(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Whether the registry is on this machine, where plain HTTP is safe and
/// what docker assumes.
fn is_loopback(authority: &str) -> bool {
    let host = host(authority);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn repository_component(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A file as a body, read a chunk at a time: a base layer can be far larger
/// than what should sit in memory.
fn file_body(file: tokio::fs::File) -> Body {
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), Some(file)))
            }
            // The error ends the body, and the stream with it.
            Err(e) => Some((Err(e), None)),
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

/// An error with its sources, which is where hyper keeps the reason
/// (`connection refused`).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:abc";

    #[test]
    fn an_absolute_location_gets_the_digest_after_its_own_query() {
        let uri = upload_uri(
            Scheme::Http,
            "127.0.0.1:5000",
            "/v2/crew/shop/blobs/uploads/",
            "http://127.0.0.1:5000/v2/crew/shop/blobs/uploads/u1?_state=x%3D",
            DIGEST,
        )
        .expect("a URI");
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:5000/v2/crew/shop/blobs/uploads/u1?_state=x%3D&digest=sha256%3Aabc"
        );
    }

    #[test]
    fn a_relative_location_is_on_the_registry() {
        let put = |location: &str| {
            upload_uri(
                Scheme::Https,
                "r.example",
                "/v2/crew/shop/blobs/uploads/",
                location,
                DIGEST,
            )
            .expect("a URI")
            .to_string()
        };
        assert_eq!(
            put("/v2/crew/shop/blobs/uploads/u1"),
            "https://r.example/v2/crew/shop/blobs/uploads/u1?digest=sha256%3Aabc"
        );
        assert_eq!(
            put("u1?a=b"),
            "https://r.example/v2/crew/shop/blobs/uploads/u1?a=b&digest=sha256%3Aabc"
        );
        assert_eq!(
            put("//cdn.example/up/u1"),
            "https://cdn.example/up/u1?digest=sha256%3Aabc"
        );
        assert!(
            upload_uri(Scheme::Http, "h:1", "/v2/x/", "http://bad host/", DIGEST).is_err(),
            "a Location that is no URL is an error, not a panic"
        );
    }

    #[test]
    fn registries_are_named_as_image_references_name_them() {
        let r = Registry::new("127.0.0.1:5000").expect("valid");
        assert_eq!((r.name(), r.scheme()), ("127.0.0.1:5000", Scheme::Http));
        assert_eq!(r.repository("crew/shop"), "crew/shop");
        let r = Registry::new("registry.example/team/").expect("valid");
        assert_eq!(
            (r.name(), r.scheme()),
            ("registry.example/team", Scheme::Https)
        );
        assert_eq!(r.repository("crew/shop"), "team/crew/shop");
        let r = Registry::new("http://registry.local:5000").expect("valid");
        assert_eq!(
            (r.name(), r.scheme()),
            ("registry.local:5000", Scheme::Http)
        );
        assert_eq!(
            Registry::new("localhost").expect("valid").scheme(),
            Scheme::Http
        );
        assert_eq!(
            Registry::new("[::1]:5000").expect("valid").scheme(),
            Scheme::Http
        );
        for bad in [
            "",
            "registry",
            "ftp://r.example",
            "r.example/Team",
            "r.example//x",
            "user:pw@r.example",
            "r example",
        ] {
            let err = Registry::new(bad).expect_err(bad);
            assert!(err.to_string().contains("registry `"), "{bad}: {err}");
        }
        assert_eq!(reference_name("https://r.example/x/"), "r.example/x");
    }
}
