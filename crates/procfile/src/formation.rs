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
mod tests {
    use super::*;
    use Quantity::{Add, Set, Sub};

    fn ch(process_type: &str, quantity: Quantity, size: Option<&str>) -> FormationChange {
        FormationChange {
            process_type: process_type.to_owned(),
            quantity,
            size: size.map(str::to_owned),
        }
    }

    #[test]
    fn quantity_table() {
        let cases: &[(&str, Option<Quantity>)] = &[
            ("0", Some(Set(0))),
            ("3", Some(Set(3))),
            ("007", Some(Set(7))),
            ("+1", Some(Add(1))),
            ("-1", Some(Sub(1))),
            ("+0", Some(Add(0))),
            ("4294967295", Some(Set(u32::MAX))),
            ("4294967296", None),
            ("", None),
            ("+", None),
            ("-", None),
            ("++1", None),
            ("+-1", None),
            ("=1", None),
            (" 1", None),
            ("1 ", None),
            ("1.5", None),
            ("x", None),
            ("١", None), // non-ASCII digit
        ];
        for (text, want) in cases {
            let got = text.parse::<Quantity>().ok();
            assert_eq!(got, *want, "{text:?}");
            // Display is canonical, so only the zero-padded spelling differs.
            if let Some(q) = want
                && *text != "007"
            {
                assert_eq!(q.to_string(), *text, "display of {text:?}");
            }
        }
    }

    #[test]
    fn quantity_apply_table() {
        let cases: &[(Quantity, u32, Option<u32>)] = &[
            (Set(3), 1, Some(3)),
            (Set(0), 5, Some(0)),
            (Add(2), 1, Some(3)),
            (Sub(1), 1, Some(0)),
            (Sub(2), 1, None),
            (Sub(1), 0, None),
            (Add(1), u32::MAX, None),
            (Add(0), u32::MAX, Some(u32::MAX)),
        ];
        for (q, current, want) in cases {
            assert_eq!(q.apply(*current), *want, "{q:?} on {current}");
        }
    }

