//! What every benchmark shares: `cargo bench` measures at full size and prints figures with
//! their ratio to a baseline run in the same process; `cargo test` runs a smoke version, too
//! small to compare with anything, that only proves the benchmark still works, and prints no
//! figures (a green test run must not print missed targets).

/// `cargo bench` passes `--bench`; `cargo test` does not.
pub fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Prints only at full size.
macro_rules! report {
    ($($arg:tt)*) => {
        if $crate::support::full_size() {
            println!($($arg)*);
        }
    };
}
pub(crate) use report;

/// Says which size this is, then runs `bench` on a two-worker runtime (the machine's two cores).
pub fn run<F: std::future::Future<Output = ()>>(title: &str, name: &str, bench: F) {
    println!(
        "{title} ({})",
        if full_size() {
            "full size".to_owned()
        } else {
            format!("smoke run: sizes too small to compare, so no figures; `cargo bench --bench {name}` measures")
        }
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(bench);
}
