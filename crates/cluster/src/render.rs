//! Canonical text for manifests: JSON with sorted keys, and the same values as
//! YAML.
//!
//! The YAML emitter is small on purpose. It writes block mappings and
//! sequences, and every string as a double-quoted scalar, whose escapes are a
//! superset of JSON's. So no string can turn into a number, a boolean, `null`
//! or a comment (`"5000"`, `"yes"`, `"on"`, `"#x"` all stay strings), which is
//! the classic way hand-written YAML goes wrong. Keys are written plain only
//! when they cannot be read as anything but a string.

use serde::Serialize;
use serde_json::Value;

use crate::ClusterError;

/// `value` as a JSON value with the keys of every object sorted, whatever
/// serde_json's `preserve_order` feature says: the same input always gives the
/// same text.
pub fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> =
                map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Any serializable object as a canonical value.
pub fn to_value(object: &impl Serialize, what: &str) -> Result<Value, ClusterError> {
    serde_json::to_value(object)
        .map(canonical)
        .map_err(ClusterError::json(what))
}

/// Pretty JSON with sorted keys and a final newline.
pub fn json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&canonical(value.clone()))
        .expect("a serde_json::Value always serializes");
    text.push('\n');
    text
}

/// One YAML document for `value`, keys sorted.
pub fn yaml(value: &Value) -> String {
    let value = canonical(value.clone());
    let mut out = String::new();
    match &value {
        Value::Object(map) if !map.is_empty() => block(&value, 0, false, &mut out),
        Value::Array(items) if !items.is_empty() => block(&value, 0, false, &mut out),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

/// A YAML stream of one document per value, each opened with `---`, as
/// `kubectl apply -f` takes it.
pub fn yaml_documents(values: &[Value]) -> String {
    let mut out = String::new();
    for value in values {
        out.push_str("---\n");
        out.push_str(&yaml(value));
    }
    out
}

/// Writes a non-empty mapping or sequence, each line indented by `indent`
/// spaces, except the first when `continues` (it follows a `- ` already
/// written).
fn block(value: &Value, indent: usize, continues: bool, out: &mut String) {
    let mut first = true;
    let mut pad = |out: &mut String| {
        if !(first && continues) {
            out.push_str(&" ".repeat(indent));
        }
        first = false;
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                pad(out);
                out.push_str(&key_text(key));
                out.push(':');
                if nested(child) {
                    out.push('\n');
                    block(child, indent + 2, false, out);
                } else {
                    out.push(' ');
                    out.push_str(&inline(child));
                    out.push('\n');
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                pad(out);
                out.push('-');
                match item {
                    Value::Object(_) if nested(item) => {
                        out.push(' ');
                        block(item, indent + 2, true, out);
                    }
                    Value::Array(_) if nested(item) => {
                        out.push('\n');
                        block(item, indent + 2, false, out);
                    }
                    _ => {
                        out.push(' ');
                        out.push_str(&inline(item));
                        out.push('\n');
                    }
                }
            }
        }
        scalar => {
            pad(out);
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

/// Whether a value needs lines of its own: a non-empty mapping or sequence.
fn nested(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

/// A value on one line: a scalar, `{}` or `[]`.
fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        Value::Object(_) => "{}".to_string(),
        Value::Array(_) => "[]".to_string(),
    }
}

/// A key plain when it is a word that YAML 1.1 and 1.2 both read as that same
/// string (`app.kubernetes.io/name`, `heroku.app`), else quoted.
fn key_text(key: &str) -> String {
    let plain_chars = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    let starts_with_letter = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    let special = matches!(
        key.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    );
    if plain_chars && starts_with_letter && !special {
        key.to_string()
    } else {
        quoted(key)
    }
}

/// A double-quoted scalar. Everything outside YAML's printable set is escaped,
/// which is stricter than JSON (DEL and the C1 controls, for instance).
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// YAML 1.2's `c-printable`, less the BOM.
fn printable(c: char) -> bool {
    matches!(c as u32,
        0x20..=0x7E | 0x85 | 0xA0..=0xD7FF | 0xE000..=0xFEFE | 0xFF00..=0xFFFD | 0x10000..=0x10FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_keeps_strings_strings() {
        let value = json!({
            "b": {"port": "5000", "yes": "on", "empty": {}, "none": []},
            "a": ["x", {"k": 1, "l": [true, null]}, ["nested"]],
            "odd key": "tab\there \"quoted\" \u{7f} #not a comment",
        });
        let text = yaml(&value);
        assert_eq!(
            text,
            concat!(
                "a:\n",
                "  - \"x\"\n",
                "  - k: 1\n",
                "    l:\n",
                "      - true\n",
                "      - null\n",
                "  -\n",
                "    - \"nested\"\n",
                "b:\n",
                "  empty: {}\n",
                "  none: []\n",
                "  port: \"5000\"\n",
                "  \"yes\": \"on\"\n",
                "\"odd key\": \"tab\\there \\\"quoted\\\" \\u007F #not a comment\"\n",
            )
        );
    }

    #[test]
    fn canonical_sorts_every_level() {
        let value = canonical(json!({"z": {"b": 1, "a": 2}, "a": [{"d": 1, "c": 2}]}));
        assert_eq!(
            serde_json::to_string(&value).ok(),
            Some(r#"{"a":[{"c":2,"d":1}],"z":{"a":2,"b":1}}"#.to_string())
        );
    }
}
