//! The deployment files agree with each other. Images cannot be pulled here, so instead of
//! running `docker compose up`, this reads docker-compose.yml, the Dockerfile and the configs
//! the compose file mounts (Superset's by default, Kylin's under the `kylin` profile), and checks
//! that services, profiles, ports, env, volumes and paths line up.

use std::path::Path;

use rollcall::config::{Config, SinkConfig};
use rollcall::source::SourceConfig;
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

/// Each rollcall service with the config file it mounts.
const ROLLCALLS: [(&str, &str); 2] = [
    ("rollcall", "deploy/rollcall.toml"),
    ("rollcall-kylin", "deploy/rollcall-kylin.toml"),
];

fn mounted_config() -> Config {
    config("deploy/rollcall.toml")
}

fn config(path: &str) -> Config {
    Config::parse(&file(path), Path::new(path)).unwrap()
}

/// The host side of each `host:container` port a service publishes.
fn published_ports(service: &Value) -> Vec<String> {
    service["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn compose_has_superset_kafka_and_rollcall_with_health_checks() {
    let c = compose();
    let services = c["services"].as_object().unwrap();
    assert_eq!(
        services.keys().collect::<Vec<_>>(),
        ["kafka", "kylin", "rollcall", "rollcall-kylin", "superset"]
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
    let published = published_ports(&c["services"]["superset"]);
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
    let env = dockerfile_runtime("ENV");
    let config_path = env
        .iter()
        .find_map(|e| e.strip_prefix("ROLLCALL_CONFIG="))
        .expect("Dockerfile sets ROLLCALL_CONFIG");
    let volume: Vec<String> = serde_json::from_str(&dockerfile_runtime("VOLUME")[0]).unwrap();
    let mut stores = Vec::new();
    for (service, path) in ROLLCALLS {
        let mounted = mounts(&c["services"][service]);
        assert!(
            mounted
                .iter()
                .any(|(host, container)| host == &format!("./{path}") && container == config_path),
            "{path} is mounted where the image looks for its config: {mounted:?}"
        );
        let store = config(path).store.path;
        assert!(
            store.starts_with(&volume[0]),
            "the store {} lives on the image's volume {}",
            store.display(),
            volume[0]
        );
        let (data, _) = mounted
            .iter()
            .find(|(_, container)| container == &volume[0])
            .unwrap_or_else(|| panic!("{service} mounts a volume at {}", volume[0]));
        assert!(c["volumes"].as_object().unwrap().contains_key(data));
        stores.push(data.clone());
    }
    assert_ne!(stores[0], stores[1], "each rollcall has a store of its own");
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
fn each_mounted_kafka_sink_points_at_the_kafka_service_listener() {
    let c = compose();
    let advertised = c["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .unwrap();
    let listener = advertised
        .split(',')
        .find_map(|l| l.strip_prefix("PLAINTEXT://"))
        .expect("a PLAINTEXT listener");
    let mut topics = Vec::new();
    for (_, path) in ROLLCALLS {
        let config = config(path);
        let kafka: Vec<_> = config
            .sinks
            .iter()
            .filter_map(|s| match s {
                SinkConfig::Kafka(k) => Some(k),
                _ => None,
            })
            .collect();
        assert_eq!(kafka.len(), 1, "one kafka sink in {path}");
        assert_eq!(
            kafka[0].brokers, listener,
            "rollcall connects where the broker advertises itself"
        );
        assert!(
            kafka[0].create_topic,
            "the compose broker starts without the topic"
        );
        topics.push(kafka[0].topic.clone());
    }
    assert_ne!(topics[0], topics[1], "one topic per rollcall");
}

#[test]
fn kylin_and_its_rollcall_run_only_under_the_kylin_profile() {
    let c = compose();
    for s in ["kylin", "rollcall-kylin"] {
        assert_eq!(
            c["services"][s]["profiles"],
            serde_json::json!(["kylin"]),
            "{s}"
        );
    }
    for s in ["superset", "kafka", "rollcall"] {
        assert!(c["services"][s]["profiles"].is_null(), "{s} always runs");
    }
    let kylin = &c["services"]["kylin"];
    assert!(kylin["image"]
        .as_str()
        .unwrap()
        .starts_with("apachekylin/apache-kylin-standalone:5."));
    assert!(kylin["healthcheck"]["test"].is_array());
    for s in ["kylin", "kafka"] {
        assert_eq!(
            c["services"]["rollcall-kylin"]["depends_on"][s]["condition"],
            "service_healthy"
        );
    }
    assert_eq!(c["services"]["rollcall-kylin"]["build"], ".");
    let published: Vec<Vec<String>> = ["superset", "kylin"]
        .map(|s| published_ports(&c["services"][s]))
        .into();
    assert!(
        published[1].iter().all(|p| !published[0].contains(p)),
        "Kylin publishes no port Superset does: {published:?}"
    );
}

#[test]
fn the_kylin_config_is_valid_and_points_at_the_kylin_service() {
    let c = compose();
    let config = config("deploy/rollcall-kylin.toml");
    let [SourceConfig::Kylin(source)] = config.sources.as_slice() else {
        panic!("one kylin source: {:?}", config.sources);
    };
    assert_eq!(
        source.url.host_str(),
        Some("kylin"),
        "the compose service name"
    );
    assert_eq!(
        source.url.path(),
        "/kylin",
        "Kylin's context path (docs/kylin.md K1)"
    );
    let port = source.url.port().unwrap();
    assert!(
        published_ports(&c["services"]["kylin"])
            .iter()
            .any(|p| p.ends_with(&format!(":{port}"))),
        "Kylin listens on {port}"
    );
    let var = source.password_env.as_deref().unwrap();
    assert!(
        c["services"]["rollcall-kylin"]["environment"][var].is_string(),
        "rollcall-kylin gets {var}"
    );
}

#[test]
fn the_image_checks_its_own_health_and_each_compose_rollcall_publishes_its_listen_port() {
    let health = dockerfile_runtime("HEALTHCHECK");
    assert_eq!(health.len(), 1, "{health:?}");
    assert!(
        health[0].ends_with(r#"CMD ["rollcall", "healthcheck"]"#),
        "the slim image has no curl: {health:?}"
    );
    let c = compose();
    for (service, path) in ROLLCALLS {
        let listen = config(path).listen;
        assert!(
            listen.ip().is_unspecified(),
            "{path}: `listen` {listen} is reachable from outside the container"
        );
        assert!(
            dockerfile_runtime("EXPOSE").contains(&listen.port().to_string()),
            "the image exposes {}",
            listen.port()
        );
        let published = published_ports(&c["services"][service]);
        assert!(
            published
                .iter()
                .any(|p| p.ends_with(&format!(":{}", listen.port()))),
            "{service} publishes {}: {published:?}",
            listen.port()
        );
    }
}

#[test]
fn compose_kafka_advertises_a_listener_for_the_host_it_publishes() {
    let c = compose();
    let env = &c["services"]["kafka"]["environment"];
    let advertised = env["KAFKA_ADVERTISED_LISTENERS"].as_str().unwrap();
    let host = advertised
        .split(',')
        .find_map(|l| l.split_once("://localhost:"))
        .map(|(_, port)| port.to_owned())
        .expect("a listener advertised as localhost, for clients on the host");
    assert!(
        published_ports(&c["services"]["kafka"]).contains(&format!("{host}:{host}")),
        "the host listener's port {host} is published"
    );
    let listeners = env["KAFKA_LISTENERS"].as_str().unwrap();
    assert!(listeners.contains(&format!(":{host}")), "{listeners}");
}

/// The documents of the Kubernetes manifest, by kind.
fn kubernetes(kind: &str) -> Value {
    manifest("deploy/kubernetes/rollcall.yaml", kind)
}

/// The document of `kind` in the Kubernetes manifest at `path`.
fn manifest(path: &str, kind: &str) -> Value {
    let text = file(path);
    let found = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| d["kind"] == kind);
    found.unwrap_or_else(|| panic!("{path} has a {kind}"))
}

#[test]
fn kubernetes_runs_one_replica_with_a_volume_for_the_store_and_probes_on_the_endpoints() {
    let set = kubernetes("StatefulSet");
    assert_eq!(set["spec"]["replicas"], 1, "one process per store");
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let config = mounted_config();
    let port = config.listen.port();
    assert_eq!(container["ports"][0]["containerPort"], port);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env = dockerfile_runtime("ENV");
    let config_path = env
        .iter()
        .find_map(|e| e.strip_prefix("ROLLCALL_CONFIG="))
        .unwrap();
    let mounts = volume_mounts(container);
    let store_mount = mounts
        .iter()
        .find(|(_, path)| config.store.path.starts_with(path))
        .unwrap_or_else(|| {
            panic!(
                "the store {} is on a volume: {mounts:?}",
                config.store.path.display()
            )
        });
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], store_mount.0,
        "the store's volume is persistent"
    );
    assert!(
        mounts
            .iter()
            .any(|(_, path)| Path::new(config_path).parent() == Some(Path::new(path))),
        "the config is mounted where the image looks for it: {mounts:?}"
    );
    let password = config.sources[0]
        .as_superset()
        .and_then(|s| s.password_env.clone())
        .unwrap();
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == password.as_str() && e["valueFrom"]["secretKeyRef"].is_object()),
        "{password} comes from a Secret"
    );
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    let service = kubernetes("Service");
    assert_eq!(service["spec"]["ports"][0]["port"], port);
}

