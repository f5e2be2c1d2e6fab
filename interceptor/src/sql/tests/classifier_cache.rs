//! The `Classifier` cache.

use std::sync::Arc;

use super::*;

#[test]
fn classifier_caches_by_exact_text() {
    let cl = Classifier::new(2);
    let a1 = cl.classify("SELECT 1");
    let a2 = cl.classify("SELECT 1");
    assert!(Arc::ptr_eq(&a1, &a2));
    assert_eq!(cl.stats(), (1, 1));
    // Different text (even whitespace) is a different entry.
    let _ = cl.classify("SELECT  1");
    assert_eq!(cl.stats(), (1, 2));
    // Errors are cached too.
    assert!(matches!(*cl.classify("SELEC"), Err(SqlError::Parse(_))));
    assert!(matches!(*cl.classify("SELEC"), Err(SqlError::Parse(_))));
    assert_eq!(cl.stats(), (2, 3));
    assert_eq!(cl.len(), 2);
    // "SELECT 1" was least recently used and is gone; "SELEC" stays.
    let _ = cl.classify("SELECT 1");
    assert_eq!(cl.stats(), (2, 4));
    let _ = cl.classify("SELEC");
    assert_eq!(cl.stats(), (3, 4));
    // Parse options are part of the key.
    let off = ParseOptions {
        standard_conforming_strings: false,
    };
    let _ = cl.classify_with("SELEC", off);
    assert_eq!(cl.stats(), (3, 5));
}

#[test]
fn classifier_is_shared_between_threads() {
    let cl = Arc::new(Classifier::new(64));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let cl = Arc::clone(&cl);
            std::thread::spawn(move || {
                for j in 0..50 {
                    let sql = format!("SELECT * FROM t{} WHERE id = {}", (i + j) % 8, j % 4);
                    let r = cl.classify(&sql);
                    assert_eq!(r.as_ref().as_ref().unwrap().operations(), ops(&[Read]));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (hits, misses) = cl.stats();
    assert_eq!(hits + misses, 200);
    assert!(hits > 0 && misses >= 32, "{hits} {misses}");
}

#[test]
fn classifier_without_capacity_and_with_long_texts() {
    let cl = Classifier::new(0);
    let _ = cl.classify("SELECT 1");
    let _ = cl.classify("SELECT 1");
    assert_eq!(cl.stats(), (0, 2));
    assert!(cl.is_empty());
    let cl = Classifier::default();
    let long = format!("SELECT '{}'", "x".repeat(cache::MAX_CACHED_LEN));
    let _ = cl.classify(&long);
    let _ = cl.classify(&long);
    assert_eq!(cl.stats(), (0, 2));
}
