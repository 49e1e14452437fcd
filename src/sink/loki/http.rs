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

#[derive(Clone, Debug, Default)]
pub(super) enum Auth {
    #[default]
    None,
    Basic {
        user: String,
        password: Secret,
    },
    Bearer(Secret),
}

#[derive(Clone, Debug)]
pub(super) struct ExtraHeader {
    pub(super) name: HeaderName,
    pub(super) value: Secret,
    pub(super) secret: bool,
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
                let value = if h.secret { "<redacted>" } else { &h.value.0 };
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

/// The URL with any password in it replaced.
pub(super) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

impl Http {
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
                base64(format!("{user}:{}", password.0).as_bytes())
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
                header_value(h.name.as_str(), &h.value.0, h.secret)?,
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
}
