//! Sources shared out among several `rollcall run` processes, each with its own store, all
//! publishing into one Kafka cluster (docs/scaling.md, Sharding): the real binaries against
//! Superset simulators and an rdkafka `MockCluster`, whose brokers are real TCP listeners every
//! child process connects to. Two shards of disjoint sources fill one topic with no id twice
//! and each user's events in order, each event naming its shard; a second process given a
//! source another store claims refuses it, says so in its log, `status`, `/readyz` and
//! `/metrics`, and takes it once the first forgets it; a store gone for good loses its source to
//! `rollcall source take-over`, and, should its process come back, refuses it; while Kafka is
//! down, a source the store held is polled and a new one waits for its claim.

use crate::support;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde_json::Value;
use support::kafka as mock;
use support::running::{run_config, sample, Running};
use support::sim::{Sim, SimOptions, GAMMA_ROLE};
use support::wait;

const TOPIC: &str = "identity.user-events";

/// One rollcall process's directory: its config, its store, the password its sources use.
struct Shard {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Shard {
    /// A process of shard `shard` publishing to `brokers`, polling `sources` (name, simulator)
    /// every second.
    fn new(shard: &str, brokers: &str, sources: &[(&str, &Sim)]) -> Shard {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "admin\n").unwrap();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\nshard = \"{shard}\"\n\n[store]\npath = {:?}\n\n[[sinks]]\nkind = \"kafka\"\nname = \"bus\"\nbrokers = \"{brokers}\"\ntopic = \"{TOPIC}\"\nmode = \"structured\"\n",
            dir.path().join("data").display().to_string()
        );
        for (name, sim) in sources {
            text.push_str(&source(name, sim, &password));
        }
        let config = dir.path().join("rollcall.toml");
        std::fs::write(&config, text).unwrap();
        Shard { dir, config }
    }

    async fn run(&self) -> Running {
        run_config(&self.config).await
    }

    /// What `rollcall ARGS` with this config prints, once it succeeded.
    async fn said(&self, args: &[&str]) -> String {
        let out = support::harness::rollcall(&self.config, args).await;
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "rollcall {args:?}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    }

    fn edit(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let edited = edit(text.clone());
        assert_ne!(edited, text, "the edit matched nothing");
        std::fs::write(&self.config, edited).unwrap();
    }
}

/// A `[[sources]]` table polling `sim` every second.
fn source(name: &str, sim: &Sim, password: &std::path::Path) -> String {
    format!(
        "\n[[sources]]\nkind = \"superset\"\nname = \"{name}\"\nurl = \"{}\"\nusername = \"admin\"\npassword_file = {:?}\npoll_interval = \"1s\"\naction_log = false\nemit_initial_snapshot = true\n",
        sim.url,
        password.display().to_string()
    )
}

