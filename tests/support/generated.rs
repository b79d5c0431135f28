//! The runner of every generated property: its cases and seed come from the environment
//! (`ROLLCALL_PROPTEST_CASES`, `ROLLCALL_PROPTEST_SEED`, random by default) and are printed with
//! the command that runs the same cases again, so a failure seen once can be reproduced.

use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    Some(
        raw.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {raw:?}")),
    )
}

/// A runner for the property `test` (its path in the test binary, e.g. `credentials::…`),
/// with `default_cases` unless the environment says otherwise; returns it with its seed.
pub fn runner(test: &str, default_cases: u32) -> (TestRunner, u64) {
    let cases = env_u64("ROLLCALL_PROPTEST_CASES").map_or(default_cases, |n| n as u32);
    let seed = env_u64("ROLLCALL_PROPTEST_SEED").unwrap_or_else(rand::random);
    eprintln!(
        "{test}: {cases} cases, seed {seed} (again: ROLLCALL_PROPTEST_SEED={seed} ROLLCALL_PROPTEST_CASES={cases} cargo test --test tests {test})"
    );
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&seed.to_le_bytes());
    }
    let runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    (runner, seed)
}
