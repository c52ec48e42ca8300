//! Formation expressions (`web=3 worker+1 clock-1`, `web=3,worker=1`,
//! `web=2:standard-2x`) and the formation they change.
//!
//! A formation change is all-or-nothing: [`Formation::apply`] works on a copy and
//! only commits when every change is valid, so a typo in the third change of
//! `crew scale` never leaves the first two applied.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::is_name;
use crate::procfile::Procfile;

/// The name that addresses every process type at once, as in foreman's
/// `-m all=1,worker=0`. If a Procfile really defines a type called `all`, the
/// type wins: an explicit definition beats a convention.
const ALL: &str = "all";

/// How a change moves one type's count: to an absolute value, or up or down from
/// whatever it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Set(u32),
    Add(u32),
    Sub(u32),
}

impl Quantity {
    /// The count after applying this quantity to `current`, or `None` when it
    /// would go below zero or past `u32::MAX`.
    pub fn apply(self, current: u32) -> Option<u32> {
        match self {
            Quantity::Set(n) => Some(n),
            Quantity::Add(n) => current.checked_add(n),
            Quantity::Sub(n) => current.checked_sub(n),
        }
    }
}

impl FromStr for Quantity {
    type Err = FormationError;

    /// `"3"`, `"+1"` or `"-1"`. No whitespace and no other signs: the same text
    /// arrives from the command line and from the HTTP API, and both should be
    /// held to one spelling.
    fn from_str(s: &str) -> Result<Quantity, FormationError> {
        let (make, digits): (fn(u32) -> Quantity, &str) = match s.as_bytes().first() {
            Some(b'+') => (Quantity::Add, &s[1..]),
            Some(b'-') => (Quantity::Sub, &s[1..]),
            _ => (Quantity::Set, s),
        };
        parse_count(digits)
            .map(make)
            .map_err(|reason| FormationError::Malformed {
                expr: s.to_owned(),
                reason,
            })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::Set(n) => write!(f, "{n}"),
            Quantity::Add(n) => write!(f, "+{n}"),
            Quantity::Sub(n) => write!(f, "-{n}"),
        }
    }
}

/// Serialised as its string form (`"3"`, `"+1"`, `"-1"`), so relative changes
/// survive a round trip through JSON.
impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Accepts the string form and, because Heroku's Platform API sends
/// `"quantity": 2`, a plain non-negative integer meaning `Set`.
impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Quantity, D::Error> {
        struct QuantityVisitor;

        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or a string like \"3\", \"+1\" or \"-1\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                u32::try_from(v)
                    .map(Quantity::Set)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                u32::try_from(v)
                    .map(Quantity::Set)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(QuantityVisitor)
    }
}

/// One `TYPE=N`, `TYPE+N` or `TYPE-N`, with an optional `:SIZE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationChange {
    /// Named `type` on the wire, as in Heroku's formation API.
    #[serde(rename = "type")]
    pub process_type: String,
    /// Absent on the wire when only the size changes (`heroku ps:type
    /// web=standard-2x`): the quantity stays.
    #[serde(default = "unchanged")]
    pub quantity: Quantity,
    /// A dyno size such as `standard-2x`. Carried for the server; [`Formation`]
    /// itself only tracks counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// The quantity of a change that gives none: what there is.
fn unchanged() -> Quantity {
    Quantity::Add(0)
}

impl fmt::Display for FormationChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.quantity {
            Quantity::Set(_) => "=",
            // Add and Sub already print their sign.
            Quantity::Add(_) | Quantity::Sub(_) => "",
        };
        write!(f, "{}{op}{}", self.process_type, self.quantity)?;
        if let Some(size) = &self.size {
            write!(f, ":{size}")?;
        }
        Ok(())
    }
}

impl FromStr for FormationChange {
    type Err = FormationError;

