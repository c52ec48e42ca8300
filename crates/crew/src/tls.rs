//! TLS for the API port: the certificate `crew server` presents.
//!
//! Heroku's CLI adds its git remote as `https://HOST/APP.git` and the
//! rendezvous of `heroku run` is TLS, so the API port speaks TLS as well as
//! plain HTTP (the server tells them apart by the first byte). Unless the
//! operator gives a certificate (`--tls-cert/--tls-key`), crew makes a small
//! CA of its own at first start, kept in `DATA/tls/` (the key 0600), and at
//! every start a server certificate signed by it for `localhost`,
//! `127.0.0.1`, `::1` and each `--hostname`. Clients trust the CA's
//! certificate (`NODE_EXTRA_CA_CERTS`, git's `http.sslCAInfo`); the server
//! certificate's key never leaves memory, so a new `--hostname` needs only a
//! restart.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server's TLS setup, and the CA certificate clients should trust (none
/// when the operator supplied the certificate).
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub ca: Option<PathBuf>,
}

/// The CA certificate's path under the data directory.
pub fn ca_path(data: &Path) -> PathBuf {
    data.join("tls").join("ca.pem")
}

/// The operator's certificate, or one from crew's CA for `hostnames`.
pub fn server_tls(
    data: &Path,
    hostnames: &[String],
    operator: Option<(&Path, &Path)>,
) -> Result<ServerTls> {
    let (chain, key, ca) = match operator {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading the certificate {}", cert.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("reading the certificate {}", cert.display()))?;
            if chain.is_empty() {
                bail!("{} holds no PEM certificate", cert.display());
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            (chain, key, None)
        }
        None => {
            let (chain, key) = from_own_ca(data, hostnames)?;
            (chain, key, Some(ca_path(data)))
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not go together")?;
    Ok(ServerTls {
        config: Arc::new(config),
        ca,
    })
}

/// The CA's parameters: the same every time, so that the kept key and these
/// make an issuer whose name and key identifier match the kept certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "crew");
    name.push(DnType::CommonName, "crew server CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// Makes the CA at first start, then a server certificate signed by it.
fn from_own_ca(
    data: &Path,
    hostnames: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let dir = data.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_path = dir.join("ca-key.pem");
    let cert_path = ca_path(data);
    let ca_key = match std::fs::read_to_string(&key_path) {
        Ok(pem) if cert_path.exists() => KeyPair::from_pem(&pem)
            .with_context(|| format!("reading the CA key {}", key_path.display()))?,
        _ => {
            let key = KeyPair::generate().context("making the CA's key")?;
            let cert = ca_params()
                .self_signed(&key)
                .context("making the CA's certificate")?;
            write_private(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_private(&cert_path, cert.pem().as_bytes(), 0o644)?;
            key
        }
    };
    let ca_cert = std::fs::read(&cert_path)
        .with_context(|| format!("reading the CA certificate {}", cert_path.display()))?;
    let ca_der = CertificateDer::from_pem_slice(&ca_cert)
        .with_context(|| format!("reading the CA certificate {}", cert_path.display()))?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for name in hostnames {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut params = CertificateParams::new(names.clone())
        .with_context(|| format!("a certificate for {}", names.join(", ")))?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, "crew server");
    params.distinguished_name = subject;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().context("making the server certificate's key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the server certificate")?;
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!("the server certificate's key: {e}"))?;
    Ok((vec![cert.der().clone(), ca_der], key))
}

/// Writes `bytes` to `path` with `mode` through a partial file, so a crash
/// never leaves half a key.
fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .with_context(|| format!("writing {}", partial.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}
