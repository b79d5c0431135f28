//! Standalone Superset 6.1.0 API simulator for manual testing of rollcall.
//!
//! ```text
//! cargo run --release --example superset_sim -- --port 8088 --users 1000
//! ```
//! Seeded with the Admin account `admin`/`admin`; runs until Ctrl-C.

use rollcall_sim::superset as sim;

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Simulated Apache Superset 6.1.0 REST API (users, roles, groups, log)")]
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
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sim = sim::Sim::start_on(
        args.port,
        sim::SimOptions {
            utc_offset_minutes: args.utc_offset_minutes,
            access_ttl: Duration::from_secs(args.access_ttl_secs),
            ..sim::SimOptions::default()
        },
    )
    .await;
    if args.users > 0 {
        sim.add_users(args.users, &[sim::GAMMA_ROLE]);
    }
    println!("{}", sim.url);
    eprintln!(
        "Superset 6.1.0 simulator at {} (admin/admin), Ctrl-C to stop",
        sim.url
    );
    let _ = tokio::signal::ctrl_c().await;
}