    /// Parses exactly one change; use [`parse_changes`] for lists.
    fn from_str(s: &str) -> Result<FormationChange, FormationError> {
        parse_one(s)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FormationError {
    #[error("invalid formation change `{expr}`: {reason}")]
    Malformed { expr: String, reason: String },
    #[error("unknown process type `{name}` (known: {})", known_list(.known))]
    UnknownType { name: String, known: Vec<String> },
    #[error("cannot scale `{process_type}` by {quantity}: it has only {current}")]
    Negative {
        process_type: String,
        current: u32,
        quantity: Quantity,
    },
    #[error(
        "cannot scale `{process_type}` by {quantity}: it has {current}, and the result is too large"
    )]
    Overflow {
        process_type: String,
        current: u32,
        quantity: Quantity,
    },
    #[error("`all` takes an absolute quantity (`all=N`), not `all{quantity}`")]
    AllRelative { quantity: Quantity },
    #[error("process type `{process_type}` is given twice (`{first}` and `{second}`)")]
    Duplicate {
        process_type: String,
        first: String,
        second: String,
    },
    #[error("no formation changes given (expected e.g. `web=2 worker+1`)")]
    Empty,
    #[error("cannot run {quantity} `{process_type}` processes: at most {MAX_QUANTITY} of one type")]
    TooMany { process_type: String, quantity: u32 },
}

/// The most processes of one type a formation may ask for. Beyond a few
/// hundred a machine runs out of something else first, and a typo such as
/// `web=10000000` must not fork-bomb it.
pub const MAX_QUANTITY: u32 = 1000;

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    }
}

/// Parses formation expressions. Each argument may hold several changes separated
/// by commas and/or whitespace, so `["web=3", "worker+1"]`, `["web=3,worker=1"]`
/// and `["web=2, worker=1"]` all work. An empty piece (`web=2,,worker=1`), a
/// malformed change, or a type named twice is an error: each of those is more
/// likely a typo than an intent.
pub fn parse_changes<'a>(
    args: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<FormationChange>, FormationError> {
    let mut changes: Vec<FormationChange> = Vec::new();
    for arg in args {
        for piece in arg.split(',') {
            let piece = piece.trim();
            if piece.is_empty() {
                let reason = if arg.contains(',') {
                    "empty change between commas"
                } else {
                    "empty change"
                };
                return Err(FormationError::Malformed {
                    expr: arg.to_owned(),
                    reason: reason.to_owned(),
                });
            }
            for word in piece.split_whitespace() {
                let change = parse_one(word)?;
                if let Some(first) = changes
                    .iter()
                    .find(|c| c.process_type == change.process_type)
                {
                    return Err(FormationError::Duplicate {
                        process_type: change.process_type.clone(),
                        first: first.to_string(),
                        second: word.to_owned(),
                    });
                }
                changes.push(change);
            }
        }
    }
    if changes.is_empty() {
        return Err(FormationError::Empty);
    }
    Ok(changes)
}

/// Parses `TYPE(=N|+N|-N)(:SIZE)?`. Type names may themselves contain `-` and
/// digits, so the operator is the last `=`, `+` or `-` that is followed only by
/// digits: `clock-1` is `clock` minus one, and `web-2=3` sets `web-2` to three.
fn parse_one(expr: &str) -> Result<FormationChange, FormationError> {
    let malformed = |reason: String| FormationError::Malformed {
        expr: expr.to_owned(),
        reason,
    };
    let (body, size) = match expr.split_once(':') {
        Some((body, size)) => {
            if !is_name(size) {
                return Err(malformed(format!(
                    "`{size}` is not a valid size (use letters, digits, `_` and `-`)"
                )));
            }
            (body, Some(size.to_owned()))
        }
        None => (expr, None),
    };
    let head = body.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &body[head.len()..];
    let (process_type, op) = match head.char_indices().next_back() {
        Some((i, op @ ('=' | '+' | '-'))) => (&head[..i], op),
        _ => return Err(malformed("expected TYPE=N, TYPE+N or TYPE-N".to_owned())),
    };
    let make = match op {
        '=' => Quantity::Set,
        '+' => Quantity::Add,
        _ => Quantity::Sub,
    };
    if digits.is_empty() {
        return Err(malformed(format!("missing number after `{op}`")));
    }
    if process_type.is_empty() {
        return Err(malformed("missing process type".to_owned()));
    }
    // `web=-1` reads as `web=` minus one; what was meant is a negative count.
    if op == '-'
        && let Some(real_type) = process_type.strip_suffix(['=', '+'])
        && is_name(real_type)
    {
        return Err(malformed(format!(
            "`-{digits}` is not a count: quantities are 0 or more (use `{real_type}-{digits}` to remove some)"
        )));
    }
    if !is_name(process_type) {
        return Err(malformed(format!(
            "`{process_type}` is not a valid process type (use letters, digits, `_` and `-`)"
        )));
    }
    let n = parse_count(digits).map_err(malformed)?;
    Ok(FormationChange {
        process_type: process_type.to_owned(),
        quantity: make(n),
        size,
    })
}