    #[test]
    fn parse_table() {
        let cases: &[(&[&str], &[FormationChange])] = &[
            (
                &["web=3", "worker+1", "clock-1"],
                &[
                    ch("web", Set(3), None),
                    ch("worker", Add(1), None),
                    ch("clock", Sub(1), None),
                ],
            ),
            (
                &["web=3,worker=1"],
                &[ch("web", Set(3), None), ch("worker", Set(1), None)],
            ),
            (
                &["web=2, worker=1"],
                &[ch("web", Set(2), None), ch("worker", Set(1), None)],
            ),
            (
                &["web=3 worker+1"],
                &[ch("web", Set(3), None), ch("worker", Add(1), None)],
            ),
            (
                &["web=2,worker=0,clock=1"],
                &[
                    ch("web", Set(2), None),
                    ch("worker", Set(0), None),
                    ch("clock", Set(1), None),
                ],
            ),
            (
                &["web=2:standard-2x"],
                &[ch("web", Set(2), Some("standard-2x"))],
            ),
            (
                &["web+1:Performance_L"],
                &[ch("web", Add(1), Some("Performance_L"))],
            ),
            // Type names containing `-` and digits.
            (&["clock-1"], &[ch("clock", Sub(1), None)]),
            (&["web-2=3"], &[ch("web-2", Set(3), None)]),
            (&["web-2-1"], &[ch("web-2", Sub(1), None)]),
            (&["web-2+10"], &[ch("web-2", Add(10), None)]),
            (&["a1=1"], &[ch("a1", Set(1), None)]),
            (&["9=1"], &[ch("9", Set(1), None)]),
            (&["my_worker=0"], &[ch("my_worker", Set(0), None)]),
            (&["x-1-1:s-1"], &[ch("x-1", Sub(1), Some("s-1"))]),
            (&["web=007"], &[ch("web", Set(7), None)]),
            (&["web=4294967295"], &[ch("web", Set(u32::MAX), None)]),
            // `all` parses like any type; `Formation::apply` gives it meaning.
            (
                &["all=1,worker=0"],
                &[ch("all", Set(1), None), ch("worker", Set(0), None)],
            ),
            (&["all+1"], &[ch("all", Add(1), None)]),
            // Whitespace around the whole argument is fine.
            (&["  web=1  "], &[ch("web", Set(1), None)]),
        ];
        for (args, want) in cases {
            let got =
                parse_changes(args.iter().copied()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(&got, want, "{args:?}");
        }
    }

    #[test]
    fn parse_error_table() {
        let bad = |expr: &str, reason: &str| FormationError::Malformed {
            expr: expr.to_owned(),
            reason: reason.to_owned(),
        };
        let shape = "expected TYPE=N, TYPE+N or TYPE-N";
        let cases: &[(&[&str], FormationError)] = &[
            (&[], FormationError::Empty),
            (&[""], bad("", "empty change")),
            (&["  "], bad("  ", "empty change")),
            (
                &["web=2,,worker=1"],
                bad("web=2,,worker=1", "empty change between commas"),
            ),
            (&["web=2,"], bad("web=2,", "empty change between commas")),
            (&[",web=2"], bad(",web=2", "empty change between commas")),
            (&["web"], bad("web", shape)),
            (&["web3"], bad("web3", shape)),
            (&["web=abc"], bad("web=abc", shape)),
            (&["web=3x"], bad("web=3x", shape)),
            (&["web=1.5"], bad("web=1.5", shape)),
            (&["web=", "x=1"], bad("web=", "missing number after `=`")),
            (&["web+"], bad("web+", "missing number after `+`")),
            (&["clock-"], bad("clock-", "missing number after `-`")),
            (&["=3"], bad("=3", "missing process type")),
            (&["+3"], bad("+3", "missing process type")),
            (&["-3"], bad("-3", "missing process type")),
            (
                &["web=-1"],
                bad(
                    "web=-1",
                    "`-1` is not a count: quantities are 0 or more (use `web-1` to remove some)",
                ),
            ),
            (
                &["web+-2"],
                bad(
                    "web+-2",
                    "`-2` is not a count: quantities are 0 or more (use `web-2` to remove some)",
                ),
            ),
            (
                &["web==1"],
                bad(
                    "web==1",
                    "`web=` is not a valid process type (use letters, digits, `_` and `-`)",
                ),
            ),
            (
                &["wéb=1"],
                bad(
                    "wéb=1",
                    "`wéb` is not a valid process type (use letters, digits, `_` and `-`)",
                ),
            ),
            (
                &["web=99999999999"],
                bad(
                    "web=99999999999",
                    "`99999999999` is too large (at most 4294967295)",
                ),
            ),
            (
                &["web=2:"],
                bad(
                    "web=2:",
                    "`` is not a valid size (use letters, digits, `_` and `-`)",
                ),
            ),
            (
                &["web=2:a:b"],
                bad(
                    "web=2:a:b",
                    "`a:b` is not a valid size (use letters, digits, `_` and `-`)",
                ),
            ),
            (
                &["web=2:big!"],
                bad(
                    "web=2:big!",
                    "`big!` is not a valid size (use letters, digits, `_` and `-`)",
                ),
            ),
            (&[":big"], bad(":big", shape)),
            // The first bad change is reported even when later ones are fine.
            (&["web=1", "nope", "worker=1"], bad("nope", shape)),
            (
                &["web=1,web+1"],
                FormationError::Duplicate {
                    process_type: "web".to_owned(),
                    first: "web=1".to_owned(),
                    second: "web+1".to_owned(),
                },
            ),
            (
                &["web=1", "worker=2", "web=3:big"],
                FormationError::Duplicate {
                    process_type: "web".to_owned(),
                    first: "web=1".to_owned(),
                    second: "web=3:big".to_owned(),
                },
            ),
            (
                &["all=1,all=0"],
                FormationError::Duplicate {
                    process_type: "all".to_owned(),
                    first: "all=1".to_owned(),
                    second: "all=0".to_owned(),
                },
            ),
        ];
        for (args, want) in cases {
            assert_eq!(
                parse_changes(args.iter().copied()).as_ref(),
                Err(want),
                "{args:?}"
            );
        }
    }

    #[test]
    fn change_display_round_trips() {
        for text in [
            "web=3",
            "worker+1",
            "clock-1",
            "web=2:standard-2x",
            "web-2-1",
        ] {
            let change: FormationChange = text.parse().unwrap();
            assert_eq!(change.to_string(), text);
        }
    }

    fn formation() -> Formation {
        Formation::new(["web", "worker", "clock"].map(String::from), 1)
    }

    #[test]
    fn apply_table() {
        // (changes, expected formation after applying them to web=1 worker=1 clock=1)
        let cases: &[(&str, &str)] = &[
            ("web=3", "web=3 worker=1 clock=1"),
            ("web=3 worker+1 clock-1", "web=3 worker=2 clock=0"),
            ("web+2", "web=3 worker=1 clock=1"),
            ("web-1", "web=0 worker=1 clock=1"),
            ("web=2:standard-2x", "web=2 worker=1 clock=1"),
            ("all=0", "web=0 worker=0 clock=0"),
            ("all=1,worker=0", "web=1 worker=0 clock=1"),
            ("worker=0,all=2", "web=2 worker=2 clock=2"),
            ("all=3 web-1", "web=2 worker=3 clock=3"),
        ];
        for (expr, want) in cases {
            let mut f = formation();
            let changes = parse_changes([*expr]).unwrap();
            f.apply(&changes).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(f.to_string(), *want, "{expr}");
        }
    }

    #[test]
    fn a_huge_quantity_is_refused_and_changes_nothing() {
        let mut f = Formation::new(["web".to_string()], 1);
        let changes = parse_changes(["web=1001"]).expect("parses");
        assert!(matches!(
            f.apply(&changes),
            Err(FormationError::TooMany { quantity: 1001, .. })
        ));
        assert_eq!(f.get("web"), Some(1));
        let changes = parse_changes(["all=1000"]).expect("parses");
        assert_eq!(f.apply(&changes), Ok(()));
    }

    #[test]
    fn apply_error_table() {
        let known = vec!["web".to_owned(), "worker".to_owned(), "clock".to_owned()];
        let cases: &[(&[FormationChange], FormationError)] = &[
            (
                &[ch("web", Set(5), None), ch("nope", Set(1), None)],
                FormationError::UnknownType {
                    name: "nope".to_owned(),
                    known: known.clone(),
                },
            ),
            (
                &[ch("web", Set(5), None), ch("worker", Sub(2), None)],
                FormationError::Negative {
                    process_type: "worker".to_owned(),
                    current: 1,
                    quantity: Sub(2),
                },
            ),
            (
                // Changes apply left to right, so the second one sees 0.
                &[ch("web", Sub(1), None), ch("web", Sub(1), None)],
                FormationError::Negative {
                    process_type: "web".to_owned(),
                    current: 0,
                    quantity: Sub(1),
                },
            ),
            (
                &[ch("web", Add(u32::MAX), None)],
                FormationError::Overflow {
                    process_type: "web".to_owned(),
                    current: 1,
                    quantity: Add(u32::MAX),
                },
            ),
            (
                &[ch("web", Set(5), None), ch("all", Add(1), None)],
                FormationError::AllRelative { quantity: Add(1) },
            ),
            (
                &[ch("all", Sub(1), None)],
                FormationError::AllRelative { quantity: Sub(1) },
            ),
        ];
        for (changes, want) in cases {
            let mut f = formation();
            assert_eq!(f.apply(changes).as_ref(), Err(want), "{changes:?}");
            // All or nothing: the earlier valid changes were not kept.
            assert_eq!(f, formation(), "{changes:?} must not change the formation");
        }
    }

    #[test]
    fn a_type_named_all_is_just_a_type() {
        let mut f = Formation::new(["web", "all"].map(String::from), 1);
        f.apply(&parse_changes(["all=3"]).unwrap()).unwrap();
        assert_eq!(f.to_string(), "web=1 all=3");
        f.apply(&parse_changes(["all+1"]).unwrap()).unwrap();
        assert_eq!(f.get("all"), Some(4));
    }

    #[test]
    fn error_messages() {
        let cases: &[(FormationError, &str)] = &[
            (
                FormationError::UnknownType {
                    name: "x".to_owned(),
                    known: vec!["web".to_owned(), "worker".to_owned()],
                },
                "unknown process type `x` (known: web, worker)",
            ),
            (
                FormationError::UnknownType {
                    name: "x".to_owned(),
                    known: vec![],
                },
                "unknown process type `x` (known: none)",
            ),
            (
                FormationError::Negative {
                    process_type: "web".to_owned(),
                    current: 1,
                    quantity: Sub(2),
                },
                "cannot scale `web` by -2: it has only 1",
            ),
            (
                FormationError::AllRelative { quantity: Add(1) },
                "`all` takes an absolute quantity (`all=N`), not `all+1`",
            ),
            (
                FormationError::Duplicate {
                    process_type: "web".to_owned(),
                    first: "web=1".to_owned(),
                    second: "web+1".to_owned(),
                },
                "process type `web` is given twice (`web=1` and `web+1`)",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), *want);
        }
        assert_eq!(
            parse_changes(["web=abc"]).unwrap_err().to_string(),
            "invalid formation change `web=abc`: expected TYPE=N, TYPE+N or TYPE-N"
        );
    }