async fn status(r: &Running) -> Value {
    let (code, body) = r.get("/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn source_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("source {name} in {status}"))
}

/// The process has delivered everything it stored, and stored at least `events`.
async fn delivered(r: &Running, events: u64) -> bool {
    let s = status(r).await;
    let head = s["log_head"].as_u64().unwrap();
    head >= events && s["sinks"][0]["cursor"].as_u64() == Some(head)
}

/// One message of the topic as a consumer reads it.
struct Read {
    partition: i32,
    key: String,
    event: Value,
}

fn read(m: &OwnedMessage) -> Read {
    Read {
        partition: m.partition(),
        key: String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
        event: serde_json::from_slice(m.payload().unwrap()).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_of_disjoint_sources_fill_one_topic_with_unique_ids_and_each_user_in_order() {
    const USERS: usize = 4;
    const ROUNDS: usize = 3;
    let cluster = mock::cluster(TOPIC, 3);
    let brokers = cluster.bootstrap_servers();
    let mut sims = Vec::new();
    for _ in 0..3 {
        let sim = Sim::start(SimOptions::default()).await;
        sim.add_users(USERS, &[GAMMA_ROLE]);
        sims.push(sim);
    }
    let eu = Shard::new(
        "eu-1",
        &brokers,
        &[("finance", &sims[0]), ("sales", &sims[1])],
    );
    let us = Shard::new("us-1", &brokers, &[("support", &sims[2])]);
    // Both sign their chains: a checkpoint names its shard as every event does.
    for shard in [&eu, &us] {
        let key = support::chain::key_file(shard.dir.path());
        shard.edit(|c| {
            c.replace(
                "\n[[sinks]]",
                &format!(
                    "signing_key_file = {:?}\ncheckpoint_every = 5\n\n[[sinks]]",
                    key.display().to_string()
                ),
            )
        });
    }
    let (eu_run, us_run) = (eu.run().await, us.run().await);
    // Each user observed, then renamed once per round, each round polled before the next: a
    // user's events must reach consumers in this order.
    let users: Vec<u64> = sims[0].users().iter().map(|u| u.id).collect();
    let per_source = |rounds: usize| ((1 + rounds) * (users.len())) as u64;
    for round in 0..=ROUNDS {
        if round > 0 {
            for sim in &sims {
                for u in sim.users() {
                    sim.update_user(u.id, |u| u.first_name = format!("round {round}"));
                }
            }
        }
        wait::until_async("both shards to deliver the round", || async {
            delivered(&eu_run, 2 * per_source(round)).await
                && delivered(&us_run, per_source(round)).await
        })
        .await;
    }
    let (eu_head, us_head) = (
        status(&eu_run).await["log_head"].as_u64().unwrap(),
        status(&us_run).await["log_head"].as_u64().unwrap(),
    );
    let total = (eu_head + us_head) as usize;
    let got: Vec<Read> = mock::consume(&brokers, TOPIC, total, Duration::from_secs(1))
        .await
        .iter()
        .map(read)
        .collect();

    let ids: HashSet<&str> = got
        .iter()
        .map(|r| r.event["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), got.len(), "no id twice, across both processes");
    assert_eq!(got.len(), total, "every event of both stores, once");
    let (checkpoints, got): (Vec<Read>, Vec<Read>) = got
        .into_iter()
        .partition(|r| r.event["type"] == "rollcall.checkpoint");
    assert!(checkpoints.len() >= 2, "both stores signed");
    for r in got.iter().chain(&checkpoints) {
        support::schema::assert_valid_event(&r.event);
    }
    // The end of each full read is about no user.
    let got: Vec<Read> = got
        .into_iter()
        .filter(|r| r.event["type"] != "sync.completed")
        .collect();
    for c in &checkpoints {
        let source = c.event["source"].as_str().unwrap();
        assert!(
            source.ends_with("?shard=eu-1") || source.ends_with("?shard=us-1"),
            "{source}"
        );
    }
    // Each event names its process's shard; a user's key names its source without it.
    let mut keys_by_shard: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for r in &got {
        let source = r.event["source"].as_str().unwrap();
        let (name, shard) = source
            .strip_prefix("superset://")
            .and_then(|s| s.split_once("?shard="))
            .unwrap_or_else(|| panic!("a sharded source: {source}"));
        let want = if name == "support" { "us-1" } else { "eu-1" };
        assert_eq!(shard, want, "{source}");
        assert_eq!(
            r.key,
            format!("superset://{name}:{}", r.event["subject"].as_str().unwrap())
        );
        keys_by_shard.entry(shard).or_default().insert(&r.key);
    }
    assert!(keys_by_shard["eu-1"].is_disjoint(&keys_by_shard["us-1"]));
    // Per key: one partition, the store's log order (`sequence`), the rounds in order.
    let mut by_key: BTreeMap<&str, Vec<&Read>> = BTreeMap::new();
    for r in &got {
        by_key.entry(&r.key).or_default().push(r);
    }
    assert_eq!(by_key.len(), 3 * users.len());
    for (key, reads) in by_key {
        let partitions: HashSet<i32> = reads.iter().map(|r| r.partition).collect();
        assert_eq!(partitions.len(), 1, "{key} in one partition");
        let sequences: Vec<&str> = reads
            .iter()
            .map(|r| r.event["sequence"].as_str().unwrap())
            .collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key}: {sequences:?}"
        );
        let names: Vec<String> = reads
            .iter()
            .map(|r| {
                r.event["data"]["user"]["first_name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let rounds: Vec<String> = (1..=ROUNDS).map(|r| format!("round {r}")).collect();
        assert_eq!(&names[1..], rounds.as_slice(), "{key}: {names:?}");
        assert_eq!(reads[0].event["type"], "user.observed");
    }
    // Both processes wrote to one partition at least: the shards interleave in the topic.
    let shards_in = |p: i32| -> HashSet<&str> {
        got.iter()
            .filter(|r| r.partition == p)
            .map(|r| {
                r.event["source"]
                    .as_str()
                    .unwrap()
                    .rsplit('=')
                    .next()
                    .unwrap()
            })
            .collect()
    };
    assert!((0..3).any(|p| shards_in(p).len() == 2));
    // Each shard's hash chain verifies in the shared topic: the other shard's events pass by.
    for (shard, head) in [(&eu, eu_head), (&us, us_head)] {
        let said = shard.said(&["verify", "--topic", "bus"]).await;
        let want = format!(
            "intact: {head} chained events, log offsets 0 to {}",
            head - 1
        );
        assert!(said.starts_with(&want), "{said}");
        assert!(said.contains("  signed: "), "{said}");
    }
}

/// A cluster whose topic has `partitions` partitions, its brokers, and a Superset with `users`
/// users besides its admin.
async fn cluster_and_sim(partitions: i32, users: usize) -> (mock::Cluster, String, Sim) {
    let cluster = mock::cluster(TOPIC, partitions);
    let brokers = cluster.bootstrap_servers();
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(users, &[GAMMA_ROLE]);
    (cluster, brokers, sim)
}

/// The claim standing `source` has in `status`, and its whole record.
fn standing<'a>(status: &'a Value, source: &str) -> (&'a str, &'a Value) {
    let claim = &source_of(status, source)["claim"];
    (claim["standing"].as_str().unwrap_or("none"), claim)
}

/// The events of the topic whose `source` names `shard`.
async fn events_of_shard(brokers: &str, shard: &str, at_least: usize) -> Vec<Value> {
    let got = mock::consume(brokers, TOPIC, at_least, Duration::from_secs(1)).await;
    got.iter()
        .map(|m| read(m).event)
        .filter(|e| e["type"] != "sync.completed")
        .filter(|e| {
            e["source"]
                .as_str()
                .unwrap()
                .ends_with(&format!("?shard={shard}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_given_a_claimed_source_refuses_it_loudly_until_the_first_forgets_it() {
    let (_cluster, brokers, sim) = cluster_and_sim(3, 3).await;
    let first = Shard::new("eu-1", &brokers, &[("finance", &sim)]);
    let first_run = first.run().await;
    wait::until_async("the first store to claim and poll the source", || async {
        let s = status(&first_run).await;
        standing(&s, "finance").0 == "held" && delivered(&first_run, 3).await
    })
    .await;
    let first_store = status(&first_run).await["store_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The same Superset, under another name, with a trailing slash: one upstream all the same.
    let second = Shard::new("eu-2", &brokers, &[("fin", &sim)]);
    second.edit(|c| {
        c.replace(
            &format!("url = \"{}\"", sim.url),
            &format!("url = \"{}/\"", sim.url),
        )
    });
    let second_run = second.run().await;
    wait::until_async("the second store to record the other's claim", || async {
        standing(&status(&second_run).await, "fin").0 == "claimed_by"
    })
    .await;
    let s = status(&second_run).await;
    let (_, claim) = standing(&s, "fin");
    assert_eq!(claim["owner"]["store"], first_store.as_str());
    assert_eq!(claim["owner"]["shard"], "eu-1");
    assert_eq!(claim["owner"]["source"], "finance");
    assert_eq!(
        source_of(&s, "fin")["last_poll"],
        Value::Null,
        "never polled"
    );
    assert_eq!(s["log_head"], 0, "nothing stored");
    let loud = second_run.said("SOURCE CLAIMED BY ANOTHER STORE").await;
    assert_eq!(loud["level"], "ERROR");
    let said = loud["fields"]["error"].as_str().unwrap();
    assert!(
        said.contains(&format!("by store {first_store} (shard eu-1"))
            && said.contains("rollcall source take-over fin"),
        "{said}"
    );
    let text = second.said(&["status"]).await;
    assert!(
        text.contains("CLAIMED BY ANOTHER STORE") && text.contains(&first_store),
        "{text}"
    );
    let (code, ready) = second_run.get("/readyz").await;
    assert_eq!(code, 503);
    assert!(
        ready.contains("source fin: not polled, claimed by store"),
        "{ready}"
    );
    let (_, metrics) = second_run.get("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "rollcall_source_claimed_elsewhere",
            ("source", "fin")
        ),
        1.0
    );
    let (_, metrics) = first_run.get("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "rollcall_source_claimed_elsewhere",
            ("source", "finance")
        ),
        0.0
    );
    assert!(
        metrics.contains("rollcall_shard_info{") && metrics.contains("shard=\"eu-1\""),
        "{metrics}"
    );

    // The first process lets it go: out of its config, reloaded, forgotten.
    let other = Sim::start(SimOptions::default()).await;
    let password = first.dir.path().join("password");
    first.edit(|c| {
        c[..c.find("\n[[sources]]").unwrap()].to_owned() + &source("other", &other, &password)
    });
    first.said(&["reload"]).await;
    let said = first.said(&["source", "forget", "finance"]).await;
    assert!(
        said.contains("its claim on") && said.contains("is withdrawn"),
        "{said}"
    );
    wait::until_async("the second store to claim and poll the source", || async {
        let s = status(&second_run).await;
        standing(&s, "fin").0 == "held" && delivered(&second_run, 3).await
    })
    .await;
    let users = sim.users().len();
    let theirs = events_of_shard(&brokers, "eu-2", users).await;
    assert_eq!(
        theirs.len(),
        users,
        "the users, observed once by the new owner"
    );
    assert!(theirs
        .iter()
        .all(|e| e["source"] == "superset://fin?shard=eu-2" && e["type"] == "user.observed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_gone_for_good_loses_its_source_to_take_over_and_its_process_back_refuses_it() {
    let (_cluster, brokers, sim) = cluster_and_sim(1, 2).await;
    let old = Shard::new("eu-1", &brokers, &[("finance", &sim)]);
    let old_run = old.run().await;
    wait::until_async("the old store to hold the source", || async {
        standing(&status(&old_run).await, "finance").0 == "held"
    })
    .await;
    let old_store = status(&old_run).await["store_id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(old_run); // SIGKILL: its claim stays, naming a store that polls no more

    let new = Shard::new("eu-1", &brokers, &[("finance", &sim)]);
    let new_run = new.run().await;
    wait::until_async("the new store to refuse the old store's source", || async {
        standing(&status(&new_run).await, "finance").0 == "claimed_by"
    })
    .await;
    let said = new.said(&["source", "take-over", "finance"]).await;
    assert!(
        said.contains(&format!("the claim of store {old_store} (shard eu-1"))
            && said.contains("is withdrawn"),
        "{said}"
    );
    wait::until_async("the new store to poll the source", || async {
        let s = status(&new_run).await;
        standing(&s, "finance").0 == "held" && delivered(&new_run, 2).await
    })
    .await;

    // The old process comes back on its old store: the source is no longer its own.
    let back = old.run().await;
    wait::until_async("the old store to refuse the source now", || async {
        standing(&status(&back).await, "finance").0 == "claimed_by"
    })
    .await;
    let s = status(&back).await;
    assert_ne!(
        standing(&s, "finance").1["owner"]["store"],
        old_store.as_str()
    );
    let before = status(&back).await["log_head"].as_u64().unwrap();
    sim.add_user("newcomer", "pw", &[GAMMA_ROLE]);
    wait::until_async("the new owner to report the newcomer", || async {
        delivered(&new_run, 3).await
    })
    .await;
    assert_eq!(
        status(&back).await["log_head"].as_u64().unwrap(),
        before,
        "the old process stores nothing of the source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_kafka_is_down_a_source_the_store_held_is_polled_and_a_new_one_waits_for_its_claim() {
    let (cluster, brokers, held) = cluster_and_sim(1, 1).await;
    let shard = Shard::new("eu-1", &brokers, &[("finance", &held)]);
    let first = shard.run().await;
    wait::until_async("the store to hold its source", || async {
        standing(&status(&first).await, "finance").0 == "held"
    })
    .await;
    drop(first);

    cluster.broker_down(1).unwrap();
    let new = Sim::start(SimOptions::default()).await;
    let password = shard.dir.path().join("password");
    shard.edit(|c| c + &source("sales", &new, &password));
    let back = shard.run().await;
    let before = status(&back).await["log_head"].as_u64().unwrap();
    held.add_user("newcomer", "pw", &[GAMMA_ROLE]);
    wait::until_async("the held source to be polled without Kafka", || async {
        status(&back).await["log_head"].as_u64().unwrap() > before
    })
    .await;
    wait::until_async("the new source to wait for its claim", || async {
        let s = status(&back).await;
        source_of(&s, "sales")["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is not polled until this store can claim it"))
    })
    .await;
    let s = status(&back).await;
    assert_eq!(source_of(&s, "sales")["last_poll"], Value::Null);
    assert!(new.requests().is_empty(), "nothing sent to its upstream");

    cluster.broker_up(1).unwrap();
    wait::until_async("the new source to be claimed and polled", || async {
        let s = status(&back).await;
        standing(&s, "sales").0 == "held" && !source_of(&s, "sales")["last_poll"].is_null()
    })
    .await;
}
