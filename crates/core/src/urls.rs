//! Addresses aviary calls out to: credentials removed before a URL reaches any message, and every
//! address checked before a rollout changes anything.
//!
//! [`redact`] is the one function that turns a URL into something that may be shown: stderr, the
//! JSON report, `$GITHUB_OUTPUT`, the step summary, annotations, events. It hides the whole
//! `user:password@` part (a token is often sent as the user name, as in
//! `https://TOKEN@host`) and the values of query parameters that carry secrets (`token`, `key`,
//! `password`, `secret`, `sig`, `signature`, `X-Amz-Credential`, `X-Goog-Signature`, ...).
//! [`redact_in_text`] does the same to every URL inside a free text, such as a library's error.
//!
//! [`check_address`] refuses an address aviary could never call (not a URL, a scheme other than
//! http or https, no host); `crate::addresses` applies it to every address of a rollout.

use url::Url;

/// What replaces a secret.
const HIDDEN: &str = "***";

/// `address` with its credentials hidden: the userinfo becomes `***@` and the values of secret
/// query parameters (and fragment parameters) `***`; the rest is kept as written. Works on
/// anything, a URL or not: in a URL the userinfo is what the WHATWG parser (reqwest's) takes for
/// it, the authority's text up to its last `@`; in what does not parse, everything between `://`
/// and the last `@` is hidden, whatever it is.
pub fn redact(address: &str) -> String {
    let text = address.trim();
    let parses = Url::parse(text).is_ok_and(|u| u.has_host());
    let (prefix, rest) = match text.find("://") {
        Some(i) => (&text[..i + 3], &text[i + 3..]),
        None => ("", text),
    };
    // The authority ends at the first `/`, `?`, `#` or `\\` (the parser's rule); when the text
    // does not parse, at nothing: the last `@` anywhere ends what is hidden.
    let authority_end = if parses {
        rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())
    } else {
        rest.len()
    };
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("{HIDDEN}@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => match query.split_once('#') {
            Some((query, fragment)) => format!(
                "{path}?{}#{}",
                redact_params(query),
                redact_params(fragment)
            ),
            None => format!("{path}?{}", redact_params(query)),
        },
        None => match tail.split_once('#') {
            Some((path, fragment)) => format!("{path}#{}", redact_params(fragment)),
            None => tail.to_string(),
        },
    };
    format!("{prefix}{authority}{tail}")
}

/// A parsed URL with its credentials hidden (see [`redact`]).
pub fn redact_url(url: &Url) -> String {
    redact(url.as_str())
}

/// Every URL (`scheme://...`) inside `text` redacted; the rest unchanged.
pub fn redact_in_text(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let sep = search + found;
        let mut start = sep;
        while start > copied && is_scheme_byte(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = sep + 3;
        while end < bytes.len() && !is_url_delimiter(bytes[end]) {
            end += 1;
        }
        // Punctuation that ends a sentence is not part of the URL.
        while end > sep + 3 && matches!(bytes[end - 1], b'.' | b',' | b';' | b':') {
            end -= 1;
        }
        out.push_str(&text[copied..start]);
        out.push_str(&redact(&text[start..end]));
        copied = end;
        search = end.max(sep + 3);
    }
    out.push_str(&text[copied..]);
    out
}

fn is_scheme_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn is_url_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'"' | b'\'' | b'<' | b'>' | b'`' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'|'
        )
}

/// `a=1&token=x` → `a=1&token=***`, keeping the text of every other parameter as it was.
fn redact_params(params: &str) -> String {
    params
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={HIDDEN}"),
            // A URL as a parameter (`?next=https://u:p@host/`) is redacted in turn.
            Some((name, value)) if value.contains("://") => format!("{name}={}", redact(value)),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether a query parameter named `name` carries a secret. Errs on the side of hiding: a hidden
/// value only makes a message less detailed, a shown one leaks a credential.
pub fn is_secret_param(name: &str) -> bool {
    let name = percent_decode(name).to_ascii_lowercase();
    const EXACT: &[&str] = &[
        "key", "sig", "pass", "pwd", "auth", "code", "jwt", "sas", "sv", "se", "sp",
    ];
    // Substrings: `access_token`, `client_secret`, `X-Amz-Credential`, `X-Amz-Security-Token`,
    // `X-Goog-Signature`, `api_key`, `private_key`, `sessionid`, `authorization`, ...
    const PARTS: &[&str] = &[
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "credential",
        "apikey",
        "api_key",
        "api-key",
        "accesskey",
        "access_key",
        "private",
        "session",
        "auth",
    ];
    EXACT.contains(&name.as_str()) || PARTS.iter().any(|p| name.contains(p))
}

/// `%XX` escapes decoded (lossily), for comparing parameter names.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why an address cannot be called, for [`check_address`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressProblem {
    /// Not a URL at all (`not a url`, a relative path).
    NotAUrl,
    /// A scheme other than http or https (`ftp://x`, or `prometheus:9090`, which reads as the
    /// scheme `prometheus`).
    Scheme(String),
    /// No host (`http://`, `http:///path`).
    NoHost,
    /// Anything else the URL parser refused (an invalid port, a space in the host, ...).
    Invalid(String),
}

