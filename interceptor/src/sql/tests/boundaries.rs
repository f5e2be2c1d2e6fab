//! Statement boundaries (comments, strings, dollar quoting) and identifier folding.

use super::*;

#[test]
fn multi_statement_is_split_by_the_parser() {
    let cl = c("COMMIT; DROP TABLE x");
    assert_eq!(cl.statements.len(), 2);
    assert_eq!(cl.statements[0].kind, "TransactionStmt");
    assert_eq!(cl.statements[0].operations, ops(&[Transaction]));
    assert_eq!(cl.statements[0].text, "COMMIT");
    assert_eq!(cl.statements[1].kind, "DropStmt");
    assert_eq!(cl.statements[1].operations, ops(&[Ddl]));
    assert_eq!(cl.statements[1].tables_written, set(&["x"]));
    assert_eq!(cl.statements[1].text, "DROP TABLE x");
    assert_eq!(cl.operations(), ops(&[Transaction, Ddl]));
    assert_eq!(cl.tables_written(), set(&["x"]));

    let cl = c("SELECT * FROM a; UPDATE b SET x = 1;;  DELETE FROM c ;");
    let kinds: Vec<&str> = cl.statements.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["SelectStmt", "UpdateStmt", "DeleteStmt"]);
    assert_eq!(cl.operations(), ops(&[Read, Write]));
    assert_eq!(cl.tables_read(), set(&["a"]));
    assert_eq!(cl.tables_written(), set(&["b", "c"]));
    assert_eq!(cl.statements[2].text, "DELETE FROM c");
}

#[test]
fn comments_do_not_hide_or_invent_statements() {
    check("SELECT 1 -- ; DROP TABLE x", &[Read], &[], &[]);
    check("SELECT 1 /* ; DROP TABLE x */", &[Read], &[], &[]);
    check(
        "/* outer /* nested */ ; DROP TABLE x */ SELECT 1",
        &[Read],
        &[],
        &[],
    );
    // A comment does not swallow the next line.
    let cl = c("SELECT 1 -- harmless\n; DROP TABLE x");
    assert_eq!(cl.statements.len(), 2);
    assert_eq!(cl.statements[1].operations, ops(&[Ddl]));
}

#[test]
fn string_tricks_follow_the_real_boundaries() {
    // E'\'' is an escaped quote: the string is `';` and the DELETE is real.
    let cl = c(r"SELECT E'\';' ; DELETE FROM t");
    assert_eq!(cl.statements.len(), 2);
    assert_eq!(cl.statements[1].operations, ops(&[Write]));
    assert_eq!(cl.tables_written(), set(&["t"]));
    // Inside a standard string a backslash is plain, so this is one SELECT.
    check(r"SELECT '\''; DELETE FROM t; --'", &[Read], &[], &[]);
    // Semicolons in strings and quoted identifiers are not boundaries.
    check("SELECT 'a; DROP TABLE x'", &[Read], &[], &[]);
    check(r#"SELECT 1 AS "x; DROP TABLE y""#, &[Read], &[], &[]);
    check("SELECT U&'\\0041; DROP TABLE x'", &[Read], &[], &[]);
}

#[test]
fn standard_conforming_strings_off_changes_boundaries() {
    let sql = r"SELECT '\''; DELETE FROM t; --'";
    let off = ParseOptions {
        standard_conforming_strings: false,
    };
    let cl = classify_with(sql, off).unwrap();
    assert_eq!(cl.statements.len(), 2, "{}", cl.summary());
    assert_eq!(cl.operations(), ops(&[Read, Write]));
    assert_eq!(cl.tables_written(), set(&["t"]));
}

#[test]
fn dollar_quoting() {
    check("SELECT $$ ; DROP TABLE x $$", &[Read], &[], &[]);
    check("SELECT $tag$ $$ ; DROP TABLE x $$ $tag$", &[Read], &[], &[]);
    let cl = c("SELECT $a$ x $a$; DROP TABLE y");
    assert_eq!(cl.statements.len(), 2);
    assert_eq!(cl.statements[1].tables_written, set(&["y"]));
}

#[test]
fn statement_text_comes_from_the_parse_locations() {
    let cl = c("  SELECT 1 ;\n  -- note\n COMMIT;;DROP TABLE \"X\".y; ");
    let texts: Vec<&str> = cl.statements.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["SELECT 1", "COMMIT", "DROP TABLE \"X\".y"]);
    assert_eq!(c("SELECT 'é'; SELECT 2").statements[1].text, "SELECT 2");
}

// ---- identifiers ----

#[test]
fn identifiers_fold_like_postgresql() {
    check(r#"SELECT * FROM "Users""#, &[Read], &["Users"], &[]);
    check("SELECT * FROM Users", &[Read], &["users"], &[]);
    check(
        r#"SELECT * FROM Sales."Q1", "My Schema".t"#,
        &[Read],
        &["sales.Q1", "My Schema.t"],
        &[],
    );
    // The database part can only be the current database: dropped.
    check("SELECT * FROM db.public.t", &[Read], &["public.t"], &[]);
    check(
        "INSERT INTO Audit.Log VALUES (1)",
        &[Write],
        &[],
        &["audit.log"],
    );
}
