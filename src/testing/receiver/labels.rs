//! The `labels` string of a pushed stream: Prometheus' label-set grammar with Go-quoted values,
//! and the canonical form Loki stores (`{a="b", c="d"}`).
//!
//! This is the receiver's own parser, written from the grammar rather than shared with any
//! encoder, so that a quoting bug in a client cannot be hidden by the same bug here.

use std::fmt::{self, Write as _};

/// Label pairs in the order they were written (or sorted, once canonical).
pub(crate) type Pairs = Vec<(String, String)>;

/// A label string that does not parse. Displays like Prometheus' parser: `1:4: parse error: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    /// 1-based byte column of the offending token.
    col: usize,
    msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1:{}: parse error: {}", self.col, self.msg)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ident(String),
    Str(String),
    End,
}

fn error_at(at: usize, msg: impl Into<String>) -> ParseError {
    ParseError {
        col: at + 1,
        msg: msg.into(),
    }
}

/// U+FFFD in UTF-8: what Go's decoder returns for bad input, so the `PromQL` lexer rejects it.
const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// The next token and the byte offset where it starts.
    fn next(&mut self) -> Result<(Token, usize), ParseError> {
        while self.src.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&b) = self.src.get(start) else {
            return Ok((Token::End, start));
        };
        let single = match b {
            b'{' => Some(Token::LBrace),
            b'}' => Some(Token::RBrace),
            b',' => Some(Token::Comma),
            b'=' => Some(Token::Eq),
            _ => None,
        };
        if let Some(tok) = single {
            self.pos += 1;
            return Ok((tok, start));
        }
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => Ok((Token::Ident(self.ident()), start)),
            b'"' => self.quoted().map(|s| (Token::Str(s), start)),
            b'`' => self.raw().map(|s| (Token::Str(s), start)),
            _ => Err(error_at(
                start,
                format!("unexpected character: {}", quote_char(self.rest())),
            )),
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.src[self.pos.min(self.src.len())..]
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while self
            .src
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            self.pos += 1;
        }
        // Only ASCII bytes were taken, so this cannot fail.
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }

    /// A raw (backquoted) string: no escapes, newlines allowed, as in Go.
    fn raw(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        let body = &self.src[start + 1..];
        match body.iter().position(|&b| b == b'`') {
            Some(end) if body[..end].windows(3).any(|w| w == REPLACEMENT) => {
                Err(error_at(start, "invalid UTF-8 rune"))
            }
            Some(end) => {
                self.pos = start + 1 + end + 1;
                Ok(bytes_to_string(body[..end].to_vec()))
            }
            None => Err(error_at(start, "unterminated raw string")),
        }
    }

    /// A double-quoted string with Go escapes (`strconv.Unquote` rules).
    fn quoted(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.src.get(self.pos) {
                None | Some(b'\n') => return Err(error_at(start, "unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(bytes_to_string(out));
                }
                Some(b'\\') => self.escape(&mut out)?,
                // Go decodes U+FFFD as `utf8.RuneError`, which the PromQL lexer refuses.
                Some(0xef) if self.src[self.pos..].starts_with(REPLACEMENT) => {
                    return Err(error_at(start, "invalid UTF-8 rune"));
                }
                Some(&b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ParseError> {
        let at = self.pos;
        let Some(&c) = self.src.get(at + 1) else {
            return Err(error_at(at, "unterminated quoted string"));
        };
        self.pos += 2;
        let simple = match c {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            return Ok(());
        }
        match c {
            b'x' => out.push(self.number(at, 2, 16)?.try_into().unwrap_or(0)),
            b'0'..=b'7' => {
                self.pos -= 1;
                let v = self.number(at, 3, 8)?;
                out.push(u8::try_from(v).map_err(|_| error_at(at, "octal escape value > 255"))?);
            }
            b'u' | b'U' => {
                let digits = if c == b'u' { 4 } else { 8 };
                let v = self.number(at, digits, 16)?;
                let ch = char::from_u32(v).ok_or_else(|| {
                    error_at(at, "escape sequence is an invalid Unicode code point")
                })?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            }
            _ => {
                return Err(error_at(
                    at,
                    format!(
                        "unknown escape sequence {}",
                        quote_char(&self.src[at + 1..])
                    ),
                ))
            }
        }
        Ok(())
    }

    /// Exactly `digits` digits in `radix` at the current position.
    fn number(&mut self, at: usize, digits: usize, radix: u32) -> Result<u32, ParseError> {
        let mut v: u32 = 0;
        for _ in 0..digits {
            let d = self
                .src
                .get(self.pos)
                .and_then(|&b| char::from(b).to_digit(radix))
                .ok_or_else(|| error_at(at, "invalid escape sequence"))?;
            v = v * radix + d;
            self.pos += 1;
        }
        Ok(v)
    }
}

/// Go's `\x` and octal escapes can produce bytes that are not UTF-8; Loki would keep them,
/// a Rust `String` cannot, so they become U+FFFD.
fn bytes_to_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The first character of `rest`, Go-quoted, for error messages.
fn quote_char(rest: &[u8]) -> String {
    let len = match rest.first() {
        Some(&b) if b >= 0x80 => std::str::from_utf8(&rest[..rest.len().min(4)]).map_or_else(
            |e| e.valid_up_to().max(1),
            |s| s.chars().next().map_or(1, char::len_utf8),
        ),
        _ => 1,
    };
    quote_bytes(&rest[..len.min(rest.len())])
}

/// Parses a label set such as `{app="demo", env="dev"}`.
///
/// The grammar is Prometheus' metric label set: `{`, then `name = "value"` pairs separated by
/// commas with an optional trailing comma, then `}`; whitespace between tokens is allowed.
/// Pairs are returned as written: duplicates and empty values are for validation to judge.
pub(crate) fn parse(input: &str) -> Result<Pairs, ParseError> {
    let mut lx = Lexer {
        src: input.as_bytes(),
        pos: 0,
    };
    expect(&mut lx, &Token::LBrace, "expected \"{\"")?;
    let mut pairs = Vec::new();
    loop {
        let name = match lx.next()? {
            (Token::RBrace, _) => break,
            (Token::Ident(name), _) => name,
            (tok, at) => return Err(unexpected(&tok, at, "inside braces, expected label name")),
        };
        expect(&mut lx, &Token::Eq, "in label set, expected \"=\"")?;
        let value = match lx.next()? {
            (Token::Str(v), _) => v,
            (tok, at) => return Err(unexpected(&tok, at, "in label set, expected quoted string")),
        };
        pairs.push((name, value));
        match lx.next()? {
            (Token::Comma, _) => {}
            (Token::RBrace, _) => break,
            (tok, at) => {
                return Err(unexpected(
                    &tok,
                    at,
                    "in label set, expected \",\" or \"}\"",
                ))
            }
        }
    }
    match lx.next()? {
        (Token::End, _) => Ok(pairs),
        (tok, at) => Err(unexpected(
            &tok,
            at,
            "after label set, expected end of input",
        )),
    }
}

fn expect(lx: &mut Lexer<'_>, want: &Token, context: &str) -> Result<(), ParseError> {
    match lx.next()? {
        (tok, _) if tok == *want => Ok(()),
        (tok, at) => Err(unexpected(&tok, at, context)),
    }
}

fn unexpected(tok: &Token, at: usize, context: &str) -> ParseError {
    let what = match tok {
        Token::End => "end of input".to_owned(),
        Token::Ident(s) => format!("identifier {}", quote(s)),
        Token::Str(s) => format!("string {}", quote(s)),
        Token::LBrace => "\"{\"".to_owned(),
        Token::RBrace => "\"}\"".to_owned(),
        Token::Comma => "\",\"".to_owned(),
        Token::Eq => "\"=\"".to_owned(),
    };
    error_at(at, format!("unexpected {what} {context}"))
}

/// Drops empty values and sorts by name (stable, so duplicates stay for validation to find),
/// as Loki does before it stores a stream.
pub(crate) fn normalise(mut pairs: Pairs) -> Pairs {
    pairs.retain(|(_, v)| !v.is_empty());
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

/// The canonical text of a label set: `{a="b", c="d"}`, values Go-quoted.
pub(crate) fn canonical(pairs: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push('=');
        out.push_str(&quote(value));
    }
    out.push('}');
    out
}

/// Go's `strconv.Quote`.
pub(crate) fn quote(s: &str) -> String {
    quote_bytes(s.as_bytes())
}

/// Go's `strconv.Quote` over bytes: invalid UTF-8 becomes `\xNN`, as Go writes it.
pub(crate) fn quote_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if is_print(c) => out.push(c),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x1_0000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of Go's `unicode.IsPrint` (letters, marks, numbers, punctuation, symbols
/// and the ASCII space). Rust's std has no general categories, so format characters are listed
/// and unassigned code points count as printable.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format_or_private = matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 | 0x180e
        | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f
        | 0xe000..=0xf8ff | 0xfeff | 0xfff9..=0xfffb | 0xfffe..=0xffff | 0x110bd | 0x110cd
        | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f
        | 0xf0000..);
    !format_or_private
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pairs {
        parse(s).unwrap()
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn parses_a_simple_set() {
        assert_eq!(p(r#"{foo="bar2"}"#), vec![pair("foo", "bar2")]);
    }

    #[test]
    fn allows_whitespace_and_a_trailing_comma() {
        assert_eq!(
            p(" {\ta = \"1\" ,\n b=\"2\", } "),
            vec![pair("a", "1"), pair("b", "2")]
        );
    }

    #[test]
    fn empty_set_parses() {
        assert_eq!(p("{}"), vec![]);
    }

    #[test]
    fn unquotes_go_escapes() {
        let got = p(r#"{a="\\ \" \n \t \x41 \101 \u00e9 \U0001F600 \a"}"#);
        assert_eq!(got[0].1, "\\ \" \n \t A A é 😀 \u{7}");
    }

    #[test]
    fn raw_strings_are_taken_verbatim() {
        assert_eq!(p("{a=`x\\ny`}")[0].1, "x\\ny");
    }

    #[test]
    fn raw_newline_in_quotes_is_an_error() {
        let err = parse("{a=\"x\ny\"}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "1:4: parse error: unterminated quoted string"
        );
    }

    #[test]
    fn a_raw_replacement_character_is_refused_as_promql_does() {
        for input in ["{a=\"x\u{fffd}\"}", "{a=`x\u{fffd}`}"] {
            assert_eq!(
                parse(input).unwrap_err().to_string(),
                "1:4: parse error: invalid UTF-8 rune",
                "{input:?}"
            );
        }
        assert_eq!(p(r#"{a="\ufffd"}"#)[0].1, "\u{fffd}");
        // Go's `strconv.Quote` (and so Loki's canonical form) leaves it raw.
        let canon = canonical(&[("a".to_owned(), "\u{fffd}".to_owned())]);
        assert!(parse(&canon).is_err(), "{canon}");
        assert_eq!(p(r#"{a="é"}"#)[0].1, "é");
    }

    #[test]
    fn unterminated_string_reports_its_column_like_loki() {
        assert_eq!(
            parse("{ab\"").unwrap_err().to_string(),
            "1:4: parse error: unterminated quoted string"
        );
    }

    #[test]
    fn rust_debug_escape_is_rejected() {
        assert!(parse(r#"{a="\u{1b}"}"#).is_err());
    }

    #[test]
    fn bad_names_and_shapes_are_errors() {
        for bad in [
            "",
            "a",
            "{",
            "{a}",
            "{a=}",
            "{a=b}",
            "{1a=\"x\"}",
            "{a-b=\"x\"}",
            "{a=\"x\"",
            "{a=\"x\"}x",
            "{,}",
            "{a=\"x\" b=\"y\"}",
            "{a=\"\\q\"}",
            "{a=\"\\x4\"}",
            "{a=\"\\400\"}",
            "{a=\"\\uD800\"}",
            "{a!=\"x\"}",
            "{é=\"x\"}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn normalise_drops_empty_values_and_sorts() {
        let got = normalise(vec![pair("b", "2"), pair("c", ""), pair("a", "1")]);
        assert_eq!(got, vec![pair("a", "1"), pair("b", "2")]);
    }

    #[test]
    fn canonical_form_matches_loki() {
        let got = canonical(&[pair("app", "demo"), pair("env", "dev")]);
        assert_eq!(got, r#"{app="demo", env="dev"}"#);
    }

    #[test]
    fn quote_matches_go_strconv_quote() {
        assert_eq!(quote("a\u{1b}b"), r#""a\x1bb""#);
        assert_eq!(quote("\u{7f}\u{85}\u{a0}é"), r#""\x7f\u0085\u00a0é""#);
        assert_eq!(quote("\u{feff}\u{e0001}"), r#""\ufeff\U000e0001""#);
        assert_eq!(quote_bytes(b"a\xffb"), r#""a\xffb""#);
    }

    #[test]
    fn quoted_values_round_trip() {
        for v in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\n",
            "\u{1b}[31m",
            "é😀",
            "\u{0}",
        ] {
            let text = canonical(&[pair("k", v)]);
            assert_eq!(p(&text), vec![pair("k", v)], "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,80}") {
            let _ = parse(&s);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let _ = parse(&String::from_utf8_lossy(&b));
        }

        #[test]
        fn go_quoted_label_sets_round_trip(
            pairs in proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,8}", proptest::prelude::any::<String>()), 0..6)
        ) {
            // Go's `strconv.Quote` leaves U+FFFD raw and the lexer refuses it: as in Loki,
            // such a canonical form does not parse back (see the test just above).
            proptest::prop_assume!(pairs.iter().all(|(_, v)| !v.contains('\u{fffd}')));
            let text = canonical(&pairs);
            proptest::prop_assert_eq!(parse(&text).unwrap(), pairs);
        }
    }
}