impl std::fmt::Display for AddressProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressProblem::NotAUrl => f.write_str("it is not a URL"),
            AddressProblem::Scheme(s) => {
                write!(f, "the scheme must be http or https, not {s:?}")
            }
            AddressProblem::NoHost => f.write_str("it has no host"),
            AddressProblem::Invalid(why) => write!(f, "it is not a valid URL: {why}"),
        }
    }
}

/// Whether aviary can call `address`: an absolute `http://` or `https://` URL with a host.
pub fn check_address(address: &str) -> Result<Url, AddressProblem> {
    let address = address.trim();
    let url = Url::parse(address).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => AddressProblem::NotAUrl,
        url::ParseError::EmptyHost => AddressProblem::NoHost,
        other => AddressProblem::Invalid(other.to_string()),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(AddressProblem::Scheme(url.scheme().to_string()));
    }
    if !matches!(url.host_str(), Some(h) if !h.is_empty()) {
        return Err(AddressProblem::NoHost);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_whole() {
        assert_eq!(
            redact("http://user:hunter2@hooks.test:8080/x"),
            "http://***@hooks.test:8080/x"
        );
        assert_eq!(
            redact("https://ghp_tokenAsUser@github.com/acme/shop.git"),
            "https://***@github.com/acme/shop.git"
        );
        assert_eq!(redact("http://hooks.test/x"), "http://hooks.test/x");
        // A password with an @ or a / in it, as typed.
        for raw in [
            "http://u:p@ss@host/x",
            "http://u:p/ss@host/x",
            "http://u:p?ss@host/x",
        ] {
            let shown = redact(raw);
            assert!(!shown.contains("ss@"), "{raw} -> {shown}");
            assert!(!shown.contains(":p"), "{raw} -> {shown}");
        }
    }

    #[test]
    fn secret_query_parameters_are_hidden_and_others_kept() {
        assert_eq!(
            redact("https://h.test/hook?name=a&token=abc&api_key=k1&sig=s&v=2"),
            "https://h.test/hook?name=a&token=***&api_key=***&sig=***&v=2"
        );
        let signed = redact(
            "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam&X-Goog-Signature=deadbeef&X-Goog-Expires=60",
        );
        assert!(
            !signed.contains("deadbeef") && !signed.contains("sa%40p"),
            "{signed}"
        );
        assert!(signed.contains("X-Goog-Expires=60"), "{signed}");
        let s3 = redact("https://b.s3.amazonaws.com/o?X-Amz-Security-Token=T0K&X-Amz-Signature=SIG&X-Amz-Date=1");
        assert!(!s3.contains("T0K") && !s3.contains("=SIG"), "{s3}");
        assert!(s3.contains("X-Amz-Date=1"), "{s3}");
        assert_eq!(
            redact("https://h.test/cb#access_token=xyz&state=1"),
            "https://h.test/cb#access_token=***&state=1"
        );
        assert_eq!(
            redact("https://h.test/login?next=https://u:pw@inner.test/x&a=1"),
            "https://h.test/login?next=https://***@inner.test/x&a=1"
        );
        assert_eq!(
            redact("https://h.test/?pass%77ord=x"),
            "https://h.test/?pass%77ord=***"
        );
    }

    #[test]
    fn strings_that_are_not_urls_are_cut_conservatively() {
        assert_eq!(redact("ftp://user:pw@x"), "ftp://***@x");
        assert_eq!(redact("http://u:p@h/users/@me"), "http://***@h/users/@me");
        assert_eq!(redact("user:pw@prometheus:9090"), "***@prometheus:9090");
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(redact("http://"), "http://");
        assert_eq!(redact("http://u:pw@"), "http://***@");
        assert_eq!(redact("ftp://x/?token=t"), "ftp://x/?token=***");
    }

    #[test]
    fn urls_inside_a_text_are_redacted() {
        let text = "error sending request for url (http://user:hunter2@127.0.0.1:9/hook?token=t0k): connection refused";
        let shown = redact_in_text(text);
        assert_eq!(
            shown,
            "error sending request for url (http://***@127.0.0.1:9/hook?token=***): connection refused"
        );
        assert_eq!(
            redact_in_text("see https://a:b@x.test/p, then stop."),
            "see https://***@x.test/p, then stop."
        );
        assert_eq!(redact_in_text("no urls here"), "no urls here");
        assert_eq!(
            redact_in_text("two: http://a:1@x/ and https://b:2@y/"),
            "two: http://***@x/ and https://***@y/"
        );
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_address("http://prometheus:9090").is_ok());
        assert!(check_address(" https://p.test/prefix/ ").is_ok());
        assert_eq!(check_address("not a url"), Err(AddressProblem::NotAUrl));
        assert_eq!(
            check_address("ftp://x"),
            Err(AddressProblem::Scheme("ftp".into()))
        );
        assert_eq!(
            check_address("prometheus:9090"),
            Err(AddressProblem::Scheme("prometheus".into()))
        );
        assert_eq!(check_address("http://"), Err(AddressProblem::NoHost));
        assert_eq!(check_address("https://"), Err(AddressProblem::NoHost));
        // As reqwest reads it: a special scheme skips extra slashes.
        assert!(check_address("http:///x").is_ok());
        assert!(matches!(
            check_address("http://p:99999"),
            Err(AddressProblem::Invalid(_))
        ));
        assert!(matches!(
            check_address("http://pro metheus"),
            Err(AddressProblem::Invalid(_))
        ));
    }
}
