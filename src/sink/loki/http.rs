//! The HTTP side of the configuration: tenant, authentication, extra headers and TLS roots,
//! turned into a `reqwest` client. Secrets live here, behind a `Debug` that hides them.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{encode, Encoding};
use crate::{Error, Result};

/// A value that never shows in Debug output, events or errors.
#[derive(Clone)]
pub(super) struct Secret(pub(super) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The user name is hidden too: a URL's user name is often a token (`https://TOKEN@host`).
#[derive(Clone, Debug, Default)]
pub(super) enum Auth {
    #[default]
    None,
    Basic {
        user: Secret,
        password: Secret,
    },
    Bearer(Secret),
}

/// How much of a custom header is shown, and how it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HeaderKind {
    /// `public_header()`: declared non-secret, its value shows in Debug output.
    Public,
    /// `header()`: hidden in Debug output, since an API key is often passed this way.
    Hidden,
    /// `secret_header()`: hidden, and marked sensitive (never HPACK-indexed).
    Secret,
}

#[derive(Clone, Debug)]
pub(super) struct ExtraHeader {
    pub(super) name: HeaderName,
    pub(super) value: Secret,
    pub(super) kind: HeaderKind,
}

/// Who the requests are from: everything that becomes a header or a TLS setting.
#[derive(Default)]
pub(super) struct Http {
    pub(super) tenant: Option<String>,
    pub(super) auth: Auth,
    pub(super) headers: Vec<ExtraHeader>,
    pub(super) roots: Vec<reqwest::Certificate>,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|h| {
                let value = match h.kind {
                    HeaderKind::Public => &h.value.0,
                    HeaderKind::Hidden | HeaderKind::Secret => "<redacted>",
                };
                format!("{}: {value}", h.name)
            })
            .collect();
        f.debug_struct("Http")
            .field("tenant", &self.tenant)
            .field("auth", &self.auth)
            .field("headers", &headers)
            .field("extra_roots", &self.roots.len())
            .finish()
    }
}

/// The URL with its user info, every query value and any fragment replaced by `redacted`
/// (query keys are kept: they say what was configured without showing it).
pub(super) fn redact_url(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return "<unparsable URL>".to_owned();
    };
    if !u.username().is_empty() {
        let _ = u.set_username("redacted");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    }
    if u.query().is_some() {
        let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let mut pairs = u.query_pairs_mut();
        pairs.clear();
        for key in &keys {
            pairs.append_pair(key, "redacted");
        }
    }
    if u.fragment().is_some() {
        u.set_fragment(Some("redacted"));
    }
    u.to_string()
}

/// Whether `url` sends what it carries in clear text over the network: plain `http://` to
/// a host that is not loopback (127.0.0.0/8, `::1`, `localhost`). Returns that host.
pub(super) fn clear_text_host(url: &reqwest::Url) -> Option<String> {
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    // `host_str` writes an IPv6 address in brackets, and has already lowercased a domain.
    let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let domain = host.trim_end_matches('.');
            domain == "localhost" || domain.ends_with(".localhost")
        }
    };
    (!loopback).then(|| host.to_owned())
}

impl Http {
    /// Whether anything configured here is (or may be) a credential: auth, or a custom
    /// header not declared public. The tenant id is not a secret.
    pub(super) fn has_credentials(&self) -> bool {
        !matches!(self.auth, Auth::None)
            || self.headers.iter().any(|h| h.kind != HeaderKind::Public)
    }

    pub(super) fn client(&self, encoding: Encoding, timeout: Duration) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .default_headers(self.headers(encoding)?)
            .user_agent(concat!("sinkwatch/", env!("CARGO_PKG_VERSION")))
            // A redirected POST would lose its body; a redirect is reported, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout);
        for cert in &self.roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        builder.build().map_err(|e| {
            Error::config("cannot set up the HTTP client (TLS configuration)").with_source(e)
        })
    }

    fn headers(&self, encoding: Encoding) -> Result<HeaderMap> {
        let mut map = HeaderMap::new();
        let (content_type, content_encoding) = encode::content_headers(encoding);
        map.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if let Some(ce) = content_encoding {
            map.insert(
                reqwest::header::CONTENT_ENCODING,
                HeaderValue::from_static(ce),
            );
        }
        if let Some(tenant) = &self.tenant {
            map.insert("x-scope-orgid", header_value("tenant", tenant, false)?);
        }
        let auth = match &self.auth {
            Auth::None => None,
            Auth::Basic { user, password } => Some(format!(
                "Basic {}",
                base64(format!("{}:{}", user.0, password.0).as_bytes())
            )),
            Auth::Bearer(token) => Some(format!("Bearer {}", token.0)),
        };
        if let Some(auth) = auth {
            map.insert(
                reqwest::header::AUTHORIZATION,
                header_value("Authorization", &auth, true)?,
            );
        }
        for h in &self.headers {
            map.append(
                h.name.clone(),
                header_value(h.name.as_str(), &h.value.0, h.kind == HeaderKind::Secret)?,
            );
        }
        Ok(map)
    }
}

/// A header value, marked sensitive when secret (so HTTP/2 never indexes it). The error
/// names the header, never the value.
fn header_value(name: &str, value: &str, secret: bool) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        Error::config(format!(
            "the value of header {name} is not a valid HTTP header value (no control characters or newlines)"
        ))
    })?;
    v.set_sensitive(secret);
    Ok(v)
}

/// Standard base64 with padding, for basic auth.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn redact_url_hides_user_info_query_values_and_fragment() {
        let shown = redact_url("http://t0ken:pw@h:3100/p?api_key=k3y&org=o1#frag");
        assert_eq!(
            shown,
            "http://redacted:redacted@h:3100/p?api_key=redacted&org=redacted#redacted"
        );
        assert_eq!(redact_url("http://t0ken@h/"), "http://redacted@h/");
        assert_eq!(redact_url("https://h/p"), "https://h/p");
        assert_eq!(redact_url("not a url t0ken"), "<unparsable URL>");
    }

    #[test]
    fn clear_text_hosts_are_plain_http_to_non_loopback() {
        let host = |u: &str| clear_text_host(&reqwest::Url::parse(u).unwrap());
        assert_eq!(
            host("http://loki.example:3100").as_deref(),
            Some("loki.example")
        );
        assert_eq!(host("http://10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(
            host("http://[2001:db8::1]").as_deref(),
            Some("[2001:db8::1]")
        );
        for local in [
            "https://loki.example",
            "http://127.0.0.1:3100",
            "http://127.9.9.9",
            "http://[::1]:3100",
            "http://LOCALHOST:3100",
            "http://a.localhost",
            "http://[::ffff:127.0.0.1]",
        ] {
            assert_eq!(host(local), None, "{local}");
        }
    }

    #[test]
    fn only_public_headers_are_not_credentials() {
        let mut http = Http::default();
        assert!(!http.has_credentials());
        http.tenant = Some("team".into());
        http.headers.push(ExtraHeader {
            name: HeaderName::from_static("x-team"),
            value: Secret("payments".into()),
            kind: HeaderKind::Public,
        });
        assert!(!http.has_credentials());
        http.headers[0].kind = HeaderKind::Hidden;
        assert!(http.has_credentials());
    }
}
