//! TLS for tokio-postgres on OpenSSL, built per libpq `sslmode`.
//!
//! tokio-postgres brings no TLS of its own. The ready-made connectors (postgres-native-tls,
//! postgres-openssl) always load the system's trusted CAs, even when no certificate is
//! checked; OpenSSL 3 takes about 50 ms of CPU for that, several times the rest of a
//! `tenantctl status`. Here the OpenSSL context loads only what libpq would (`roots_for`):
//! - a root certificate file (`sslrootcert`, else `~/.postgresql/root.crt` when it exists):
//!   the chain is checked against it in every mode, so `require` then checks as `verify-ca`;
//! - `sslrootcert=system`: the system's trusted CAs (libpq 16; only with `verify-full`);
//! - no root file: `allow`, `prefer`, `require` encrypt and check nothing (no CA is loaded),
//!   `verify-ca` and `verify-full` are refused before any connection;
//! - `verify-full` also checks that the certificate names the host (or IP address).
//!
//! TLS is never used on a Unix socket (libpq does not either); see `connect`.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use anyhow::Result;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslRef, SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509VerifyResult, X509};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::domain::exit::bad_input;

/// libpq's sslmode values. tokio-postgres knows only disable/prefer/require, so what each
/// mode does is decided in `connect::Connector` and in the TLS connector here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(bad_input(format!(
                "invalid sslmode '{other}': use disable, allow, prefer, require, verify-ca or verify-full"
            )))
            }
        })
    }
}

impl SslMode {
    /// libpq's name of the mode (for `PGSSLMODE` and messages).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the mode refuses to connect without checking the server's certificate.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Makes a TLS session per connection from one OpenSSL context (cheap to clone).
#[derive(Clone)]
pub struct MakeTls {
    ctx: SslContext,
    verify_host: bool,
}

/// Which certificates a TLS connection trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// No root certificate file: the server's certificate is not checked.
    Unchecked,
    /// The CAs in a PEM file: `sslrootcert`, or `~/.postgresql/root.crt`.
    File(PathBuf),
    /// The system's trusted CAs (`sslrootcert=system`).
    System,
}

/// libpq's choice of roots (initialize_SSL): `sslrootcert=system` means the system's CAs;
/// else `explicit` or `default` (`~/.postgresql/root.crt`) when that file exists, checked in
/// every mode; without one, `verify-ca` and `verify-full` are refused with libpq's advice.
/// Unlike libpq, an `sslrootcert` that names a missing file is refused in every mode (libpq
/// ignores it below verify-ca, which hides a typo behind an unchecked connection).
pub fn roots_for(mode: SslMode, explicit: Option<&Path>, default: Option<&Path>) -> Result<Roots> {
    if explicit == Some(Path::new("system")) {
        return Ok(Roots::System);
    }
    let Some(file) = explicit.or(default) else {
        return match mode.verifies() {
            true => Err(bad_input(format!(
                "sslmode={} needs a root certificate, and the home directory that would hold \
                 ~/.postgresql/root.crt is unknown; provide the file with sslrootcert, use the \
                 system's trusted roots with sslrootcert=system, or change sslmode",
                mode.as_str()
            ))),
            false => Ok(Roots::Unchecked),
        };
    };
    if file.exists() {
        return Ok(Roots::File(file.to_path_buf()));
    }
    if mode.verifies() || explicit.is_some() {
        return Err(bad_input(format!(
            "root certificate file \"{}\" does not exist; either provide the file, use the \
             system's trusted roots with sslrootcert=system, or change sslmode (sslmode={} \
             needs it to check the server's certificate)",
            file.display(),
            mode.as_str()
        )));
    }
    Ok(Roots::Unchecked)
}

