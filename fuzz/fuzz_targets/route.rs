//! `route::parse` on any method and path never panics, and only paths under `/v2` become actions.
#![no_main]

use entrepot_server::route;
use http::Method;
use libfuzzer_sys::fuzz_target;

const METHODS: &[Method] =
    &[Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS];

fuzz_target!(|input: (u8, &[u8], &str)| {
    let (pick, custom, path) = input;
    let method = match METHODS.get(pick as usize % (METHODS.len() + 1)) {
        Some(m) => m.clone(),
        None => match Method::from_bytes(custom) {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    if let Ok(action) = route::parse(&method, path) {
        assert!(path.starts_with("/v2"), "{method} {path:?} -> {action:?}");
    }
});
