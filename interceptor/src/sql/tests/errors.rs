//! Parse errors, empty queries, fail-closed cases and the audit summary / serialization.

use super::*;

#[test]
fn parse_errors_carry_the_parsers_message() {
    let err = classify("SELEC 1").unwrap_err();
    assert!(
        matches!(&err, SqlError::Parse(m) if m == "syntax error at or near \"SELEC\""),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "SQL does not parse: syntax error at or near \"SELEC\""
    );
    // One bad statement fails the whole string.
    assert!(matches!(
        classify("SELECT 1; DROP TABLE"),
        Err(SqlError::Parse(_))
    ));
    assert!(matches!(
        classify("SELECT 'unterminated"),
        Err(SqlError::Parse(_))
    ));
    assert!(matches!(
        classify("SELECT 1\0; DROP TABLE x"),
        Err(SqlError::Parse(_))
    ));
}

#[test]
fn empty_queries() {
    for sql in ["", "   ", ";", " ; ;", "-- only a comment", "/* c */"] {
        assert!(matches!(classify(sql), Err(SqlError::Empty)), "{sql:?}");
    }
    assert_eq!(SqlError::Empty.to_string(), "empty query");
}

#[test]
fn unmapped_node_kinds_fail_closed() {
    let node = pg_query::NodeEnum::Integer(pg_query::protobuf::Integer { ival: 1 });
    let mut facts = walk::Facts::default();
    let err = stmt::classify_stmt(&node, &mut facts, true).unwrap_err();
    assert!(
        matches!(&err, SqlError::Unknown { kind, .. } if kind == "Integer"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "cannot classify Integer: statement type not mapped; denied (fail closed)"
    );
}

#[test]
fn too_deep_fails_closed() {
    let deep = format!("SELECT a{}", " || a".repeat(200));
    let err = classify(&deep).unwrap_err();
    assert!(matches!(err, SqlError::Unknown { .. }), "{err}");
    assert!(err.to_string().ends_with("denied (fail closed)"), "{err}");
    // Ordinary depth is fine.
    let ok = format!("SELECT a{}", " || a".repeat(40));
    assert_eq!(c(&ok).operations(), ops(&[Read]));
}

#[test]
fn summary_for_audit_logs() {
    assert_eq!(
        c("SELECT * FROM users").summary(),
        "SelectStmt read [users]"
    );
    assert_eq!(
        c("BEGIN; UPDATE a SET x = 1 FROM b; SELECT nextval('s')").summary(),
        "TransactionStmt transaction; UpdateStmt read,write [b] -> [a]; SelectStmt read,write calls [nextval]"
    );
    assert_eq!(
        c("EXECUTE p(1)").summary(),
        "ExecuteStmt session prepared=p"
    );
}

#[test]
fn serializes_for_audit() {
    let v = serde_json::to_value(c("DELETE FROM t")).unwrap();
    assert_eq!(v["statements"][0]["kind"], "DeleteStmt");
    assert_eq!(
        v["statements"][0]["operations"],
        serde_json::json!(["write"])
    );
    assert!(v["statements"][0].get("prepared_name").is_none());
    let op: Operation = serde_json::from_str("\"privileged\"").unwrap();
    assert_eq!(op, Privileged);
}
