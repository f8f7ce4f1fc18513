//! Secrets kept out of everything MemFactory writes.
//!
//! A recipe may name a server with credentials in it: `base_url =
//! "https://user:pass@host/?api_key=…"`, a PostgreSQL URL with a password, a libpq
//! connection string `host=db password=…`. The run directory keeps the resolved recipe, and
//! reports and descriptions name the server; [`mask_table`] / [`mask_str`] replace the
//! userinfo of a URL (`user:pass@` → `***@`), the value of every secret-looking query
//! parameter (`key`, `api_key`, `token`, `secret`, `password`, `sig`, … — any name containing
//! one of [`SECRET_WORDS`], case-insensitive) and the value of a secret-looking keyword of a
//! connection string with `***`. Masking is idempotent and leaves other strings unchanged.

use std::borrow::Cow;

/// Parts of a parameter name that make its value a secret (compared in lower case, with
/// `-` and `_` kept: `api_key`, `X-Amz-Signature`, `access_token` all match).
pub const SECRET_WORDS: &[&str] = &[
    "key",
    "token",
    "secret",
    "pass",
    "pwd",
    "sig",
    "auth",
    "credential",
    "session",
    "cookie",
];

/// What a masked secret is replaced with.
pub const MASK: &str = "***";

/// Whether a parameter / keyword called `name` holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// The length of the URL scheme of `s` including `://` (`https://` → 8), when `s` starts with
/// one: a letter, then letters, digits, `+`, `-` or `.`, then `://`.
fn scheme_len(s: &str) -> Option<usize> {
    let end = s.find("://")?;
    let scheme = &s[..end];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(end + 3)
}

/// Masks the values of secret parameters in `a=1&key=2` (also `;`-separated).
fn mask_params(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let (pair, tail) = rest.split_at(end);
        match pair.split_once('=') {
            Some((name, value)) if is_secret_name(name) && !value.is_empty() => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
        match tail.chars().next() {
            Some(sep) => {
                out.push(sep);
                rest = &tail[sep.len_utf8()..];
            }
            None => return out,
        }
    }
}

/// `url` with its userinfo and the values of its secret query (and fragment) parameters
/// replaced by `***`; a string that is not a `scheme://…` URL is returned unchanged.
pub fn mask_url(url: &str) -> Cow<'_, str> {
    let Some(start) = scheme_len(url) else {
        return Cow::Borrowed(url);
    };
    let rest = &url[start..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start]);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[auth_end..];
    let (before_frag, frag) = match tail.find('#') {
        Some(i) => (&tail[..i], Some(&tail[i + 1..])),
        None => (tail, None),
    };
    match before_frag.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            out.push_str(&mask_params(query));
        }
        None => out.push_str(before_frag),
    }
    if let Some(f) = frag {
        out.push('#');
        out.push_str(&mask_params(f));
    }
    if out == url {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(out)
    }
}

/// A libpq-style connection string `host=h port=5432 password=…` (one line, every
/// whitespace-separated word `keyword=value`) with secret values masked; other strings
/// unchanged. Quoted values with spaces are not split and so leave the string unchanged.
fn mask_conninfo(s: &str) -> Cow<'_, str> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let is_conninfo = !words.is_empty()
        && !s.contains('\n')
        && words.iter().all(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        });
    if !is_conninfo
        || !words
            .iter()
            .any(|w| w.split_once('=').is_some_and(|(k, _)| is_secret_name(k)))
    {
        return Cow::Borrowed(s);
    }
    let masked: Vec<String> = words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if is_secret_name(k) && !v.is_empty() => format!("{k}={MASK}"),
            _ => w.to_string(),
        })
        .collect();
    Cow::Owned(masked.join(" "))
}

/// `s` with credentials masked when it is a URL or a connection string (see the module docs).
pub fn mask_str(s: &str) -> Cow<'_, str> {
    let trimmed = s.trim();
    if scheme_len(trimmed).is_some() {
        match mask_url(trimmed) {
            Cow::Borrowed(_) => Cow::Borrowed(s),
            Cow::Owned(m) => Cow::Owned(m),
        }
    } else {
        mask_conninfo(s)
    }
}

/// Masks every string in `value` (recursively through arrays and tables) with [`mask_str`].
pub fn mask_value(value: &mut toml::Value) {
    match value {
        toml::Value::String(s) => {
            if let Cow::Owned(m) = mask_str(s) {
                *s = m;
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(mask_value),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| mask_value(v)),
        _ => {}
    }
}

/// A copy of `table` with every string value masked ([`mask_str`]): what a run directory
/// keeps of a recipe.
pub fn mask_table(table: &toml::Table) -> toml::Table {
    let mut v = toml::Value::Table(table.clone());
    mask_value(&mut v);
    match v {
        toml::Value::Table(t) => t,
        _ => unreachable!("a table stays a table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_secret_parameters_are_masked() {
        for (raw, want) in [
            ("https://u:secret@host:8000/x", "https://***@host:8000/x"),
            ("http://tok@h", "http://***@h"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://h/p@q", "http://h/p@q"),
            (
                "https://h/v1?API_KEY=abc&model=m",
                "https://h/v1?API_KEY=***&model=m",
            ),
            (
                "https://h/?a=1&token=t;sig=s&Password=p&secret=x&x-amz-signature=y",
                "https://h/?a=1&token=***;sig=***&Password=***&secret=***&x-amz-signature=***",
            ),
            (
                "postgres://me:pw@db:5432/banks?sslmode=require",
                "postgres://***@db:5432/banks?sslmode=require",
            ),
            ("https://h?key=", "https://h?key="),
            ("https://h#access_token=abc", "https://h#access_token=***"),
            ("http://u:p@h?key=1@x", "http://***@h?key=***"),
        ] {
            assert_eq!(mask_str(raw), want, "{raw}");
            assert_eq!(mask_str(want), want, "masking is idempotent: {want}");
        }
    }

    #[test]
    fn connection_strings_lose_their_password_and_text_is_kept() {
        assert_eq!(
            mask_str("host=db port=6543 user=u password=s3cret dbname=banks"),
            "host=db port=6543 user=u password=*** dbname=banks"
        );
        for text in [
            "models/a.gguf",
            "The key is 42.",
            "a=b but not conninfo",
            "{memory}\n\npassword=x",
            "",
            "://nothing",
            "1http://x:y@z",
        ] {
            assert_eq!(mask_str(text), text);
        }
    }

    #[test]
    fn tables_are_masked_recursively() {
        let t: toml::Table = toml::from_str(
            "[model]\nbase_url = \"http://a:b@h:1\"\nn = 3\n[[x]]\nurls = [\"https://h?key=k\", \"plain\"]\n",
        )
        .unwrap();
        let m = mask_table(&t);
        let text = toml::to_string(&m).unwrap();
        assert!(!text.contains("a:b") && !text.contains("key=k"), "{text}");
        assert!(
            text.contains("http://***@h:1") && text.contains("plain"),
            "{text}"
        );
        assert_eq!(m["model"]["n"].as_integer(), Some(3));
    }
}
