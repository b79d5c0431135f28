//! The deployment files agree with each other. Images cannot be pulled here, so instead of
//! running `docker compose up`, this reads docker-compose.yml, the Dockerfile and the config
//! the compose file mounts, and checks that services, ports, env, volumes and paths line up.

use std::path::Path;

use rollcall::config::{Config, SinkConfig};
use serde_json::Value;

fn file(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&file("docker-compose.yml")).unwrap()
}

/// The value of `INSTRUCTION` in the runtime (last) stage of the Dockerfile.
fn dockerfile_runtime(instruction: &str) -> Vec<String> {
    let text = file("Dockerfile");
    let last_stage = text.rsplit("\nFROM ").next().unwrap();
    last_stage
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .map(str::to_owned)
        .collect()
}

/// `host:container[:mode]` mounts of a service, as (host, container).
fn mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.as_str().unwrap().split(':').collect();
            (parts[0].to_owned(), parts[1].to_owned())
        })
        .collect()
}

fn mounted_config() -> Config {
    Config::parse(
        &file("deploy/rollcall.toml"),
        Path::new("deploy/rollcall.toml"),
    )
    .unwrap()
}

#[test]
fn compose_has_superset_kafka_and_rollcall_with_health_checks() {
    let c = compose();
    let services = c["services"].as_object().unwrap();
    assert_eq!(
        services.keys().collect::<Vec<_>>(),
        ["kafka", "rollcall", "superset"]
    );
    assert_eq!(c["services"]["superset"]["image"], "apache/superset:6.1.0");
    assert!(c["services"]["kafka"]["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka:"));
    assert_eq!(
        c["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "broker,controller",
        "KRaft, no ZooKeeper"
    );
    for s in ["superset", "kafka"] {
        assert!(
            c["services"][s]["healthcheck"]["test"].is_array(),
            "{s} has a health check"
        );
        assert_eq!(
            c["services"]["rollcall"]["depends_on"][s]["condition"],
            "service_healthy"
        );
    }
    assert_eq!(c["services"]["rollcall"]["build"], ".");
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("Dockerfile")
        .exists());
}

#[test]
fn the_mounted_config_is_valid_and_points_at_the_superset_service() {
    let c = compose();
    let config = mounted_config();
    let source = config.sources[0].as_superset().expect("a superset source");
    assert_eq!(
        source.url.host_str(),
        Some("superset"),
        "the compose service name"
    );
    let port = source.url.port().unwrap();
    let published: Vec<String> = c["services"]["superset"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert!(
        published.iter().any(|p| p.ends_with(&format!(":{port}"))),
        "Superset listens on {port}: {published:?}"
    );
    assert!(c["services"]["superset"]["command"]
        .as_str()
        .unwrap()
        .contains(&format!("-p {port}")));
    assert!(c["services"]["superset"]["command"]
        .as_str()
        .unwrap()
        .contains(&format!("--username {}", source.username)));
    let var = source.password_env.as_deref().unwrap();
    assert!(
        c["services"]["rollcall"]["environment"][var].is_string(),
        "rollcall gets {var}"
    );
}

#[test]
fn config_and_store_paths_agree_between_compose_and_dockerfile() {
    let c = compose();
    let rollcall = mounts(&c["services"]["rollcall"]);
    let env = dockerfile_runtime("ENV");
    let config_path = env
        .iter()
        .find_map(|e| e.strip_prefix("ROLLCALL_CONFIG="))
        .expect("Dockerfile sets ROLLCALL_CONFIG");
    assert!(
        rollcall
            .iter()
            .any(|(host, container)| host == "./deploy/rollcall.toml" && container == config_path),
        "deploy/rollcall.toml is mounted where the image looks for its config: {rollcall:?}"
    );
    let volume: Vec<String> = serde_json::from_str(&dockerfile_runtime("VOLUME")[0]).unwrap();
    let store = mounted_config().store.path;
    assert!(
        store.starts_with(&volume[0]),
        "the store {} lives on the image's volume {}",
        store.display(),
        volume[0]
    );
    assert!(rollcall
        .iter()
        .any(|(host, container)| host == "rollcall-data" && container == &volume[0]));
    assert!(c["volumes"]
        .as_object()
        .unwrap()
        .contains_key("rollcall-data"));
}

#[test]
fn the_image_runs_as_a_non_root_user() {
    let user = dockerfile_runtime("USER");
    assert_eq!(user, ["rollcall"]);
    assert_eq!(dockerfile_runtime("CMD"), [r#"["run"]"#]);
}

#[test]
fn superset_in_compose_has_the_security_api_on() {
    let c = compose();
    let mounts = mounts(&c["services"]["superset"]);
    let (host, _) = mounts
        .iter()
        .find(|(_, container)| container == "/app/pythonpath/superset_config.py")
        .unwrap();
    let config = file(host.trim_start_matches("./"));
    assert!(config.contains("FAB_ADD_SECURITY_API = True"));
}

#[test]
fn the_mounted_kafka_sink_points_at_the_kafka_service_listener() {
    let c = compose();
    let config = mounted_config();
    let kafka: Vec<_> = config
        .sinks
        .iter()
        .filter_map(|s| match s {
            SinkConfig::Kafka(k) => Some(k),
            _ => None,
        })
        .collect();
    assert_eq!(kafka.len(), 1, "one kafka sink");
    let advertised = c["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .unwrap();
    let listener = advertised
        .split(',')
        .find_map(|l| l.strip_prefix("PLAINTEXT://"))
        .expect("a PLAINTEXT listener");
    assert_eq!(
        kafka[0].brokers, listener,
        "rollcall connects where the broker advertises itself"
    );
    assert!(
        kafka[0].create_topic,
        "the compose broker starts without the topic"
    );
}