/// The OpenSSL context: TLS 1.2 or later (as libpq), the trust `roots` gives, and for
/// `verify-full` a check of the host name. A root file that cannot be read or holds no PEM
/// certificate is bad input.
pub fn connector(mode: SslMode, roots: &Roots) -> Result<MakeTls> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    match roots {
        Roots::Unchecked if mode.verifies() => {
            return Err(bad_input(format!(
                "sslmode={} needs a root certificate",
                mode.as_str()
            )))
        }
        Roots::Unchecked => b.set_verify(SslVerifyMode::NONE),
        // Only these CAs: the system's would let any publicly trusted certificate through.
        Roots::File(path) => {
            let mut store = X509StoreBuilder::new()?;
            for cert in read_roots(path)? {
                store.add_cert(cert)?;
            }
            b.set_cert_store(store.build());
            b.set_verify(SslVerifyMode::PEER);
        }
        Roots::System => {
            b.set_default_verify_paths()?;
            b.set_verify(SslVerifyMode::PEER);
        }
    }
    Ok(MakeTls {
        ctx: b.build(),
        verify_host: mode == SslMode::VerifyFull,
    })
}

fn read_roots(path: &Path) -> Result<Vec<X509>> {
    let pem = std::fs::read(path).map_err(|e| {
        bad_input(format!(
            "cannot read root certificate file {}: {e}",
            path.display()
        ))
    })?;
    match X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(bad_input(format!(
            "root certificate file {} holds no PEM certificate",
            path.display()
        ))),
        Err(e) => Err(bad_input(format!(
            "root certificate file {} is not a PEM certificate: {e}",
            path.display()
        ))),
    }
}

impl<S> MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = openssl::error::ErrorStack;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, Self::Error> {
        let mut ssl = Ssl::new(&self.ctx)?;
        let ip = host.parse::<IpAddr>().ok();
        // tokio-postgres asks with "" for a Unix socket (where `connect` never uses TLS);
        // OpenSSL refuses an empty server name.
        if ip.is_none() && !host.is_empty() {
            // Server name indication, which RFC 6066 allows for host names only.
            ssl.set_hostname(host)?;
        }
        if self.verify_host {
            let param = ssl.param_mut();
            param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
            match ip {
                Some(ip) => param.set_ip(ip)?,
                None => param.set_host(host)?,
            }
        }
        Ok(Connect(ssl))
    }
}

/// One connection's TLS session, before the handshake.
pub struct Connect(Ssl);

type Handshake<S> = Pin<Box<dyn Future<Output = Result<TlsStream<S>, HandshakeError>> + Send>>;

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = HandshakeError;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // Buffered, so that OpenSSL's reads of record headers and bodies do not each
            // cost a system call.
            let stream = BufReader::with_capacity(8192, stream);
            let mut tls = tokio_openssl::SslStream::new(self.0, stream)?;
            if let Err(e) = Pin::new(&mut tls).connect().await {
                let verify = tls.ssl().verify_result();
                return Err(if verify == X509VerifyResult::OK {
                    HandshakeError(e.to_string())
                } else {
                    HandshakeError(format!(
                        "the server's certificate failed verification: {}",
                        verify.error_string()
                    ))
                });
            }
            Ok(TlsStream(tls))
        })
    }
}

/// Why a TLS handshake failed, as one line.
#[derive(Debug)]
pub struct HandshakeError(String);

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandshakeError {}

impl From<openssl::error::ErrorStack> for HandshakeError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        HandshakeError(e.to_string())
    }
}

/// An encrypted connection.
pub struct TlsStream<S>(tokio_openssl::SslStream<BufReader<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    /// SCRAM channel binding (`tls-server-end-point`, RFC 5929): a hash of the server's
    /// certificate, so that a man in the middle cannot relay the authentication.
    fn channel_binding(&self) -> ChannelBinding {
        match server_end_point(self.0.ssl()) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// The certificate's hash with its signature's digest, SHA-256 for MD5 and SHA-1 (RFC 5929).
fn server_end_point(ssl: &SslRef) -> Option<Vec<u8>> {
    let cert = ssl.peer_certificate()?;
    let algorithms = cert
        .signature_algorithm()
        .object()
        .nid()
        .signature_algorithms()?;
    let md = match algorithms.digest {
        Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
        nid => MessageDigest::from_nid(nid)?,
    };
    cert.digest(md).ok().map(|d| d.to_vec())
}
