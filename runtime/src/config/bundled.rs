//! The example components compiled into the binary, and the embedded default configuration
//! that serves them. `build.rs` builds them from `tools/` for `wasm32-wasip2`.

/// The configuration `airlock serve` uses when given none.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Where `build.rs` put the components it built (the bundled examples and the test fixtures).
pub const WASM_DIR: &str = env!("AIRLOCK_WASM_DIR");

const COMPONENTS: [(&str, &[u8]); 6] = [
    (
        "text",
        include_bytes!(concat!(env!("AIRLOCK_WASM_DIR"), "/text.wasm")),
    ),
    (
        "json",
        include_bytes!(concat!(env!("AIRLOCK_WASM_DIR"), "/json.wasm")),
    ),
    (
        "time",
        include_bytes!(concat!(env!("AIRLOCK_WASM_DIR"), "/time.wasm")),
    ),
    // Useful only with filesystem grants, so not in the default configuration.
    (
        "files",
        include_bytes!(concat!(env!("AIRLOCK_WASM_DIR"), "/files.wasm")),
    ),
    // Useful only with network grants.
    (
        "http-fetch",
        include_bytes!(concat!(env!("AIRLOCK_WASM_DIR"), "/http_fetch.wasm")),
    ),
    // Documents as resources and prompts: useful only with an fs grant on /docs.
    (
        "docs",
        include_bytes!(concat!(env!("AIRLOCK_WASM_DIR"), "/docs.wasm")),
    ),
];

/// Names usable as `component = "bundled:<name>"`.
pub const NAMES: [&str; 6] = [
    COMPONENTS[0].0,
    COMPONENTS[1].0,
    COMPONENTS[2].0,
    COMPONENTS[3].0,
    COMPONENTS[4].0,
    COMPONENTS[5].0,
];

/// The bundled component called `name`.
pub fn component(name: &str) -> Option<(&'static str, &'static [u8])> {
    COMPONENTS.iter().copied().find(|(n, _)| *n == name)
}
