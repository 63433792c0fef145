//! CSV (RFC 4180) for `exec --format csv`: fields with a comma, quote, CR or LF are quoted,
//! quotes doubled; NULL is an empty field. The values are the data, so they are written as
//! they are into a pipe or file; on a terminal control characters are made visible first.

use std::borrow::Cow;
use std::io::IsTerminal;

/// One record, with its line end (CRLF, as RFC 4180 says).
pub fn record<'a>(fields: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let tty = std::io::stdout().is_terminal();
    let mut line = fields
        .into_iter()
        .map(|f| {
            let f = f.unwrap_or("");
            let f = if tty {
                crate::output::escape(f)
            } else {
                Cow::Borrowed(f)
            };
            field(&f)
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn field(f: &str) -> String {
    if f.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }
}
