//! Everything tenantctl prints goes through here: stdout through `outln!`, [`Stdout`] and
//! [`print_json`], stderr through `errln!`.
//!
//! Two rules live in this one place:
//! - **A closed pipe is a normal end.** Rust ignores SIGPIPE, so a write to a pipe whose
//!   reader has gone (`tenantctl list | head -1`) returns EPIPE, and `println!` panics on it.
//!   Here EPIPE marks the stream closed and later writes are dropped silently, as ripgrep
//!   does. The command itself goes on: a `drop` or `migrate` must not stop half way because
//!   nobody reads its report, and its exit code still says whether the work succeeded. Any
//!   other write error (a full disk behind `> file`) is kept and reported by [`finish`].
//! - **Untrusted text never reaches a terminal raw.** Server messages, `last_error` and names
//!   read from the database can carry escape sequences (a unique-violation detail quoting
//!   `ESC ]0;...BEL` retitles the terminal). [`escape`] and [`escape_line`] make every C0/C1
//!   control character visible (`\x1b`); text on stderr is always escaped, text on stdout
//!   where it is printed ([`TextTable`] cells, per-tenant lines, `list`), and JSON escapes
//!   what serde_json leaves raw (DEL and C1) as `\u00XX`.

pub mod csv;
pub mod junit;
pub mod outcome;
pub mod progress;
pub mod prometheus;

use std::borrow::Cow;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

/// One of our two output streams: closed after EPIPE (or any write error), and the first
/// error that was not EPIPE, for [`finish`].
struct Sink {
    closed: AtomicBool,
    failure: Mutex<Option<io::Error>>,
}

impl Sink {
    const fn new() -> Sink {
        Sink {
            closed: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    /// Runs `write` unless the stream is closed; an error closes it.
    fn attempt(&self, write: impl FnOnce() -> io::Result<()>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = write() {
            self.closed.store(true, Ordering::Relaxed);
            if e.kind() != io::ErrorKind::BrokenPipe {
                let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                failure.get_or_insert(e);
            }
        }
    }
}

static STDOUT: Sink = Sink::new();
static STDERR: Sink = Sink::new();

/// Standard output as an `io::Write` that never fails (see the module's rules), for code
/// that writes through a writer: serde_json, clap_complete, clap_mangen.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        STDOUT.attempt(|| io::stdout().lock().write_all(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        STDOUT.attempt(|| io::stdout().lock().flush());
        Ok(())
    }
}

/// Writes `text` to stdout as it is: the caller escapes untrusted parts.
pub fn write_stdout(text: &str) {
    let _ = Stdout.write_all(text.as_bytes());
}

/// Writes `text` to stderr with every control character but newline escaped: stderr carries
/// error messages quoting the server, so nothing there is trusted.
pub fn write_stderr(text: &str) {
    let text = escape(text);
    STDERR.attempt(|| {
        let mut err = io::stderr().lock();
        err.write_all(text.as_bytes())?;
        err.flush()
    });
}

