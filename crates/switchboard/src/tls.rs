//! SIP over TLS (RFC 3261 §26.2, `sips:` on 5061): the `[tls]` section, the certificate and key read
//! from PEM files, and the live configs the TLS listeners take each new handshake from.
//!
//! The files are read by [`load`], which `setup::load` calls for `run`, `check` and every reload, so a
//! certificate is checked the same way each time. The daemon keeps the result in one [`TlsHandle`]
//! shared by its TLS listeners; a reload that validates swaps the material in with
//! [`TlsHandle::replace`]: handshakes after the swap present the new certificate, connections already
//! up keep theirs. A reload whose files do not load is refused as a whole (the old config, dialplan
//! and certificate stay in service) and every problem is logged with its file.
//!
//! Crypto: rustls with the ring provider, its safe defaults (TLS 1.3 and 1.2, AEAD cipher suites
//! with forward secrecy only; no TLS 1.1 or older, no RSA key exchange, no CBC).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::config::{line_col, Loaded};

/// The `[tls]` section: what the TLS listeners (`transport = "tls"`) present and check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain in PEM, leaf first, then intermediates (relative to the config file).
    /// Re-read on SIGHUP.
    pub cert_file: Spanned<PathBuf>,
    /// The private key of the leaf certificate in PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), relative
    /// to the config file. Re-read on SIGHUP. Keep it readable by the daemon's user only.
    pub key_file: Spanned<PathBuf>,
    /// Ask phones for a client certificate and refuse a handshake without one that chains to
    /// `client_ca_file`. Off by default: phones authenticate with digest inside the TLS connection.
    #[serde(default)]
    pub verify_clients: bool,
    /// CA certificates (PEM) that phones' client certificates must chain to; needed with
    /// `verify_clients = true`.
    #[serde(default)]
    pub client_ca_file: Option<Spanned<PathBuf>>,
    /// CA certificates (PEM) that a server must chain to when the switchboard itself opens a TLS
    /// connection (a trunk or PSAP target with `transport=tls`, or a phone whose own connection has
    /// closed). Without it the switchboard opens no TLS connection: it answers and calls phones only
    /// over the connections they opened, which is what phones behind NAT need anyway.
    #[serde(default)]
    pub ca_file: Option<Spanned<PathBuf>>,
}

/// A certificate and key that loaded and matched, as configs ready for handshakes.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// What new inbound handshakes use.
    pub server: Arc<ServerConfig>,
    /// What connections the switchboard opens use; `None` without `ca_file`.
    pub client: Option<Arc<ClientConfig>>,
    /// SHA-256 of the leaf certificate (DER), in hex: names the certificate in the logs.
    pub fingerprint: String,
    /// The certificate file it came from.
    pub cert_file: PathBuf,
}

impl TlsMaterial {
    /// Material made from configs built elsewhere (the transport's own tests).
    pub fn from_configs(server: Arc<ServerConfig>, client: Option<Arc<ClientConfig>>) -> Self {
        TlsMaterial {
            server,
            client,
            fingerprint: String::new(),
            cert_file: PathBuf::new(),
        }
    }
}

/// The material in service, shared by every TLS listener; cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsHandle {
    current: Arc<ArcSwap<TlsMaterial>>,
}

impl TlsHandle {
    pub fn new(material: TlsMaterial) -> Self {
        TlsHandle {
            current: Arc::new(ArcSwap::from_pointee(material)),
        }
    }

    /// Put new material in service: handshakes that start after this use it.
    pub fn replace(&self, material: TlsMaterial) {
        self.current.store(Arc::new(material));
    }

    /// The material in service now.
    pub fn current(&self) -> Arc<TlsMaterial> {
        self.current.load_full()
    }

    /// For one inbound handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load().server.clone())
    }

    /// For one outbound connection; `None` when no `ca_file` is configured.
    pub fn connector(&self) -> Option<tokio_rustls::TlsConnector> {
        self.current
            .load()
            .client
            .clone()
            .map(tokio_rustls::TlsConnector::from)
    }
}

