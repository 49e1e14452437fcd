//! Reading a label set back from its text, `{name="value", …}` as [`LabelSet::new`] writes
//! it: the disk buffer stores each entry's stream as that text, and a JSON push needs the
//! pairs. Only what `LabelSet::new` and `quote_into` write must parse; anything else is
//! refused (`None`), never guessed. [`Streams`] keeps the sets by their text.

use std::collections::HashMap;
use std::sync::Arc;

use super::labels::{valid_name, LabelSet};

/// Label sets remembered by their text, at most (a cache: a miss parses the text).
const MAX_STREAMS_KEPT: usize = 10_000;

/// The label set whose text is `text`, keeping the text as it is (so a protobuf push sends
/// exactly what was stored), or `None` if it is not in `LabelSet`'s form.
pub(crate) fn parse(text: &str) -> Option<LabelSet> {
    let pairs = pairs(text)?;
    Some(LabelSet {
        text: text.to_owned(),
        pairs,
    })
}

fn pairs(text: &str) -> Option<Vec<(String, String)>> {
    let mut rest = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut pairs = Vec::new();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        if !valid_name(name) {
            return None;
        }
        let (value, after) = unquote(after)?;
        pairs.push((name.to_owned(), value));
        rest = match after.strip_prefix(", ") {
            Some("") => return None,
            Some(more) => more,
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(pairs)
}

/// Reads a Go double-quoted literal at the start of `s`: its value and what follows it.
fn unquote(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                let c = match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'v' => '\u{b}',
                    'f' => '\u{c}',
                    '"' | '\\' => e,
                    'x' => hex(&mut chars, 2).filter(char::is_ascii)?,
                    'u' => hex(&mut chars, 4)?,
                    'U' => hex(&mut chars, 8)?,
                    _ => return None,
                };
                out.push(c);
            }
            c => out.push(c),
        }
    }
    None
}

fn hex(chars: &mut std::str::CharIndices<'_>, digits: usize) -> Option<char> {
    let mut v = 0u32;
    for _ in 0..digits {
        let (_, d) = chars.next()?;
        v = v * 16 + d.to_digit(16)?;
    }
    char::from_u32(v)
}

/// Label sets by their text: what an entry's stream was appended as.
#[derive(Default)]
pub(super) struct Streams {
    map: HashMap<Box<[u8]>, Arc<LabelSet>>,
    last: Option<Arc<LabelSet>>,
}

impl Streams {
    /// Remembers `set` (most entries share the set of the one before: a pointer compare).
    pub(super) fn remember(&mut self, set: &Arc<LabelSet>) {
        if self.last.as_ref().is_some_and(|l| Arc::ptr_eq(l, set)) {
            return;
        }
        if self.map.len() >= MAX_STREAMS_KEPT {
            self.map.clear();
        }
        self.map
            .entry(set.text.as_bytes().into())
            .or_insert_with(|| Arc::clone(set));
        self.last = Some(Arc::clone(set));
    }

    /// The label set of a stream's text; one this process never saw is parsed (text not
    /// in Loki's form, which no buffer of ours holds, keeps its text and no pairs).
    pub(super) fn get(&mut self, text: &[u8]) -> Arc<LabelSet> {
        if let Some(last) = &self.last {
            if last.text.as_bytes() == text {
                return Arc::clone(last);
            }
        }
        let set = if let Some(set) = self.map.get(text) {
            Arc::clone(set)
        } else {
            let text = String::from_utf8_lossy(text);
            let set = Arc::new(parse(&text).unwrap_or_else(|| LabelSet {
                text: text.into_owned(),
                pairs: Vec::new(),
            }));
            if self.map.len() >= MAX_STREAMS_KEPT {
                self.map.clear();
            }
            self.map
                .insert(set.text.as_bytes().into(), Arc::clone(&set));
            set
        };
        self.last = Some(Arc::clone(&set));
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::new(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_written_set_reads_back() {
        let s = set(&[("app", "demo"), ("level", "warn")]);
        assert_eq!(parse(&s.text).unwrap().pairs, s.pairs);
    }

    #[test]
    fn escapes_read_back() {
        let s = set(&[("a", "q\"b\\n\n\t\u{1}\u{85}\u{2028}\u{fffd}é")]);
        assert_eq!(parse(&s.text).unwrap().pairs, s.pairs);
    }

    #[test]
    fn the_empty_set_reads_back() {
        assert_eq!(parse("{}").unwrap().pairs, vec![]);
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "{",
            "app=\"x\"",
            "{app=\"x\"",
            "{app=x}",
            "{9a=\"x\"}",
            "{a=\"x\",b=\"y\"}",
            "{a=\"x\", }",
            "{a=\"\\q\"}",
            "{a=\"\\x8f\"}",
            "{a=\"x\"b}",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_label_set_reads_back(
            pairs in proptest::collection::vec(("[a-z_][a-z0-9_]{0,8}", any::<String>()), 0..5)
        ) {
            let mut pairs = pairs;
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs.dedup_by(|a, b| a.0 == b.0);
            let s = LabelSet::new(pairs);
            let read = parse(&s.text).expect("parses");
            prop_assert_eq!(read.pairs, s.pairs);
            prop_assert_eq!(read.text, s.text);
        }
    }
}
