//! Unit tests of the classifier.
#[test]
fn scratch_dump() {
    for q in std::env::var("Q").unwrap_or_default().split("|||") {
        match pg_query::parse(q, 0) {
            Ok(r) => {
                for s in &r.protobuf.stmts {
                    println!("loc={} len={}", s.stmt_location, s.stmt_len);
                    if std::env::var("TREE").is_ok() { println!("{:#?}", super::tree::to_tree(s.stmt.as_ref().unwrap().as_ref())); }
                }
            }
            Err(e) => println!("ERR {e:?}"),
        }
        println!("{q}\n  => {:?}", super::classify(q).map(|c| c.summary()));
    }
}
#[test]
fn scratch_text() {
    let q = "/* c */ SELECT 1 ;\n  -- x\n COMMIT;;DROP TABLE \"X\".y; ";
    for s in super::classify(q).unwrap().statements { println!("{:?}", s.text); }
    let deep = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
    println!("{:?}", super::classify(&deep).map(|c| c.summary()));
    let deep = format!("SELECT 1{}", "+1".repeat(2000));
    println!("{:?}", super::classify(&deep).map(|c| c.summary()));
    let deep = format!("SELECT {}1{}", "(SELECT ".repeat(60), ")".repeat(60));
    println!("{:?}", super::classify(&deep).map(|c| c.summary()));
    let q = "SELECT '\\''; DELETE FROM t; --'";
    println!("{q} on {:?}", super::classify(q).map(|c| c.summary()));
    println!("{q} off {:?}", super::classify_with(q, super::ParseOptions{standard_conforming_strings:false}).map(|c| c.summary()));
    println!("{:?}", super::classify("SELEC 1"));
    println!("{:?}", super::classify("SELECT 1\0; DROP TABLE x"));
}
#[test]
fn scratch_depth() {
    for n in [10, 20, 30, 40, 45, 50, 60, 80, 100, 200, 400] {
        let deep = format!("SELECT a{}", " || a".repeat(n));
        let d2 = format!("SELECT * FROM t WHERE a IN {}(1){}", "(SELECT a FROM t WHERE a IN ".repeat(n/5), ")".repeat(n/5));
        println!("{n} {:?} | {:?}", super::classify(&deep).map(|c| c.summary()).map_err(|e| e.to_string().chars().take(60).collect::<String>()),
            super::classify(&d2).map(|_| ()).map_err(|e| e.to_string().chars().take(60).collect::<String>()));
    }
}
