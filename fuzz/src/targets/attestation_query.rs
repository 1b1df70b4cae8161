//! The query of zoa-init's attestation endpoint (`/.well-known/zoa/attestation?nonce=<hex>`),
//! straight from any client: refused cleanly (never echoing it), or a nonce of 1-64 bytes
//! whose lowercase hex is the query's, case aside.
use zoa_init::front::attest::{nonce_from_query, BadQuery, MAX_NONCE_LEN};

pub fn run(data: &[u8]) {
    // hyper hands the handler a &str: other bytes never reach the parser.
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    match nonce_from_query(Some(query)) {
        Ok(None) => assert!(query.is_empty()),
        Ok(Some(nonce)) => {
            assert!((1..=MAX_NONCE_LEN).contains(&nonce.len()));
            let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(query.to_ascii_lowercase(), format!("nonce={hex}"));
        }
        // The refusal is a `&'static str`, so it cannot echo the query; an earlier
        // "does not contain the query" check here failed on a query that was itself a piece
        // of a fixed message ("he only parameter is non", kept in the corpus).
        Err(BadQuery(why)) => assert!(!why.is_empty()),
    }
}
