//! libpq connection strings, parsed the way libpq parses them: a URL
//! (`postgres://user:pw@host:port,host2/db?key=value`) or keywords (`host=/run dbname='my db'`).
//!
//! The result is libpq's keyword → value map, and what the string leaves out is absent, so
//! that the `PG*` variables and the defaults can fill it in (tokio-postgres's own parser
//! gives a URL without a port the port 5432, so a missing port could not be told apart).
//! Errors never quote the string or a value: it may hold a password.

use std::collections::BTreeMap;

/// libpq keyword → value, as the string gave them (later occurrences win, as in libpq).
pub type Params = BTreeMap<String, String>;

/// The keywords tenantctl understands. The first group it resolves itself (with their `PG*`
/// variables); the rest are handed to tokio-postgres as they are.
pub const RESOLVED: [&str; 10] = [
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "passfile",
    "dbname",
    "sslmode",
    "sslrootcert",
    "application_name",
];
const PASSED_ON: [&str; 11] = [
    "options",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "tcp_user_timeout",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
];

/// Parses a URL (`postgres://` or `postgresql://`) or a keyword string.
pub fn parse(s: &str) -> Result<Params, String> {
    let s = s.trim();
    let params = if let Some(rest) = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
    {
        parse_url(rest)?
    } else if s.contains("://") {
        return Err("a connection URL must start with postgres:// or postgresql://".into());
    } else {
        parse_keywords(s)?
    };
    for key in params.keys() {
        check_known(key)?;
    }
    Ok(params)
}

fn check_known(key: &str) -> Result<(), String> {
    if RESOLVED.contains(&key) || PASSED_ON.contains(&key) {
        return Ok(());
    }
    // A key is shown only when it looks like one: a string without `=` in the right place
    // may make a password look like a key.
    if !key.is_empty()
        && key.len() <= 40
        && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        Err(format!(
            "unknown or unsupported connection option \"{key}\" (tenantctl supports {})",
            RESOLVED
                .iter()
                .chain(PASSED_ON.iter())
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        Err("a connection option has an invalid name".into())
    }
}

/// `[user[:password]@][host][:port][,...][/dbname][?key=value&...]`, after the scheme.
fn parse_url(rest: &str) -> Result<Params, String> {
    let mut params = Params::new();
    let mut s = rest;
    // libpq looks for the credentials up to the first '/', so a '?' or ':' in an
    // unencoded password still parses.
    let end = s.find(['@', '/']).unwrap_or(s.len());
    if s[end..].starts_with('@') {
        let userinfo = &s[..end];
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        store(&mut params, "user", &decode(user)?);
        if let Some(p) = password {
            store(&mut params, "password", &decode(p)?);
        }
        s = &s[end + 1..];
    }

    let end = s.find(['/', '?']).unwrap_or(s.len());
    let (hosts, ports) = parse_netloc(&s[..end])?;
    store(&mut params, "host", &decode(&hosts)?);
    store(&mut params, "port", &decode(&ports)?);
    s = &s[end..];

    let (path, query) = match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    };
    if let Some(db) = path.strip_prefix('/') {
        store(&mut params, "dbname", &decode(db)?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err("a URL query parameter lacks its \"=\"".into());
        };
        if v.contains('=') {
            return Err("a URL query parameter has more than one \"=\"".into());
        }
        let (k, v) = (decode(k)?, decode(v)?);
        // libpq's JDBC-compatible spelling.
        if k == "ssl" && v == "true" {
            params.insert("sslmode".into(), "require".into());
        } else {
            params.insert(k, v);
        }
    }
    Ok(params)
}

/// Hosts and ports as libpq keeps them: comma-separated lists in step (`h1,h2` and `,5433`).
fn parse_netloc(netloc: &str) -> Result<(String, String), String> {
    // Only an unencoded '@' in the password gets here; the rest of that password would
    // otherwise become a host name and show up in messages (libpq's among them).
    if netloc.contains('@') {
        return Err(
            "the URL has more than one \"@\" (write an \"@\" in a user name or password as %40)"
                .into(),
        );
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for chunk in netloc.split(',') {
        let (host, port) = if let Some(bracketed) = chunk.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or("an IPv6 host address in the URL lacks its closing \"]\"")?;
            match after {
                "" => (host, ""),
                _ => (
                    host,
                    after
                        .strip_prefix(':')
                        .ok_or("unexpected characters after an IPv6 address in the URL")?,
                ),
            }
        } else {
            chunk.split_once(':').unwrap_or((chunk, ""))
        };
        hosts.push(host);
        ports.push(port);
    }
    Ok((hosts.join(","), ports.join(",")))
}

/// Stores a URL part; libpq leaves an empty part unset, so that defaults apply.
fn store(params: &mut Params, key: &str, value: &str) {
    if !value.is_empty() {
        params.insert(key.into(), value.into());
    }
}

/// Percent-decoding, strict as libpq's: `%` must start two hex digits, `%00` is refused.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let byte = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or("the URL holds an invalid percent-encoded token")?;
        if byte == 0 {
            return Err("the URL holds a forbidden %00".into());
        }
        out.push(byte);
        i += 3;
    }
    String::from_utf8(out).map_err(|_| "the URL decodes to invalid UTF-8".into())
}

