//! Standalone Superset API simulator (4.1, 5.0, 6.0 or 6.1) for manual testing of rollcall.
//!
//! ```text
//! cargo run --release --example superset_sim -- --port 8088 --users 1000 --superset-version 5.0
//! ```
//! Seeded with the Admin account `admin`/`admin`; runs until Ctrl-C.

use rollcall_sim::superset as sim;

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Simulated Apache Superset REST API (users, roles, groups, log), as 4.1, 5.0, 6.0 or 6.1"
)]
struct Args {
    /// Port on 127.0.0.1 to listen on.
    #[arg(long, default_value_t = 8088)]
    port: u16,
    /// Extra Gamma users to seed (user00001…, password = username).
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// Server-local clock offset from UTC, in minutes (user timestamps are server-local).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    utc_offset_minutes: i32,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 900)]
    access_ttl_secs: u64,
    /// The release to answer like: 4.1, 5.0, 6.0 or 6.1 (docs/superset.md, Releases 4.1 to 6.1).
    #[arg(long, default_value = "6.1")]
    superset_version: sim::Release,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sim = sim::Sim::start_on(
        args.port,
        sim::SimOptions {
            utc_offset_minutes: args.utc_offset_minutes,
            access_ttl: Duration::from_secs(args.access_ttl_secs),
            release: args.superset_version,
            ..sim::SimOptions::default()
        },
    )
    .await;
    if args.users > 0 {
        sim.add_users(args.users, &[sim::GAMMA_ROLE]);
    }
    println!("{}", sim.url);
    eprintln!(
        "Superset {:?} simulator at {} (admin/admin), Ctrl-C to stop",
        args.superset_version, sim.url
    );
    let _ = tokio::signal::ctrl_c().await;
}
