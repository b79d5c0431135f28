//! Runs rollcall in-process against a simulator: writes a config into a temp dir, drives
//! cycles through the library, and reads back what the JSONL sink wrote.

use std::path::{Path, PathBuf};

use rollcall::config::Config;
use rollcall::runner::{CycleOptions, Runner, RunnerError, SourceReport};
use rollcall::store::Store;
use serde_json::Value;
use tempfile::TempDir;

pub struct Harness {
    pub dir: TempDir,
    pub config_path: PathBuf,
    runner: Option<Runner>,
    seen: usize,
}

impl Harness {
    /// A config polling `url` as admin/admin into `<dir>/events.jsonl`; `extra` is appended to
    /// the `[[sources]]` table (e.g. `emit_initial_snapshot = true`).
    pub fn new(url: &str, extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "admin\n").unwrap();
        Harness::in_dir(dir, url, "admin", &password, extra)
    }

    /// The same, polling as `username` with the password in `password_file`.
    pub fn with_account(url: &str, username: &str, password_file: &Path, extra: &str) -> Harness {
        Harness::in_dir(
            tempfile::tempdir().unwrap(),
            url,
            username,
            password_file,
            extra,
        )
    }

    fn in_dir(dir: TempDir, url: &str, username: &str, password: &Path, extra: &str) -> Harness {
        let sources = format!(
            r#"[[sources]]
kind = "superset"
name = "test"
url = "{url}"
username = "{username}"
password_file = {password:?}
max_retries = 2
{extra}
"#,
            password = password.display().to_string(),
        );
        Harness::with_sources(dir, &sources)
    }

    /// A Kylin source `test` polling `url` as ADMIN (password `KYLIN`, Kylin's default);
    /// `extra` is appended to its table.
    pub fn kylin(url: &str, extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sources = Harness::kylin_source(&dir, "test", url, "ADMIN", "KYLIN", extra);
        Harness::with_sources(dir, &sources)
    }

    /// A `[[sources]]` table of kind `kylin`, its password written to a file in `dir`.
    pub fn kylin_source(
        dir: &TempDir,
        name: &str,
        url: &str,
        username: &str,
        password: &str,
        extra: &str,
    ) -> String {
        let file = dir.path().join(format!("{name}.password"));
        std::fs::write(&file, format!("{password}\n")).unwrap();
        format!(
            r#"[[sources]]
kind = "kylin"
name = "{name}"
url = "{url}"
username = "{username}"
password_file = {file:?}
{extra}
"#,
            file = file.display().to_string(),
        )
    }

    /// A config with these `[[sources]]` tables, a store and a JSONL sink in `dir`.
    pub fn with_sources(dir: TempDir, sources: &str) -> Harness {
        let config_path = dir.path().join("rollcall.toml");
        std::fs::write(
            &config_path,
            format!(
                r#"listen = "127.0.0.1:0"

[store]
path = {store:?}

[[sinks]]
kind = "jsonl"
name = "siem"
path = {events:?}

{sources}"#,
                store = dir.path().join("data").display().to_string(),
                events = dir.path().join("events.jsonl").display().to_string(),
            ),
        )
        .unwrap();
        Harness {
            dir,
            config_path,
            runner: None,
            seen: 0,
        }
    }

    /// Rewrite the config file; a runner started after this (see [`Harness::stop`]) reads it.
    /// An edit that changes nothing fails the test: it matched nothing, so the test would check
    /// another config than the one it names.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let raw = std::fs::read_to_string(&self.config_path).unwrap();
        let edited = edit(raw.clone());
        assert_ne!(edited, raw, "the config edit matched nothing in:\n{raw}");
        std::fs::write(&self.config_path, edited).unwrap();
    }

    /// Run the real binary with this config and `args`, off the async runtime: the command may
    /// poll a simulator this test's runtime serves.
    pub async fn rollcall(&self, args: &[&str]) -> std::process::Output {
        rollcall(&self.config_path, args).await
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    fn runner(&mut self) -> &mut Runner {
        if self.runner.is_none() {
            let config = self.config();
            let store = Store::open(&config.store.path).unwrap();
            self.runner = Some(Runner::new(&config, store).unwrap());
        }
        self.runner.as_mut().unwrap()
    }

    pub async fn try_cycle(
        &mut self,
        opts: CycleOptions,
    ) -> Result<Vec<SourceReport>, RunnerError> {
        self.runner().cycle(opts).await
    }

    /// One cycle that must succeed (incremental unless a full reconcile is due).
    pub async fn cycle(&mut self) -> SourceReport {
        self.try_cycle(CycleOptions::default())
            .await
            .unwrap()
            .remove(0)
    }

    /// One full reconcile that must succeed.
    pub async fn full(&mut self) -> SourceReport {
        self.try_cycle(CycleOptions {
            full: true,
            confirm_deletes: false,
        })
        .await
        .unwrap()
        .remove(0)
    }

    /// Let go of the store (as a stopped process would).
    pub fn stop(&mut self) {
        self.runner = None;
    }

    /// Leave the JSONL sink and the store as a process killed while delivering the events of
    /// its last cycle (those written since the last [`Harness::new_events`]) leaves them: the
    /// sink had written the first `written` of them, and half of the next line if `torn`, and
    /// the store's cursor had moved past the first `acked` (modulo how many there are, so any
    /// numbers make a possible crash). The runner is dropped; the next cycle starts a new one.
    pub fn die_delivering(&mut self, written: usize, acked: usize, torn: bool) {
        self.stop();
        let text = std::fs::read_to_string(self.events_path()).unwrap_or_default();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let sent = lines.len() - self.seen;
        let written = written % (sent + 1);
        let acked = acked % (written + 1);
        let mut kept: String = lines[..self.seen + written].concat();
        if torn && written < sent {
            let next = lines[self.seen + written];
            kept.push_str(&next[..next.len() / 2]);
        }
        std::fs::write(self.events_path(), kept).unwrap();
        let store = Store::open(&self.config().store.path).unwrap();
        let cursor = store.cursor("siem").unwrap();
        store
            .set_cursor("siem", cursor - (sent - acked) as u64)
            .unwrap();
    }

    pub fn store(&mut self) -> &Store {
        self.runner().store()
    }

    /// Look into the store without starting a process: through the running one if there is
    /// one, else by opening the store for `look` alone (a process started later reads its
    /// password files then, not now).
    pub fn look_into_store<T>(&mut self, look: impl FnOnce(&Store) -> T) -> T {
        match &self.runner {
            Some(runner) => look(runner.store()),
            None => look(&Store::open(&self.config().store.path).unwrap()),
        }
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// Adds a second JSONL sink, `siem-ocsf`, with `format = "ocsf"` and the given
    /// `ocsf_version` (`None`: the key left out, for the default), writing to
    /// [`Harness::ocsf_path`]; a runner started after this delivers to both.
    pub fn add_ocsf_sink(&self, version: Option<super::ocsf::Version>) {
        let path = self.ocsf_path().display().to_string();
        let version = version.map_or(String::new(), |v| {
            format!("ocsf_version = \"{}\"\n", super::ocsf::declared(v))
        });
        self.edit_config(|raw| {
            raw.replacen(
                "\n[[sinks]]\n",
                &format!(
                    "\n[[sinks]]\nkind = \"jsonl\"\nname = \"siem-ocsf\"\npath = {path:?}\nformat = \"ocsf\"\n{version}\n[[sinks]]\n"
                ),
                1,
            )
        });
    }

    /// Adds a `[[sinks]]` table before the JSONL sink; a runner started after this delivers
    /// to it too.
    pub fn add_sink(&self, table: &str) {
        self.edit_config(|raw| {
            raw.replacen("\n[[sinks]]\n", &format!("\n{table}\n[[sinks]]\n"), 1)
        });
    }

    /// `rollcall table rebuild --sink NAME` run by the binary, the runner stopped first: what
    /// it printed. Fails the test when the command fails.
    pub async fn rebuild_table(&mut self, sink: &str) -> String {
        self.stop();
        let out = self.rollcall(&["table", "rebuild", "--sink", sink]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn ocsf_path(&self) -> PathBuf {
        self.dir.path().join("events.ocsf.jsonl")
    }

    /// Every record the OCSF sink wrote, each checked against its class schema in `version`
    /// and the rules the schemas cannot check.
    pub fn ocsf_records(&self, version: super::ocsf::Version) -> Vec<Value> {
        let text = std::fs::read_to_string(self.ocsf_path()).unwrap_or_default();
        super::ocsf::assert_valid_jsonl_in(version, &text)
    }

    /// Every event the JSONL sink wrote but the `sync.completed` that ends each full
    /// reconcile (those are [`Harness::sync_markers`]), each checked against its JSON Schema.
    /// A last line without its newline (a write a crash cut short) is not read yet, as a
    /// shipper tailing the file would not.
    pub fn events(&self) -> Vec<Value> {
        self.all_events()
            .into_iter()
            .filter(|e| e["type"] != "sync.completed")
            .collect()
    }

    /// The `sync.completed` events the JSONL sink wrote, in log order.
    pub fn sync_markers(&self) -> Vec<Value> {
        self.all_events()
            .into_iter()
            .filter(|e| e["type"] == "sync.completed")
            .collect()
    }

    /// Every event the JSONL sink wrote, each checked against its JSON Schema.
    pub fn all_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.events_path()).unwrap_or_default();
        let events: Vec<Value> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("a line of the JSONL sink's file is not one JSON event ({e}): {l}")
                })
            })
            .collect();
        for e in &events {
            super::schema::assert_valid_event(e);
        }
        events
    }

    /// Events written since the last call, but the `sync.completed` markers.
    pub fn new_events(&mut self) -> Vec<Value> {
        let all = self.all_events();
        let new = all[self.seen..]
            .iter()
            .filter(|e| e["type"] != "sync.completed")
            .cloned()
            .collect();
        self.seen = all.len();
        new
    }
}