/// `key = value` pairs separated by spaces; a value may be single-quoted, and a backslash
/// escapes the next character (libpq's conninfo_parse).
fn parse_keywords(s: &str) -> Result<Params, String> {
    let mut params = Params::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(params);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(
                "a keyword in the connection string lacks its \"=\" (expected key=value pairs)"
                    .into(),
            );
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err("a quoted value in the connection string is not closed".into())
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        params.insert(key, value);
    }
}

/// Writes parameters back as a keyword string (for tokio-postgres's parser), quoted.
pub fn to_keywords<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    params
        .into_iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a keyword is one tokio-postgres takes as it is (see `PASSED_ON`).
pub fn passed_on(key: &str) -> bool {
    PASSED_ON.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, String)> {
        parse(s).unwrap().into_iter().collect()
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_url_leaves_out_what_it_does_not_say() {
        assert_eq!(
            p("postgres://u:p@127.0.0.1/app"),
            kv(&[
                ("user", "u"),
                ("password", "p"),
                ("host", "127.0.0.1"),
                ("dbname", "app")
            ])
        );
        // Empty user, empty host, no path: nothing set, so PG* variables fill them.
        assert_eq!(
            p("postgres://:pw@:5433"),
            kv(&[("password", "pw"), ("port", "5433")])
        );
        assert_eq!(p("postgresql://"), kv(&[]));
        assert_eq!(p("postgres:///db"), kv(&[("dbname", "db")]));
    }

    #[test]
    fn socket_folders_in_urls() {
        assert_eq!(
            p("postgres://u@%2Fvar%2Frun%2Fpostgresql/db"),
            kv(&[
                ("user", "u"),
                ("host", "/var/run/postgresql"),
                ("dbname", "db")
            ])
        );
        assert_eq!(
            p("postgres:///db?host=/tmp/s&port=5499"),
            kv(&[("dbname", "db"), ("host", "/tmp/s"), ("port", "5499")])
        );
        assert_eq!(
            p("postgres:///db?host=%2Ftmp%2Fs"),
            kv(&[("dbname", "db"), ("host", "/tmp/s")])
        );
    }

    #[test]
    fn host_lists_ipv6_and_query_parameters() {
        assert_eq!(
            p("postgres://a,[::1]:6000,b:7000/d?sslmode=verify-full&application_name=x%20y"),
            kv(&[
                ("host", "a,::1,b"),
                ("port", ",6000,7000"),
                ("dbname", "d"),
                ("sslmode", "verify-full"),
                ("application_name", "x y")
            ])
        );
        assert_eq!(
            p("postgres://h/d?ssl=true"),
            kv(&[("host", "h"), ("dbname", "d"), ("sslmode", "require")])
        );
        // A query parameter overrides the part of the URL it names.
        assert_eq!(
            p("postgres://h1/d?host=h2"),
            kv(&[("host", "h2"), ("dbname", "d")])
        );
    }

    #[test]
    fn unencoded_specials_in_the_password_parse_like_libpq() {
        assert_eq!(
            p("postgres://u:a?b:c@h/d"),
            kv(&[
                ("user", "u"),
                ("password", "a?b:c"),
                ("host", "h"),
                ("dbname", "d")
            ])
        );
        assert_eq!(
            p("postgres://u:p%40ss@h"),
            kv(&[("user", "u"), ("password", "p@ss"), ("host", "h")])
        );
    }

    #[test]
    fn keyword_strings_quotes_and_escapes() {
        assert_eq!(
            p("host=/tmp port = 5433 dbname='my db' password='it\\'s' user=a\\ b"),
            kv(&[
                ("host", "/tmp"),
                ("port", "5433"),
                ("dbname", "my db"),
                ("password", "it's"),
                ("user", "a b")
            ])
        );
        assert_eq!(p("  "), kv(&[]));
        assert_eq!(p("host=''"), kv(&[("host", "")]));
    }

    #[test]
    fn errors_never_quote_the_string() {
        for bad in [
            "postgres://u:hunter2@h/d?x",
            "postgres://u:hunter2@h/d?a=b=c",
            "postgres://u:hunter2%zz@h/d",
            "postgres://u:hunter2%00@h/d",
            "postgres://u:hunter2@[::1/d",
            "postgres://u:pw@hunter2@h/d",
            "postgres://u:x@y:hunter2@h/d",
            "hunter2",
            "password='hunter2",
            "mysql://u:hunter2@h/d",
            "password=hunter2 sslcert=/x",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
        assert!(parse("sslcert=/x").unwrap_err().contains("\"sslcert\""));
        assert!(parse("postgres://h/d?service=x")
            .unwrap_err()
            .contains("service"));
    }

    #[test]
    fn keywords_round_trip_through_quoting() {
        let s = to_keywords([("options", "-c a='b c' \\x")]);
        assert_eq!(
            parse_keywords(&s).unwrap().get("options").unwrap(),
            "-c a='b c' \\x"
        );
    }
}
