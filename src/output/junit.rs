//! JUnit XML, the report format CI systems (GitLab, Jenkins, GitHub test reporters) read:
//! one testsuite, one testcase per tenant, a failure carrying the tenant's error.
//! tests/fixtures/junit.xsd is the schema the tests validate it against.

/// One testcase.
pub struct Case {
    pub name: String,
    pub classname: String,
    pub seconds: f64,
    /// The failure's message (its first line is also the `message` attribute).
    pub failure: Option<String>,
    /// Why it did not run.
    pub skipped: Option<String>,
}

/// Escapes text for an XML attribute or element; control characters XML 1.0 cannot carry
/// at all become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The whole document for `suite` (e.g. "tenantctl migrate").
pub fn document(suite: &str, cases: &[Case]) -> String {
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped.is_some()).count();
    let time: f64 = cases.iter().map(|c| c.seconds).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"{s}\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">\n\
         <testsuite name=\"{s}\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">\n",
        s = escape(suite),
        n = cases.len(),
    ));
    for c in cases {
        x.push_str(&format!(
            "  <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            escape(&c.name),
            escape(&c.classname),
            c.seconds
        ));
        match (&c.failure, &c.skipped) {
            (Some(f), _) => x.push_str(&format!(
                ">\n    <failure message=\"{}\" type=\"failure\">{}</failure>\n  </testcase>\n",
                escape(f.lines().next().unwrap_or_default()),
                escape(f)
            )),
            (None, Some(why)) => x.push_str(&format!(
                ">\n    <skipped message=\"{}\"/>\n  </testcase>\n",
                escape(why)
            )),
            (None, None) => x.push_str("/>\n"),
        }
    }
    x.push_str("</testsuite>\n</testsuites>");
    x
}

/// GitHub Actions' workflow command for an error annotation, for one failed tenant. The
/// message is escaped as the runner expects (%, CR, LF), so it stays one command.
pub fn github_error(title: &str, message: &str) -> String {
    let esc = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let title = esc(title).replace(':', "%3A").replace(',', "%2C");
    format!("::error title={title}::{}", esc(message))
}

/// Whether annotations are wanted: the job runs on GitHub Actions.
pub fn on_github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            escape("a<b & \"c\"\n\u{1}"),
            "a&lt;b &amp; &quot;c&quot;&#10;\u{FFFD}"
        );
        assert_eq!(
            github_error("migrate: acme", "100% bad\nline"),
            "::error title=migrate%3A acme::100%25 bad%0Aline"
        );
    }
}
