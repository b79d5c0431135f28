//! Standalone Apache Kylin 5 user-API simulator for manual runs of rollcall.
//!
//! ```text
//! cargo run -p rollcall-sim --example kylin_sim -- --port 7070 --users 1000
//! curl -u ADMIN:KYLIN -H 'Accept: application/vnd.apache.kylin-v4-public+json' \
//!   'http://127.0.0.1:7070/kylin/api/user?page_size=5'
//! ```
//! Seeded with `ADMIN`/`KYLIN`; the clock follows wall time so locks expire as they would on a
//! real server. Runs until Ctrl-C.

use rollcall_sim::kylin::{KylinOptions, KylinSim, SEEDED_PASSWORD};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Simulated Apache Kylin 5 user-management REST API (/kylin/api/user)")]
struct Args {
    /// Port on 127.0.0.1 to listen on (Kylin's default is 7070).
    #[arg(long, default_value_t = 7070)]
    port: u16,
    /// Extra users to seed (user000001…, group ALL_USERS).
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// Password of ADMIN.
    #[arg(long, default_value = "KYLIN")]
    admin_password: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sim = KylinSim::start_on(
        args.port,
        KylinOptions {
            wall_clock: true,
            admin_password: args.admin_password.clone(),
            ..KylinOptions::default()
        },
    )
    .await;
    sim.add_users(args.users);
    println!("{}", sim.url);
    eprintln!(
        "Kylin 5 simulator at {} (ADMIN/{}; seeded users' password {SEEDED_PASSWORD}), Ctrl-C to stop",
        sim.url, args.admin_password
    );
    let _ = tokio::signal::ctrl_c().await;
}
