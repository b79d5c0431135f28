//! One failed login per credential, ever: generated sequences of cycles, restarts (the runner
//! and its store dropped and opened again, as a new process would) and password changes in the
//! source's password file, against the Kylin simulator, which counts every refused login.
//!
//! Kylin locks an account after three failed logins in a row (docs/kylin.md K30), so a poller
//! that retries refused credentials at each start locks its own service account. After each
//! step the test compares Kylin's count of failed logins and each cycle's outcome with a model:
//! a password is sent only if no refusal of it is remembered; a running process keeps the
//! password it was built with (and its session) until a refusal makes it read the file again.
//! `ROLLCALL_PROPTEST_CASES` sets the cases (default 256) and `ROLLCALL_PROPTEST_SEED` the seed
//! (random by default); both are printed, so a failure can be run again.

use proptest::prelude::*;
use rollcall::runner::CycleOptions;
use rollcall_sim::kylin::{KylinOptions, KylinSim, ADMIN, ADMIN_PASSWORD};

use crate::support::harness::Harness;
use crate::support::login::Logins;

/// The passwords a case may write: the right one, and two wrong ones. With no retry-login two
/// wrong ones make at most two failures in a row, so Kylin never locks the account.
const PASSWORDS: [&str; 3] = [ADMIN_PASSWORD, "wrong-1", "wrong-2"];

#[derive(Debug, Clone, Copy)]
enum Step {
    Cycle,
    Restart,
    SetPassword(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Cycle),
        1 => Just(Step::Restart),
        2 => (0..PASSWORDS.len()).prop_map(Step::SetPassword),
    ]
}

async fn run_case(steps: &[Step]) -> Result<(), String> {
    let sim = KylinSim::start(KylinOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("test.password");
    let sources = Harness::kylin_source(&dir, "test", &sim.url, ADMIN, PASSWORDS[0], "");
    let mut h = Harness::with_sources(dir, &sources);
    let mut model = Logins::default();
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Step::Cycle => {
                let ok = h.try_cycle(CycleOptions::default()).await.is_ok();
                let expected = model.cycle();
                if ok != expected {
                    return Err(format!(
                        "step {i} ({step:?}): the cycle {} where it should have {}",
                        if ok { "succeeded" } else { "failed" },
                        if expected { "succeeded" } else { "failed" }
                    ));
                }
            }
            Step::Restart => {
                h.stop();
                model.restart();
            }
            Step::SetPassword(p) => {
                std::fs::write(&password_file, format!("{}\n", PASSWORDS[p])).unwrap();
                model.set_password(p);
            }
        }
        let failed = sim.failed_logins(ADMIN);
        if failed != model.failed() {
            return Err(format!(
                "after step {i} ({step:?}): Kylin counted {failed} failed logins, where {} were due (one per wrong password, ever)",
                model.failed()
            ));
        }
    }
    Ok(())
}

#[test]
fn no_password_is_refused_twice_whatever_restarts_and_changes_follow() {
    let (mut runner, seed) = crate::support::generated::runner(
        "credentials::no_password_is_refused_twice_whatever_restarts_and_changes_follow",
        256,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runner
        .run(&prop::collection::vec(step(), 1..12), |steps| {
            runtime
                .block_on(run_case(&steps))
                .map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("seed {seed}: the smallest case proptest found:\n{e}"));
}