/// Parses a run of ASCII digits. `u32::from_str` alone would also take a leading
/// `+`, which would let `web=+3` through as `Set(3)`.
fn parse_count(digits: &str) -> Result<u32, String> {
    if digits.is_empty() {
        return Err("missing number".to_owned());
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{digits}` is not a number"));
    }
    digits
        .parse()
        .map_err(|_| format!("`{digits}` is too large (at most {})", u32::MAX))
}

/// The desired quantity per process type, in Procfile order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formation {
    entries: Vec<(String, u32)>,
}

impl Formation {
    /// Every type at `quantity`. A name repeated in `types` is kept once, at its
    /// first position, because order here is the port order.
    pub fn new(types: impl IntoIterator<Item = String>, quantity: u32) -> Formation {
        let mut entries: Vec<(String, u32)> = Vec::new();
        for name in types {
            if !entries.iter().any(|(n, _)| *n == name) {
                entries.push((name, quantity));
            }
        }
        Formation { entries }
    }

    pub fn from_procfile(procfile: &Procfile, quantity: u32) -> Formation {
        Formation::new(procfile.types().iter().map(|t| t.name.clone()), quantity)
    }

    pub fn get(&self, process_type: &str) -> Option<u32> {
        self.entries
            .iter()
            .find(|(n, _)| n == process_type)
            .map(|(_, q)| *q)
    }

    /// `(type, quantity)` pairs in Procfile order, including types at zero.
    pub fn entries(&self) -> &[(String, u32)] {
        &self.entries
    }

    /// Applies `changes` left to right, all or nothing: on error the formation is
    /// unchanged. `all=N` sets every type (unless a type is really named `all`);
    /// `all+N`/`all-N` is refused because "one more of everything" is rarely
    /// meant and easy to type by accident. Sizes are ignored here.
    pub fn apply(&mut self, changes: &[FormationChange]) -> Result<(), FormationError> {
        let mut next = self.entries.clone();
        for change in changes {
            let name = change.process_type.as_str();
            let is_all = name == ALL && !next.iter().any(|(n, _)| n == ALL);
            if is_all {
                let Quantity::Set(n) = change.quantity else {
                    return Err(FormationError::AllRelative {
                        quantity: change.quantity,
                    });
                };
                for (_, q) in &mut next {
                    *q = n;
                }
                continue;
            }
            let Some((_, current)) = next.iter_mut().find(|(n, _)| n == name) else {
                return Err(FormationError::UnknownType {
                    name: name.to_owned(),
                    known: self.entries.iter().map(|(n, _)| n.clone()).collect(),
                });
            };
            *current = change.quantity.apply(*current).ok_or_else(|| {
                let (process_type, current, quantity) =
                    (name.to_owned(), *current, change.quantity);
                match change.quantity {
                    Quantity::Sub(_) => FormationError::Negative {
                        process_type,
                        current,
                        quantity,
                    },
                    _ => FormationError::Overflow {
                        process_type,
                        current,
                        quantity,
                    },
                }
            })?;
        }
        if let Some((name, quantity)) = next.iter().find(|(_, q)| *q > MAX_QUANTITY) {
            return Err(FormationError::TooMany {
                process_type: name.clone(),
                quantity: *quantity,
            });
        }
        self.entries = next;
        Ok(())
    }
}

impl fmt::Display for Formation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, quantity)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={quantity}")?;
        }
        Ok(())
    }
}

/// Serialised as a JSON object in Procfile order: `{"web": 2, "worker": 1}`.
impl Serialize for Formation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (name, quantity) in &self.entries {
            map.serialize_entry(name, quantity)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests;
