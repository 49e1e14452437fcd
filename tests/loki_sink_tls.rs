//! HTTPS with rustls: a Loki behind a private CA is reached once its root is trusted, and
//! refused (a transport error, reported) when it is not.
//!
//! The server here is a minimal HTTPS endpoint answering 204 to every request: the point is
//! the TLS handshake and certificate checks, not Loki's rules (the receiver covers those).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use sinkwatch::events;
use sinkwatch::testing::{self, Matcher};
use sinkwatch::{LokiSink, Record};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A private CA and a certificate for `localhost` signed by it.
struct Pki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    leaf_key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

/// Serves HTTPS on 127.0.0.1, answering 204 to each request; counts requests served.
async fn https_server(pki: &Pki) -> (u16, Arc<AtomicU64>) {
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone()], pki.leaf_key.clone_key())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                // A failed handshake (an untrusting client) just ends the connection.
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    while read_request(&mut tls).await.is_some() {
                        count.fetch_add(1, Ordering::SeqCst);
                        let reply = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
                        if tls.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (port, served)
}

/// Reads one HTTP/1.1 request (headers and a `content-length` body); `None` at the end.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0_u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loki_behind_a_private_ca_is_reached_once_its_root_is_trusted() {
    testing::init();
    let pki = pki();
    let (port, served) = https_server(&pki).await;
    let events = testing::watch();
    let sink = LokiSink::builder(format!("https://localhost:{port}"))
        .label("app", "tls")
        .root_certificate_pem(&pki.ca_pem)
        .batch_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    sink.try_write(Record::new(tracing::Level::INFO, "over TLS"))
        .unwrap();
    let pushed = events
        .wait(Matcher::sink_event(sink.id(), events::push_complete::NAME))
        .fail_on(Matcher::sink_event(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    assert_eq!(pushed.u64("status"), Some(204));
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_reported_transport_error() {
    testing::init();
    let pki = pki();
    let (port, served) = https_server(&pki).await;
    let events = testing::watch();
    let sink = LokiSink::builder(format!("https://localhost:{port}"))
        .label("app", "tls")
        .batch_wait(Duration::from_millis(10))
        .max_retries(0)
        .build()
        .unwrap();
    sink.try_write(Record::new(tracing::Level::INFO, "never sent"))
        .unwrap();
    let failed = events
        .wait(Matcher::sink_event(sink.id(), events::push_failed::NAME))
        .fail_on(Matcher::sink_event(sink.id(), events::push_complete::NAME))
        .await
        .unwrap();
    assert_eq!(
        failed.u64("status"),
        Some(0),
        "a transport error, not an HTTP status"
    );
    assert_eq!(served.load(Ordering::SeqCst), 0);
    sink.flush().await.unwrap();
    let stats = sink.stats();
    assert_eq!((stats.accepted, stats.delivered, stats.dropped), (1, 0, 1));
}