/// The `rollcall_*` metric names in a PromQL expression (a histogram's `_bucket`, `_sum` and
/// `_count` series by their base name).
fn metrics_named(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("rollcall_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

#[test]
fn alert_rules_and_the_dashboard_parse_and_name_only_metrics_rollcall_exports() {
    let rules: Value =
        serde_yaml_ng::from_str(&file("deploy/prometheus/rollcall-alerts.yml")).unwrap();
    let dashboard: Value = serde_json::from_str(&file("deploy/grafana/rollcall.json")).unwrap();
    let mut exprs: Vec<String> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(
                r["alert"].is_string() && r["annotations"]["summary"].is_string(),
                "{r}"
            );
            r["expr"].as_str().unwrap().to_owned()
        })
        .collect();
    exprs.extend(
        dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["targets"][0]["expr"].as_str().unwrap().to_owned()),
    );
    let mut named = 0;
    for expr in &exprs {
        for metric in metrics_named(expr) {
            named += 1;
            assert!(
                rollcall::http::METRICS.contains(&metric.as_str()),
                "`{metric}` in `{expr}` is not a metric rollcall exports"
            );
        }
    }
    assert!(named > 10, "the rules and panels name rollcall's metrics");
}

/// The documents of the sharded manifest, by kind.
fn sharded(kind: &str) -> Value {
    manifest("deploy/kubernetes/sharded.yaml", kind)
}

