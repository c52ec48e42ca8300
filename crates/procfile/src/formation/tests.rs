//! Formation expressions as `crew scale` and `heroku ps:scale` users type
//! them, good and bad, and the all-or-nothing rule.

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
        let got = parse_changes(args.iter().copied()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
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