/// `println!` for stdout that ends quietly on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_stdout("\n") };
    ($($arg:tt)*) => { $crate::output::write_stdout(&format!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that ends quietly on a closed pipe and escapes control characters.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::output::write_stderr(&format!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` (no newline, e.g. a prompt), with `errln!`'s rules.
#[macro_export]
macro_rules! errprint {
    ($($arg:tt)*) => { $crate::output::write_stderr(&format!($($arg)*)) };
}

/// Flushes stdout; returns the write error other than a closed pipe, if any happened (the
/// output is then incomplete, and the run should not claim success).
pub fn finish() -> Option<io::Error> {
    let _ = Stdout.flush();
    STDOUT
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
}

/// Untrusted text for a multi-line place (an error message on stderr): every C0 and C1
/// control character except newline becomes a visible escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_controls(text, true)
}

/// Untrusted text for a single-line place (a table cell, a per-tenant line, a `list`
/// field): like [`escape`], and newline too.
pub fn escape_line(text: &str) -> Cow<'_, str> {
    escape_controls(text, false)
}

/// The one escaping function: `\n`, `\r`, `\t` by their usual names, other C0 characters
/// and DEL as `\x1b`, C1 characters (which some terminals obey as well) as `\u{9b}`.
/// Backslashes are left as they are, so ordinary text reads unchanged.
fn escape_controls(text: &str, keep_newline: bool) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() && !(keep_newline && c == '\n');
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !needs(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// A count with its noun: `1 tenant`, `3 tenants` (regular nouns only).
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {}", plural(n, noun))
}

/// Bytes the way pg_size_pretty shows them (powers of 1024, rounded).
pub fn size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v.abs() >= 10_240.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", v.round() as i64, UNITS[unit])
}

/// The noun for `n` things: `tenant`, `tenants` (regular nouns only).
pub fn plural(n: usize, noun: &str) -> Cow<'_, str> {
    if n == 1 {
        Cow::Borrowed(noun)
    } else {
        Cow::Owned(format!("{noun}s"))
    }
}

/// A noun and the names it stands for: `tenant acme`, `tenants acme, globex`.
pub fn listed(noun: &str, names: &[impl AsRef<str>]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    format!("{} {}", plural(names.len(), noun), names.join(", "))
}

/// A text table whose cells are escaped as they are added: tables show server errors and
/// names read from the database.
pub struct TextTable(Table);

/// A table in the style of the terminal: box drawing on a TTY, plain ASCII otherwise.
pub fn table(header: Vec<&str>) -> TextTable {
    let mut t = Table::new();
    if io::stdout().is_terminal() {
        t.load_style(presets::UTF8_FULL_CONDENSED);
        t.set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        t.load_style(presets::ASCII_BORDERS_ONLY_CONDENSED);
    }
    t.set_header(header);
    TextTable(t)
}

impl TextTable {
    pub fn add_row(&mut self, cells: Vec<String>) {
        self.0
            .add_row(cells.iter().map(|c| escape_line(c).into_owned()));
    }
}

impl fmt::Display for TextTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Writes `doc` to stdout as one line of JSON, straight from the values: a document about
/// 10,000 tenants is never built in memory a second time (as a `serde_json::Value` tree
/// and then a string, it took about 2 KiB per tenant).
pub fn print_json(doc: &impl Serialize) {
    let mut out = io::BufWriter::new(Stdout);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, TerminalSafe);
    // Writing cannot fail (Stdout swallows errors for finish()); our documents always
    // serialize (no maps with non-string keys).
    let _ = doc.serialize(&mut ser);
    let _ = writeln!(out);
    let _ = out.flush();
}

/// Whether a [`JsonStream`] has begun its document on stdout and not yet closed it: an
/// error that ends the command then closes that document (see [`print_json_error`]) instead
/// of writing a second one.
static STREAM_OPEN: AtomicBool = AtomicBool::new(false);

/// One JSON document written as it goes: the fields of `head`, then an array under `key`
/// whose items are written one at a time, then the closing brackets. The bytes are those
/// [`print_json`] writes for the whole document (a unit test holds them equal), but only one
/// item is in memory at a time, so a document about 100,000 tenants takes the memory of one.
pub struct JsonStream<W: Write> {
    out: W,
    items: usize,
}

impl JsonStream<io::BufWriter<Stdout>> {
    /// Begins the document on stdout.
    pub fn stdout(head: &impl Serialize, key: &str) -> Self {
        STREAM_OPEN.store(true, Ordering::Relaxed);
        JsonStream::begin(io::BufWriter::new(Stdout), head, key)
    }
}

impl<W: Write> JsonStream<W> {
    /// Writes `head` without its closing brace, then `"key":[`. `head` must serialize as an
    /// object (a struct); its fields come first, in their order.
    pub fn begin(mut out: W, head: &impl Serialize, key: &str) -> Self {
        let mut bytes = to_json(head);
        debug_assert_eq!(bytes.last(), Some(&b'}'), "the head is an object");
        bytes.pop();
        if bytes.len() > 1 {
            bytes.push(b',');
        }
        bytes.extend(to_json(&key));
        bytes.extend(b":[");
        let _ = out.write_all(&bytes);
        JsonStream { out, items: 0 }
    }

    /// Writes one element of the array.
    pub fn item(&mut self, item: &impl Serialize) {
        if self.items > 0 {
            let _ = self.out.write_all(b",");
        }
        self.items += 1;
        let mut ser = serde_json::Serializer::with_formatter(&mut self.out, TerminalSafe);
        let _ = item.serialize(&mut ser);
    }

    /// Closes the array, writes the fields of `tail` (an object, a struct) after it, closes
    /// the document and hands the writer back.
    pub fn end_with(mut self, tail: &impl Serialize) -> W {
        let bytes = to_json(tail);
        debug_assert_eq!(bytes.first(), Some(&b'{'), "the tail is an object");
        let _ = self.out.write_all(b"]");
        if bytes.len() > 2 {
            let _ = self.out.write_all(b",");
            let _ = self.out.write_all(&bytes[1..]);
        } else {
            let _ = self.out.write_all(b"}");
        }
        let _ = self.out.write_all(b"\n");
        let _ = self.out.flush();
        STREAM_OPEN.store(false, Ordering::Relaxed);
        self.out
    }

    /// Closes the array and the document, and hands the writer back.
    pub fn end(mut self) -> W {
        let _ = self.out.write_all(b"]}\n");
        let _ = self.out.flush();
        STREAM_OPEN.store(false, Ordering::Relaxed);
        self.out
    }
}

impl<W: Write> JsonStream<W> {
    /// Appends the items set aside in `spool`, in their order.
    pub fn items_from(&mut self, spool: JsonSpool) -> io::Result<()> {
        let JsonSpool { file, items } = spool;
        if items == 0 {
            return Ok(());
        }
        let mut file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
        if self.items > 0 {
            self.out.write_all(b",")?;
        }
        io::copy(&mut file, &mut self.out)?;
        self.items += items;
        Ok(())
    }
}

/// Items of a JSON array set aside on disk while they are decided, for a document whose
/// fields before the array (counts) are known only once every item is: memory holds none
/// of them. The file has no name (O_TMPFILE; where the file system lacks it, a private
/// file removed as soon as it is open), so nothing is left behind and nobody else reads it.
pub struct JsonSpool {
    file: io::BufWriter<std::fs::File>,
    items: usize,
}

impl JsonSpool {
    /// A spool in the temporary folder (TMPDIR).
    pub fn new() -> io::Result<JsonSpool> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::env::temp_dir();
        let unnamed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        let file = match unnamed {
            Ok(f) => f,
            Err(_) => {
                let path = dir.join(format!(".tenantctl-report-{}.json", std::process::id()));
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)?;
                std::fs::remove_file(&path)?;
                f
            }
        };
        Ok(JsonSpool {
            file: io::BufWriter::new(file),
            items: 0,
        })
    }

    /// Sets one item aside (as [`JsonStream::item`] would write it).
    pub fn item(&mut self, item: &impl Serialize) -> io::Result<()> {
        if self.items > 0 {
            self.file.write_all(b",")?;
        }
        self.items += 1;
        let mut ser = serde_json::Serializer::with_formatter(&mut self.file, TerminalSafe);
        item.serialize(&mut ser).map_err(io::Error::other)
    }
}

/// `value` as compact, terminal-safe JSON.
fn to_json(value: &impl Serialize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, TerminalSafe);
    // Our documents always serialize (no maps with non-string keys).
    let _ = value.serialize(&mut ser);
    buf
}

/// The error that ends a `--format json` run, as JSON on stdout: its own document
/// `{"error", "exit_code"}`, or, when a streamed document was begun (a registry read that
/// failed half way), the same two fields closing that document, so stdout still holds
/// exactly one JSON document.
pub fn print_json_error(error: &str, exit_code: u8) {
    #[derive(Serialize)]
    struct Failure<'a> {
        error: &'a str,
        exit_code: u8,
    }
    let failure = Failure { error, exit_code };
    if !STREAM_OPEN.swap(false, Ordering::Relaxed) {
        return print_json(&failure);
    }
    let mut tail = b"],".to_vec();
    tail.extend(&to_json(&failure)[1..]);
    tail.push(b'\n');
    let mut out = Stdout;
    let _ = out.write_all(&tail);
    let _ = out.flush();
}

/// serde_json's compact format, with DEL and C1 control characters escaped too (serde_json
/// escapes only C0): the document means the same to a parser, and `cat`ting it is safe.
struct TerminalSafe;

impl serde_json::ser::Formatter for TerminalSafe {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut rest = fragment;
        while let Some((i, c)) = rest.char_indices().find(|(_, c)| c.is_control()) {
            writer.write_all(&rest.as_bytes()[..i])?;
            write!(writer, "\\u{:04x}", c as u32)?;
            rest = &rest[i + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_pg_size_pretty() {
        assert_eq!(super::size(8192), "8192 bytes");
        assert_eq!(super::size(16_384), "16 kB");
        assert_eq!(super::size(50 * 1024 * 1024), "50 MB");
    }

    #[test]
    fn escape_makes_every_control_character_visible() {
        let hostile = "a\x1b]0;pwned\x07b\u{9b}31m\x7f\r\tc\nd";
        assert_eq!(
            escape_line(hostile),
            "a\\x1b]0;pwned\\x07b\\u{9b}31m\\x7f\\r\\tc\\nd"
        );
        assert_eq!(
            escape(hostile),
            "a\\x1b]0;pwned\\x07b\\u{9b}31m\\x7f\\r\\tc\nd"
        );
        assert!(!escape_line(hostile).chars().any(char::is_control));
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        let text = "duplicate key value (name)=(St Mary's \\ Clinic) — é ✓";
        assert!(matches!(escape_line(text), Cow::Borrowed(t) if t == text));
        assert!(matches!(escape("two\nlines"), Cow::Borrowed(_)));
    }

    #[test]
    fn escaping_twice_changes_nothing_more() {
        let once = escape_line("x\x1by\u{85}").into_owned();
        assert_eq!(escape_line(&once), once);
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(0, "tenant"), "0 tenants");
        assert_eq!(count(1, "tenant"), "1 tenant");
        assert_eq!(count(2, "finding"), "2 findings");
        assert_eq!(plural(1, "schema"), "schema");
        assert_eq!(listed("tenant", &["acme"]), "tenant acme");
        assert_eq!(
            listed("tenant", &["acme", "globex"]),
            "tenants acme, globex"
        );
    }

    #[derive(Serialize)]
    struct Head<'a> {
        latest_version: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        shared: Option<&'a str>,
    }

    #[derive(Serialize)]
    struct Whole<'a> {
        latest_version: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        shared: Option<&'a str>,
        tenants: Vec<serde_json::Value>,
    }

    #[derive(Serialize)]
    struct Empty {}

    #[test]
    fn a_streamed_document_is_byte_for_byte_the_whole_one() {
        let rows = [
            serde_json::json!({"slug": "a\u{9b}", "version": 7}),
            serde_json::json!({"slug": "b", "last_error": null}),
        ];
        for shared in [None, Some("shared\x1b")] {
            for n in 0..=rows.len() {
                let mut whole = Vec::new();
                let doc = Whole {
                    latest_version: 7,
                    shared,
                    tenants: rows[..n].to_vec(),
                };
                doc.serialize(&mut serde_json::Serializer::with_formatter(
                    &mut whole,
                    TerminalSafe,
                ))
                .unwrap();
                whole.push(b'\n');
                let head = Head {
                    latest_version: 7,
                    shared,
                };
                let mut stream = JsonStream::begin(Vec::new(), &head, "tenants");
                for r in &rows[..n] {
                    stream.item(r);
                }
                let streamed = stream.end();
                assert_eq!(
                    String::from_utf8(streamed).unwrap(),
                    String::from_utf8(whole).unwrap()
                );
            }
        }
    }

    #[test]
    fn spooled_items_come_back_in_order() {
        let mut spool = JsonSpool::new().unwrap();
        for i in 0..3 {
            spool
                .item(&serde_json::json!({ "n": i, "s": "\u{9b}" }))
                .unwrap();
        }
        let mut stream = JsonStream::begin(Vec::new(), &Empty {}, "tenants");
        stream.item(&"first");
        stream.items_from(spool).unwrap();
        stream.items_from(JsonSpool::new().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(stream.end()).unwrap(),
            "{\"tenants\":[\"first\",{\"n\":0,\"s\":\"\\u009b\"},{\"n\":1,\"s\":\"\\u009b\"},\
             {\"n\":2,\"s\":\"\\u009b\"}]}\n"
        );
    }

    #[test]
    fn a_stream_under_an_empty_head_is_one_object() {
        let mut stream = JsonStream::begin(Vec::new(), &Empty {}, "tenants");
        stream.item(&1);
        stream.item(&2);
        assert_eq!(stream.end(), b"{\"tenants\":[1,2]}\n");
    }

    #[test]
    fn a_tail_closes_the_stream_with_its_fields_after_the_array() {
        let mut stream = JsonStream::begin(Vec::new(), &Empty {}, "tenants");
        stream.item(&1);
        let tail = serde_json::json!({ "nodes": [{ "node": null }] });
        assert_eq!(
            stream.end_with(&tail),
            b"{\"tenants\":[1],\"nodes\":[{\"node\":null}]}\n"
        );
        let stream = JsonStream::begin(Vec::new(), &Empty {}, "tenants");
        assert_eq!(stream.end_with(&Empty {}), b"{\"tenants\":[]}\n");
    }

    #[test]
    fn json_escapes_del_and_c1_and_still_parses_to_the_same_text() {
        let value = serde_json::json!({ "k\u{9b}": "a\x1b]0;x\x07\u{7f}\u{9b}31m\u{a0}é" });
        let mut buf = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, TerminalSafe);
        value.serialize(&mut ser).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("\\u001b") && text.contains("\\u009b") && text.contains("\\u007f"));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