/// The crypto provider every config is built with. Named explicitly rather than taken from the
/// process default, so no other crate's choice of rustls features can change it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads `[tls]` when the config has one, adding one `file:line:col: message` per problem, each naming
/// the file at fault. `text` is the config file's text (for line numbers).
pub fn load(loaded: &Loaded, text: &str, problems: &mut Vec<String>) -> Option<TlsMaterial> {
    let tc = loaded.config.tls.as_ref()?;
    let config_file = loaded.path.display().to_string();
    let at = |span: std::ops::Range<usize>, msg: String| {
        let (line, col) = line_col(text, span.start);
        format!("{config_file}:{line}:{col}: {msg}")
    };
    let before = problems.len();
    let cert_path = loaded.resolve(tc.cert_file.get_ref());
    let key_path = loaded.resolve(tc.key_file.get_ref());
    let certs = read_certs(&cert_path)
        .map_err(|e| problems.push(at(tc.cert_file.span(), format!("tls.cert_file: {e}"))))
        .ok();
    let key = read_key(&key_path)
        .map_err(|e| problems.push(at(tc.key_file.span(), format!("tls.key_file: {e}"))))
        .ok();
    let client_roots = match (&tc.client_ca_file, tc.verify_clients) {
        (Some(f), _) => read_roots(&loaded.resolve(f.get_ref()))
            .map_err(|e| problems.push(at(f.span(), format!("tls.client_ca_file: {e}"))))
            .ok(),
        (None, true) => {
            let start = text.find("verify_clients").unwrap_or(0);
            problems.push(at(
                start..start,
                "tls.verify_clients = true needs tls.client_ca_file (the CA phones' certificates chain to)"
                    .into(),
            ));
            None
        }
        (None, false) => None,
    };
    let roots = tc.ca_file.as_ref().and_then(|f| {
        read_roots(&loaded.resolve(f.get_ref()))
            .map_err(|e| problems.push(at(f.span(), format!("tls.ca_file: {e}"))))
            .ok()
    });
    if problems.len() > before {
        return None;
    }
    let (certs, key) = (certs?, key?);
    let fingerprint = hex::encode(Sha256::digest(certs[0].as_ref()));
    let server = match server_config(
        certs.clone(),
        key.clone_key(),
        if tc.verify_clients {
            client_roots
        } else {
            None
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            problems.push(at(
                tc.key_file.span(),
                format!(
                    "tls: the key {} and the certificate {} do not go together: {e}",
                    key_path.display(),
                    cert_path.display()
                ),
            ));
            return None;
        }
    };
    let client = match roots {
        Some(roots) => match client_config(roots, certs, key) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                let f = tc.ca_file.as_ref().map_or(0..0, |f| f.span());
                problems.push(at(f, format!("tls.ca_file: {e}")));
                return None;
            }
        },
        None => None,
    };
    Some(TlsMaterial {
        server: Arc::new(server),
        client,
        fingerprint,
        cert_file: cert_path,
    })
}

/// A server config: our certificate, TLS 1.2 and 1.3 with rustls' default cipher suites, and client
/// certificates checked against `client_roots` when given.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<RootCertStore>,
) -> Result<ServerConfig, rustls::Error> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    match client_roots {
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
        }
        None => builder.with_no_client_auth().with_single_cert(certs, key),
    }
}

/// A client config for connections we open: the server must chain to `roots` and carry the
/// address we connect to (the core routes to IP addresses). Our own certificate goes along when the
/// server asks for one.
pub fn client_config(
    roots: RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, rustls::Error> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Every certificate in a PEM file, in order; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a readable PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{}: no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----, RSA or EC)",
            path.display()
        ),
        e => format!("{}: not a readable PEM private key: {e}", path.display()),
    })
}

/// Trust anchors from a PEM file of CA certificates.
fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn self_signed() -> (String, String) {
        let k = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        (k.cert.pem(), k.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_a_foreign_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let c = read_certs(&write(dir.path(), "c.pem", &cert)).unwrap();
        let k = read_key(&write(dir.path(), "k.pem", &key)).unwrap();
        assert!(server_config(c.clone(), k, None).is_ok());
        let wrong = read_key(&write(dir.path(), "o.pem", &other_key)).unwrap();
        let e = server_config(c, wrong, None).unwrap_err();
        assert!(e.to_string().contains("key"), "{e}");
    }

    #[test]
    fn unreadable_and_empty_files_say_which_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = read_certs(&missing).unwrap_err();
        assert!(e.contains("nope.pem") && e.contains("cannot read"), "{e}");
        let junk = write(dir.path(), "junk.pem", "hello\n");
        let e = read_certs(&junk).unwrap_err();
        assert!(
            e.contains("junk.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = read_key(&junk).unwrap_err();
        assert!(
            e.contains("junk.pem") && e.contains("no private key"),
            "{e}"
        );
        // A certificate where the key should be is no key either.
        let (cert, _) = self_signed();
        let e = read_key(&write(dir.path(), "cert-as-key.pem", &cert)).unwrap_err();
        assert!(e.contains("cert-as-key.pem"), "{e}");
    }
}