    #[test]
    fn construction_and_lookup() {
        let pf = Procfile::parse("web: a\nworker: b\nclock: c\n").unwrap();
        let f = Formation::from_procfile(&pf, 1);
        assert_eq!(f.to_string(), "web=1 worker=1 clock=1");
        assert_eq!(f.get("worker"), Some(1));
        assert_eq!(f.get("nope"), None);
        assert_eq!(
            f.entries(),
            &[
                ("web".to_owned(), 1),
                ("worker".to_owned(), 1),
                ("clock".to_owned(), 1)
            ]
        );
        let dup = Formation::new(["web", "worker", "web"].map(String::from), 0);
        assert_eq!(dup.to_string(), "web=0 worker=0");
        assert_eq!(Formation::new(Vec::<String>::new(), 1).to_string(), "");
    }

    #[test]
    fn serde_shapes() {
        let change: FormationChange =
            serde_json::from_str(r#"{"type":"web","quantity":2,"size":"standard-1X"}"#).unwrap();
        assert_eq!(change, ch("web", Set(2), Some("standard-1X")));
        let change: FormationChange =
            serde_json::from_str(r#"{"type":"web","quantity":"+1"}"#).unwrap();
        assert_eq!(change, ch("web", Add(1), None));
        assert_eq!(
            serde_json::to_string(&ch("web", Sub(1), None)).unwrap(),
            r#"{"type":"web","quantity":"-1"}"#
        );
        for bad in [
            r#"{"type":"web","quantity":-1}"#,
            r#"{"type":"web","quantity":4294967296}"#,
            r#"{"type":"web","quantity":"x"}"#,
            r#"{"type":"web","quantity":1.5}"#,
        ] {
            assert!(
                serde_json::from_str::<FormationChange>(bad).is_err(),
                "{bad}"
            );
        }
        let mut f = formation();
        f.apply(&parse_changes(["web=2,clock=0"]).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"web":2,"worker":1,"clock":0}"#
        );
    }
}