/// `(type, subject)` of each event, for compact assertions.
pub fn kinds(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub fn kind(t: &str, subject: u64) -> (String, String) {
    (t.to_owned(), subject.to_string())
}

/// Every event type a Superset source emits in a running pipeline, which the README's tour
/// promises the demo shows (`user.observed` needs `emit_initial_snapshot`; locked, unlocked
/// and password_changed are Kylin's).
pub fn superset_event_types() -> std::collections::BTreeSet<String> {
    [
        "user.created",
        "user.updated",
        "user.deactivated",
        "user.reactivated",
        "user.deleted",
        "user.role_added",
        "user.role_removed",
        "user.group_added",
        "user.group_removed",
        "user.login",
        "user.login_failed",
        "audit.action",
    ]
    .map(String::from)
    .into()
}

/// Every event type a Kylin source emits in a running pipeline, which docs/kylin-setup.md
/// promises the Kylin demo shows (Kylin shows no successful login, no roles apart from its
/// groups, and no actions: docs/kylin.md K53).
pub fn kylin_event_types() -> std::collections::BTreeSet<String> {
    [
        "user.created",
        "user.updated",
        "user.deactivated",
        "user.reactivated",
        "user.deleted",
        "user.group_added",
        "user.group_removed",
        "user.login_failed",
        "user.locked",
        "user.unlocked",
        "user.password_changed",
    ]
    .map(String::from)
    .into()
}

/// Superset changes through a CloudEvents sink and, beside it, an OCSF sink with the given
/// `ocsf_version` (`None`: the key left out): every user observed, a creation, a role granted
/// and a rename, a group joined, a login and a failed one, a deactivation and a deletion. Returns
/// the events and the OCSF records, each record checked against `expected`.
pub async fn superset_changes_beside_an_ocsf_sink(
    ocsf_version: Option<super::ocsf::Version>,
    expected: super::ocsf::Version,
) -> (Vec<Value>, Vec<Value>) {
    let (gamma, alpha) = (4, 3);
    let sim = super::sim::Sim::start(super::sim::SimOptions::default()).await;
    let alice = sim.add_user("alice", "pw-alice", &[gamma]);
    let mut h = Harness::new(&sim.url, "emit_initial_snapshot = true");
    h.add_ocsf_sink(ocsf_version);
    h.cycle().await;
    let bob = sim.add_user("bob", "pw-bob", &[gamma]);
    sim.update_user(alice, |u| {
        u.roles = vec![alpha];
        u.last_name = "Renamed".into();
    });
    sim.add_group("analysts", &[alice]);
    assert!(sim.login("bob", "pw-bob"));
    assert!(!sim.login("alice", "wrong"));
    h.cycle().await;
    sim.update_user(alice, |u| u.active = false);
    assert!(sim.delete_user(bob));
    h.cycle().await;
    (h.events(), h.ocsf_records(expected))
}

/// Run the real binary with the config at `config` and `args`, off the async runtime: the
/// command may poll a simulator this test's runtime serves.
pub async fn rollcall(config: &Path, args: &[&str]) -> std::process::Output {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}
