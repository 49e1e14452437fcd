//! The JSON push format, decoded with serde visitors that count streams, entries and
//! metadata pairs as they are met (see [`Budget`]) and never build a `Value` for what only
//! needs its kind, so a body cannot turn into far more memory than its own size.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::budget::{Budget, Item};
use super::{bad, labels, parse_int, DecodeError, Push, RawEntry, RawStream, GO_ZERO_TIME_SECS};

/// The JSON push format. A first pass checks the syntax of the whole document, as Go's
/// `json.Unmarshal` does, without allocating; `serde_json`'s recursion limit turns deeply
/// nested input into an error.
pub(super) fn decode_json(bytes: &[u8], budget: &Budget) -> Result<Push, DecodeError> {
    let wrap = |e: serde_json::Error| bad(format!("loghttp.PushRequest: {e}"));
    serde_json::from_slice::<IgnoredAny>(bytes).map_err(wrap)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let streams = PushSeed(budget)
        .deserialize(&mut de)
        .map_err(|e| budget.failed().unwrap_or_else(|| wrap(e)))?;
    Ok(Push {
        streams: streams.unwrap_or_default(),
    })
}

/// Keeps `e` in the budget and hands serde an error that stops the parse.
fn fail<E: de::Error>(budget: &Budget, e: DecodeError) -> E {
    E::custom(match budget.fail(e) {
        DecodeError::BadRequest(m) | DecodeError::TooLarge(m) => m,
    })
}

/// `{"streams": [...]}`: the streams, `None` when missing or `null`.
struct PushSeed<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for PushSeed<'_> {
    type Value = Option<Vec<RawStream>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PushSeed<'_> {
    type Value = Option<Vec<RawStream>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct JsonPush")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut streams = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "streams" {
                map.next_value::<IgnoredAny>()?;
            } else if streams.is_some() {
                return Err(de::Error::duplicate_field("streams"));
            } else {
                streams = Some(map.next_value_seed(Nullable(SeqOf(StreamSeed(self.0))))?);
            }
        }
        Ok(streams.flatten())
    }
}

/// `null` as `None`, anything else by the inner seed.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// A JSON array whose elements the seed decodes; elements decoded to `None` are skipped.
struct SeqOf<S>(S);

impl<'de, T, S: DeserializeSeed<'de, Value = Option<T>> + Copy> DeserializeSeed<'de> for SeqOf<S> {
    type Value = Vec<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T, S: DeserializeSeed<'de, Value = Option<T>> + Copy> Visitor<'de> for SeqOf<S> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element_seed(self.0)? {
            out.extend(item);
        }
        Ok(out)
    }
}

/// `{"stream": {...}, "values": [...]}`, counted as a stream before anything in it is read.
#[derive(Clone, Copy)]
struct StreamSeed<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for StreamSeed<'_> {
    type Value = Option<RawStream>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for StreamSeed<'_> {
    type Value = Option<RawStream>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct JsonStream")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        self.0
            .take(Item::Stream)
            .map_err(|e| fail::<A::Error>(self.0, e))?;
        let (mut stream, mut values) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "stream" if stream.is_some() => return Err(de::Error::duplicate_field("stream")),
                "stream" => stream = Some(map.next_value::<Option<Map<String, Value>>>()?),
                "values" if values.is_some() => return Err(de::Error::duplicate_field("values")),
                "values" => values = Some(map.next_value_seed(Nullable(SeqOf(EntrySeed(self.0))))?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(RawStream {
            labels: json_labels(stream.flatten().unwrap_or_default()),
            entries: values.flatten().unwrap_or_default(),
        }))
    }
}

/// `["<ns>", "<line>", {metadata}]`, counted as an entry before its elements are read;
/// `null` is skipped, as Loki's `Stream.UnmarshalJSON` does.
#[derive(Clone, Copy)]
struct EntrySeed<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = Option<RawEntry>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl EntrySeed<'_> {
    fn not_an_array<E: de::Error>(self, kind: &str) -> E {
        fail(
            self.0,
            bad(format!(
                "error reading entry: expected an array, found {kind}"
            )),
        )
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = Option<RawEntry>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.not_an_array("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.not_an_array("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.not_an_array("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.not_an_array("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.not_an_array("a string"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.not_an_array("an object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        self.0
            .take(Item::Entry)
            .map_err(|e| fail::<A::Error>(self.0, e))?;
        let mut values = Vec::with_capacity(3);
        while let Some(v) = seq.next_element_seed(Shallow {
            budget: (values.len() == 2).then_some(self.0),
        })? {
            if values.len() == 3 {
                let e = bad("error reading entry: array must contains 2 values");
                return Err(fail(self.0, e));
            }
            values.push(v);
        }
        json_entry(values).map(Some).map_err(|e| fail(self.0, e))
    }
}

/// A value as far as an entry needs it: scalars as they are, arrays and objects empty (only
/// their kind is reported), except the metadata object when `budget` is set: its pairs are
/// counted and kept (their values shallow too).
#[derive(Clone, Copy)]
struct Shallow<'b> {
    budget: Option<&'b Budget>,
}

impl<'de> DeserializeSeed<'de> for Shallow<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shallow<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let Some(budget) = self.budget else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Value::Object(out));
        };
        while let Some(key) = map.next_key::<String>()? {
            budget
                .take(Item::MetadataPair)
                .map_err(|e| fail::<A::Error>(budget, e))?;
            let value = map.next_value_seed(Shallow { budget: None })?;
            // A repeated name keeps its last value, as `serde_json::Map` did.
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Loki turns the JSON label object into label-set text and parses that, so invalid names
/// fail in the label parser exactly as a protobuf label string would.
fn json_labels(map: serde_json::Map<String, Value>) -> String {
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in map {
        // Loki's `LabelSet.UnmarshalJSON` runs `jsonparser.ParseString` on the raw value of
        // any type, so a number, boolean, null, array or object is taken as its JSON text.
        // (Here the text is re-serialised: whitespace and float spellings such as `1e3`
        // may differ from the raw bytes Loki would keep.)
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        pairs.push((name, text));
    }
    pairs.sort();
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", labels::quote(v)))
        .collect();
    format!("{{{}}}", body.join(", "))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn json_entry(values: Vec<Value>) -> Result<RawEntry, DecodeError> {
    if values.len() > 3 {
        return Err(bad("error reading entry: array must contains 2 values"));
    }
    let mut it = values.into_iter();
    let ts_ns = match it.next() {
        None => i128::from(GO_ZERO_TIME_SECS) * 1_000_000_000,
        Some(Value::String(s)) => i128::from(parse_int(&s)?),
        Some(other) => {
            return Err(bad(format!(
                "error reading entry timestamp: expected a string, found {}",
                json_kind(&other)
            )))
        }
    };
    let line = match it.next() {
        None => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(bad(format!(
                "error reading entry line: expected a string, found {}",
                json_kind(&other)
            )))
        }
    };
    let metadata = match it.next() {
        None => Vec::new(),
        Some(Value::Object(map)) => json_metadata(map)?,
        Some(other) => {
            return Err(bad(format!(
                "error reading structured metadata: expected an object, found {}",
                json_kind(&other)
            )))
        }
    };
    Ok(RawEntry {
        ts_ns,
        line,
        metadata,
    })
}

fn json_metadata(
    map: serde_json::Map<String, Value>,
) -> Result<Vec<(String, String)>, DecodeError> {
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(bad(format!(
                "error reading structured metadata {}: expected a string, found {}",
                labels::quote(&k),
                json_kind(&other)
            ))),
        })
        .collect()
}