const SHARDS: &str = "deploy/kubernetes/shards";

/// The main config of shard `i`, read with the files its `include` names.
fn shard_config(i: usize) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{SHARDS}/shard-{i}.toml"));
    Config::load(&path).unwrap_or_else(|e| panic!("shard {i}: {e}"))
}

/// A container's volume mounts, as (volume name, mount path).
fn volume_mounts(container: &Value) -> Vec<(String, String)> {
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["mountPath"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn kubernetes_shards_run_a_pod_per_shard_file_each_picking_its_file_by_ordinal_with_its_own_store()
{
    let set = sharded("StatefulSet");
    let replicas = set["spec"]["replicas"].as_u64().unwrap() as usize;
    let mains: std::collections::BTreeSet<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(SHARDS))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.matches('.').count() == 1)
            .collect();
    let want: std::collections::BTreeSet<String> =
        (0..replicas).map(|i| format!("shard-{i}.toml")).collect();
    assert_eq!(mains, want, "one main file per pod, by ordinal");
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = container["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap();
    assert_eq!(
        var("SHARD_INDEX")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    let mounts = volume_mounts(container);
    let volumes = pod["volumes"].as_array().unwrap();
    let mounted_from = |path: &str| {
        let (name, _) = mounts.iter().find(|(_, p)| p == path).unwrap();
        volumes.iter().find(|v| v["name"] == name.as_str()).unwrap()
    };
    let config_path = var("ROLLCALL_CONFIG")["value"].as_str().unwrap();
    let dir = Path::new(config_path).parent().unwrap().to_str().unwrap();
    assert_eq!(config_path, format!("{dir}/shard-$(SHARD_INDEX).toml"));
    assert_eq!(mounted_from(dir)["configMap"]["name"], "rollcall-shards");
    assert!(
        file("deploy/kubernetes/sharded.yaml").contains(&format!(
            "kubectl create configmap rollcall-shards --from-file={SHARDS}/"
        )),
        "the manifest says how to make the ConfigMap from the shards' files"
    );
    let listen = shard_config(0).listen;
    assert_eq!(container["ports"][0]["containerPort"], listen.port());
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    let claim = set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap();
    let (_, data) = mounts.iter().find(|(name, _)| name == claim).unwrap();
    for i in 0..replicas {
        let store = shard_config(i).store.path;
        assert!(
            store.starts_with(data),
            "shard {i}'s store {} is on the pod's own volume",
            store.display()
        );
    }
    let service = sharded("Service");
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "each shard is scraped on its own"
    );
    assert_eq!(service["spec"]["ports"][0]["port"], listen.port());
    assert_eq!(set["spec"]["serviceName"], service["metadata"]["name"]);
}

#[test]
fn each_shard_names_itself_publishes_to_the_one_topic_with_claims_and_polls_sources_no_other_does()
{
    let set = sharded("StatefulSet");
    let replicas = set["spec"]["replicas"].as_u64().unwrap() as usize;
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let secrets = volume_mounts(container)
        .into_iter()
        .find(|(name, _)| name == "secrets")
        .map(|(_, path)| path)
        .unwrap();
    let mut sinks = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    let mut urls = std::collections::BTreeSet::new();
    let mut sources = 0;
    for i in 0..replicas {
        let config = shard_config(i);
        assert_eq!(config.shard, Some(format!("shard-{i}")));
        assert!(
            config.listen.ip().is_unspecified(),
            "shard {i} is reachable"
        );
        let [SinkConfig::Kafka(kafka)] = config.sinks.as_slice() else {
            panic!("shard {i}: one Kafka sink: {:?}", config.sinks);
        };
        assert!(kafka.claim_sources, "shard {i} claims its sources");
        sinks.insert((
            kafka.brokers.clone(),
            kafka.topic.clone(),
            kafka.claims_topic(),
        ));
        assert!(!config.sources.is_empty(), "shard {i} polls something");
        for source in &config.sources {
            let login = source.kind().login();
            assert!(
                names.insert(login.name.to_owned()),
                "{} in two shards",
                login.name
            );
            let url = rollcall::claim::normalize(login.url);
            assert!(urls.insert(url.clone()), "{url} in two shards");
            let password = login.password_file.expect("a password file");
            assert_eq!(
                password,
                Path::new(&secrets).join(login.name),
                "the Secret's key is the source's name"
            );
            sources += 1;
        }
    }
    assert_eq!(
        sinks.len(),
        1,
        "every shard publishes to one topic: {sinks:?}"
    );
    let included = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(SHARDS))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .matches('.')
                .count()
                == 2
        })
        .count();
    assert_eq!(
        sources, included,
        "every source file is some shard's, and holds one source"
    );
}
