//! Images: load a docker-archive, tag, push to a registry, list and remove.
//! Load and push answer with a stream of progress, read to its end.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Method, header};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::objects::ImageSummary;
use super::transport::{empty, query};
use super::{Docker, DockerError};

/// `X-Registry-Auth` without credentials: `{}` in base64url.
const NO_AUTH: &str = "e30=";

impl Docker {
    /// Loads a docker-archive (`docker load`), streaming the file. The
    /// daemon reports a bad archive inside a 200 response, as a JSON message
    /// with `error`, so the whole answer is read and checked.
    pub async fn load_image(&self, archive: &Path) -> Result<(), DockerError> {
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|source| DockerError::Io {
                what: format!("opening {}", archive.display()),
                source,
            })?;
        let chunks = futures_util::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Frame::data(Bytes::from(buf))), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        let body = BodyExt::boxed(StreamBody::new(chunks));
        let response = self
            .send(
                Method::POST,
                "/images/load?quiet=1",
                body,
                &[(header::CONTENT_TYPE, "application/x-tar")],
                false,
            )
            .await?;
        self.progress(response, "loading an image").await
    }

    /// Tags `source` (a name or an id) as `repo:tag` too.
    pub async fn image_tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), DockerError> {
        let path = format!(
            "/images/{source}/tag{}",
            query(&[("repo", repo.to_string()), ("tag", tag.to_string())])
        );
        self.call(Method::POST, &path, None).await?;
        Ok(())
    }

    /// Pushes `repo:tag` to the registry its name starts with, and waits
    /// until the push is done. No credentials: the registry header carries
    /// an empty auth config, which the API wants present.
    pub async fn image_push(&self, repo: &str, tag: &str) -> Result<(), DockerError> {
        let path = format!("/images/{repo}/push{}", query(&[("tag", tag.to_string())]));
        let response = self
            .send(
                Method::POST,
                &path,
                empty(),
                &[(header::HeaderName::from_static("x-registry-auth"), NO_AUTH)],
                false,
            )
            .await?;
        self.progress(response, &format!("pushing {repo}:{tag}"))
            .await
    }

    /// Whether an image of this name or id exists here.
    pub async fn image_exists(&self, name: &str) -> Result<bool, DockerError> {
        match self
            .call(Method::GET, &format!("/images/{name}/json"), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn images(&self, filters: &Value) -> Result<Vec<ImageSummary>, DockerError> {
        let path = format!("/images/json{}", query(&[("filters", filters.to_string())]));
        self.get_json(Method::GET, &path, None).await
    }

    pub async fn image_remove(&self, name: &str) -> Result<(), DockerError> {
        self.call(Method::DELETE, &format!("/images/{name}?force=1"), None)
            .await?;
        Ok(())
    }
}
