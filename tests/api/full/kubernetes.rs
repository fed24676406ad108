//! The Kubernetes manifests under `deploy/kubernetes`: each overlay rendered with
//! `kubectl kustomize`, every object validated against the Kubernetes JSON schemas by
//! kubernetes-validate (pinned in tests/python; strict, so a misspelt field fails), and
//! what the manifests promise asserted on the rendered objects. `pods` runs the rendered
//! containers' commands and settings with the real binary.

mod pods;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::process::Command;

use super::python;

/// The oldest Kubernetes the manifests are for, and the newest the pinned validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30", "1.37"];

/// The Secret every pod reads its keys from (README, "Running on Kubernetes").
const SECRET_NAME: &str = "tokenvend-secrets";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn overlay_dir(overlay: &str) -> PathBuf {
    repo().join("deploy/kubernetes/overlays").join(overlay)
}

/// `kubectl kustomize <overlay>`: the overlay as `kubectl apply -k` would send it.
async fn render(overlay: &str) -> String {
    let dir = overlay_dir(overlay);
    let output = match Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .await
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl is not installed: the manifest tests render deploy/kubernetes with \
             `kubectl kustomize` (kubectl 1.27 or newer; CI has it)"
        ),
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// What the validator said: every object of the files (as JSON) and every error.
struct Validated {
    objects: Vec<Value>,
    errors: Vec<String>,
}

async fn validate(files: &[PathBuf]) -> Validated {
    let bin = python::bin_dir().await;
    let mut command = Command::new(bin.join("python"));
    command.arg(python::scripts_dir().join("validate_kubernetes.py"));
    for version in KUBERNETES_VERSIONS {
        command.args(["-k", version]);
    }
    let output = command.args(files).output().await.unwrap();
    assert!(
        output.status.success(),
        "validate_kubernetes.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_owned())
            .collect()
    };
    Validated {
        objects: answer["objects"].as_array().unwrap().clone(),
        errors: strings(&answer["errors"]),
    }
}

/// The rendered overlay, every object of it valid against the Kubernetes schemas.
async fn rendered(overlay: &str) -> Objects {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{overlay}.yaml"));
    std::fs::write(&file, render(overlay).await).unwrap();
    let validated = validate(std::slice::from_ref(&file)).await;
    assert!(
        validated.errors.is_empty(),
        "overlays/{overlay} does not validate against the Kubernetes schemas:\n{}",
        validated.errors.join("\n")
    );
    Objects(validated.objects)
}

pub struct Objects(Vec<Value>);

impl Objects {
    fn kinds(&self) -> BTreeSet<String> {
        self.0
            .iter()
            .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), name(o)))
            .collect()
    }

    fn find(&self, kind: &str, name_: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name_)
    }

    pub fn get(&self, kind: &str, name_: &str) -> &Value {
        self.find(kind, name_)
            .unwrap_or_else(|| panic!("no {kind}/{name_} among {:?}", self.kinds()))
    }
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer} is missing in {value:#}"))
}

pub fn env<'a>(container: &'a Value, variable: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == variable)
        .map(|e| {
            e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{variable} has no plain value: {e}"))
        })
}

/// The port named `name` in the container.
fn container_port(container: &Value, port_name: &str) -> i64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port_name)
        .unwrap_or_else(|| panic!("no port named {port_name} in {}", container["ports"]))
        ["containerPort"]
        .as_i64()
        .unwrap()
}

/// The image's user and group, from the Dockerfile's `USER uid:gid`.
fn image_user() -> (i64, i64) {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the Dockerfile names its USER");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    (uid.parse().unwrap(), gid.parse().unwrap())
}

/// The hardening every pod of every overlay has: no root, no token of the service
/// account, a read-only root, no privilege to gain, no capabilities, the default seccomp
/// profile, and requests and a memory limit.
fn assert_hardened(pod: &Value, what: &str) {
    let (uid, gid) = image_user();
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "{what}: no API token"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{what}"
    );
    for container in pod["containers"].as_array().unwrap() {
        let sc = &container["securityContext"];
        let c = format!("{what}, container {}", container["name"]);
        assert_eq!(sc["runAsNonRoot"], true, "{c}");
        assert_eq!(sc["runAsUser"], uid, "{c}: the image's user");
        assert_eq!(sc["runAsGroup"], gid, "{c}: the image's group");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{c}"
        );
        assert!(sc["capabilities"].get("add").is_none(), "{c}: adds none");
        assert_ne!(sc["privileged"], true, "{c}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{c}");
        let resources = &container["resources"];
        for request in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
            assert!(
                resources.pointer(request).is_some(),
                "{c}: resources{request}"
            );
        }
        for e in container["env"].as_array().unwrap() {
            assert!(
                e.get("valueFrom").is_none(),
                "{c}: {} comes from elsewhere; secrets are read as files",
                e["name"]
            );
        }
    }
    if pod["securityContext"].get("fsGroup").is_some() {
        assert_eq!(pod["securityContext"]["fsGroup"], gid, "{what}");
    }
}

/// Each `*_FILE` variable of the container names a file that a read-only mount of the
/// tokenvend Secret provides with the expected key, and no other `*_FILE` is set; no
/// secret is given as a plain variable.
fn assert_secret_files(pod: &Value, container: &Value, expected: &[(&str, &str)], what: &str) {
    let given: BTreeSet<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .filter(|n| n.ends_with("_FILE"))
        .collect();
    let wanted: BTreeSet<&str> = expected.iter().map(|(v, _)| *v).collect();
    assert_eq!(given, wanted, "{what}: the *_FILE variables");
    for plain in [
        "TOKENVEND_DATABASE_URL",
        "DATABASE_URL",
        "TOKENVEND_MASTER_KEY",
        "TOKENVEND_ADMIN_KEY",
    ] {
        assert!(
            env(container, plain).is_none(),
            "{what}: {plain} is not a plain variable"
        );
    }
    for (variable, key) in expected {
        let path = env(container, variable).unwrap();
        let (mount, volume) = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                let dir = m["mountPath"].as_str().unwrap();
                let file = path.strip_prefix(dir)?.strip_prefix('/')?;
                let volume = pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == m["name"])
                    .unwrap();
                Some((m, (file, volume)))
            })
            .next()
            .unwrap_or_else(|| panic!("{what}: {variable}={path} is on no mounted volume"));
        let (file, volume) = volume;
        assert_eq!(
            mount["readOnly"], true,
            "{what}: {variable}'s mount is read-only"
        );
        let secret = &volume["secret"];
        assert_eq!(secret["secretName"], SECRET_NAME, "{what}: {variable}");
        let item = secret["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: the secret volume lists its items"))
            .iter()
            .find(|i| i["path"] == file)
            .unwrap_or_else(|| panic!("{what}: {variable}={path}: no secret item is {file}"));
        assert_eq!(item["key"], *key, "{what}: {variable} reads the key {key}");
    }
}

/// The probes: startup and readiness on `/readyz`, liveness on `/healthz`, all on the
/// port the service listens on (`TOKENVEND_LISTEN`, on every interface in a pod).
fn assert_probes(container: &Value, what: &str) {
    let listen = env(container, "TOKENVEND_LISTEN").expect("TOKENVEND_LISTEN is set");
    let port: i64 = listen
        .strip_prefix("0.0.0.0:")
        .expect("binds 0.0.0.0")
        .parse()
        .unwrap();
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        let get = at(container, &format!("/{probe}/httpGet"));
        assert_eq!(get["path"], path, "{what}: {probe}");
        let probed = match &get["port"] {
            Value::String(named) => container_port(container, named),
            other => other.as_i64().unwrap(),
        };
        assert_eq!(
            probed, port,
            "{what}: {probe} probes the port tokenvend listens on"
        );
    }
    if let Some(metrics) = env(container, "TOKENVEND_METRICS_LISTEN") {
        let port: i64 = metrics.strip_prefix("0.0.0.0:").unwrap().parse().unwrap();
        assert_eq!(
            container_port(container, "metrics"),
            port,
            "{what}: the metrics port"
        );
    }
}

/// The NetworkPolicy's egress as (protocol, port); every rule names its ports (a rule
/// without ports would allow every port).
fn egress_ports(policy: &Value) -> BTreeSet<(String, i64)> {
    let types = &policy["spec"]["policyTypes"];
    assert!(
        types.as_array().unwrap().contains(&"Egress".into()),
        "{types}"
    );
    assert!(
        types.as_array().unwrap().contains(&"Ingress".into()),
        "{types}"
    );
    let mut ports = BTreeSet::new();
    for rule in policy["spec"]["egress"].as_array().unwrap() {
        let rule_ports = rule["ports"].as_array();
        assert!(
            rule_ports.is_some_and(|p| !p.is_empty()),
            "an egress rule without ports: {rule}"
        );
        for p in rule_ports.unwrap() {
            ports.insert((
                p["protocol"].as_str().unwrap().to_owned(),
                p["port"].as_i64().unwrap(),
            ));
        }
    }
    ports
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

/// What both overlays share: the hardened server, its probes and settings, the Service
/// and NetworkPolicy selecting it, and no Secret rendered (secrets are made by hand).
fn assert_server(objects: &Objects, overlay: &str, secret_files: &[(&str, &str)]) -> Value {
    let deployment = objects.get("Deployment", "tokenvend").clone();
    let pod = at(&deployment, "/spec/template/spec");
    let labels = at(&deployment, "/spec/template/metadata/labels");
    let what = format!("overlays/{overlay} Deployment");
    assert!(labels_match(
        at(&deployment, "/spec/selector/matchLabels"),
        labels
    ));
    assert_hardened(pod, &what);
    let container = &pod["containers"][0];
    assert_probes(container, &what);
    assert_secret_files(pod, container, secret_files, &what);
    assert_eq!(
        env(container, "TOKENVEND_LOG_FORMAT"),
        Some("json"),
        "{what}"
    );
    assert_eq!(container["args"], serde_json::json!(["serve"]), "{what}");

    let service = objects.get("Service", "tokenvend");
    assert!(
        labels_match(&service["spec"]["selector"], labels),
        "the Service selects the pods"
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    let policy = objects.get("NetworkPolicy", "tokenvend");
    assert!(labels_match(
        at(policy, "/spec/podSelector/matchLabels"),
        labels
    ));
    let ingress_ports: Vec<&Value> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap())
        .map(|p| &p["port"])
        .collect();
    assert!(
        ingress_ports.contains(&&Value::from("http")),
        "ingress to the API port"
    );
    assert!(
        objects.0.iter().all(|o| o["kind"] != "Secret"),
        "overlays/{overlay} renders no Secret: {:?}",
        objects.kinds()
    );
    deployment
}

const POSTGRES_FILES: [(&str, &str); 3] = [
    ("TOKENVEND_DATABASE_URL_FILE", "database-url"),
    ("TOKENVEND_MASTER_KEY_FILE", "master-key"),
    ("TOKENVEND_ADMIN_KEY_FILE", "admin-key"),
];
const SQLITE_FILES: [(&str, &str); 2] = [
    ("TOKENVEND_MASTER_KEY_FILE", "master-key"),
    ("TOKENVEND_ADMIN_KEY_FILE", "admin-key"),
];

fn tcp_udp(list: &[(&str, i64)]) -> BTreeSet<(String, i64)> {
    list.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect()
}

#[tokio::test]
async fn the_postgres_overlay_is_a_valid_hardened_fleet_with_a_pdb_and_a_migration_job() {
    let objects = rendered("postgres").await;
    let kinds: Vec<String> = objects.kinds().into_iter().collect();
    assert_eq!(
        kinds,
        [
            "Deployment/tokenvend",
            "Job/tokenvend-migrate",
            "NetworkPolicy/tokenvend",
            "PodDisruptionBudget/tokenvend",
            "Service/tokenvend",
            "ServiceAccount/tokenvend",
        ]
    );
    let deployment = assert_server(&objects, "postgres", &POSTGRES_FILES);
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap();
    assert!(replicas >= 2, "a fleet: {replicas} replicas");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );

    let pdb = objects.get("PodDisruptionBudget", "tokenvend");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let labels = at(&deployment, "/spec/template/metadata/labels");
    assert!(labels_match(at(pdb, "/spec/selector/matchLabels"), labels));

    let job = objects.get("Job", "tokenvend-migrate");
    let pod = at(job, "/spec/template/spec");
    assert_hardened(pod, "the migration Job");
    let container = &pod["containers"][0];
    assert_eq!(container["command"], serde_json::json!(["tokenvend"]));
    assert_eq!(container["args"], serde_json::json!(["migrate"]));
    assert_eq!(
        container["image"],
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert_secret_files(pod, container, &POSTGRES_FILES[..2], "the migration Job");
    let policy = objects.get("NetworkPolicy", "tokenvend");
    assert!(
        labels_match(
            at(policy, "/spec/podSelector/matchLabels"),
            at(job, "/spec/template/metadata/labels")
        ),
        "the NetworkPolicy holds the Job's pod too"
    );
    assert_eq!(
        egress_ports(policy),
        tcp_udp(&[("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5432)]),
        "egress to DNS, HTTPS and PostgreSQL only"
    );
}

#[tokio::test]
async fn the_sqlite_overlay_is_one_valid_replica_on_a_volume_without_pdb_job_or_postgres() {
    let objects = rendered("sqlite").await;
    let kinds: Vec<String> = objects.kinds().into_iter().collect();
    assert_eq!(
        kinds,
        [
            "Deployment/tokenvend",
            "NetworkPolicy/tokenvend",
            "PersistentVolumeClaim/tokenvend-data",
            "Service/tokenvend",
            "ServiceAccount/tokenvend",
        ]
    );
    let deployment = assert_server(&objects, "sqlite", &SQLITE_FILES);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["strategy"],
        serde_json::json!({ "type": "Recreate" }),
        "the old pod lets go of the database before the new one opens it"
    );
    let pod = at(&deployment, "/spec/template/spec");
    let container = &pod["containers"][0];
    let data_dir = env(container, "TOKENVEND_DATA_DIR").expect("TOKENVEND_DATA_DIR is set");
    let claim = objects.get("PersistentVolumeClaim", "tokenvend-data");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["persistentVolumeClaim"]["claimName"] == name(claim))
        .expect("the claim is a volume of the pod");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the claim is mounted");
    let mount_path = Path::new(mount["mountPath"].as_str().unwrap());
    assert!(
        Path::new(data_dir).starts_with(mount_path),
        "the data dir {data_dir} is on the volume at {}",
        mount_path.display()
    );
    assert_ne!(mount["readOnly"], true);
    assert_eq!(
        egress_ports(objects.get("NetworkPolicy", "tokenvend")),
        tcp_udp(&[("UDP", 53), ("TCP", 53), ("TCP", 443)]),
        "egress to DNS and HTTPS only"
    );
}

#[tokio::test]
async fn the_validator_rejects_a_misspelt_field_and_a_kind_it_has_no_schema_for() {
    let dir = tempfile::tempdir().unwrap();
    let misspelt = render("sqlite")
        .await
        .replacen("readinessProbe:", "readinesProbe:", 1);
    let files = [
        dir.path().join("misspelt.yaml"),
        dir.path().join("unknown.yaml"),
    ];
    std::fs::write(&files[0], misspelt).unwrap();
    std::fs::write(
        &files[1],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
    )
    .unwrap();
    let validated = validate(&files).await;
    let errors = validated.errors.join("\n");
    assert!(
        errors.contains("'readinesProbe' was unexpected"),
        "{errors}"
    );
    assert!(errors.contains("Widget/w"), "{errors}");
    assert_eq!(
        validated.errors.len(),
        2 * KUBERNETES_VERSIONS.len(),
        "{errors}"
    );
}

#[tokio::test]
async fn the_example_secret_is_valid_and_its_placeholders_are_refused_by_tokenvend() {
    let example = repo().join("deploy/kubernetes/base/secret.example.yaml");
    let validated = validate(std::slice::from_ref(&example)).await;
    assert!(validated.errors.is_empty(), "{:?}", validated.errors);
    let secret = &validated.objects[0];
    assert_eq!(secret["metadata"]["name"], SECRET_NAME);
    let base =
        std::fs::read_to_string(repo().join("deploy/kubernetes/base/kustomization.yaml")).unwrap();
    assert!(
        !base
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("secret.example")),
        "the example is not among the base's resources"
    );
    for (variable, key) in SQLITE_FILES {
        let value = secret["stringData"][key].as_str().unwrap();
        let failure = pods::refused_setting(variable, value);
        assert!(
            failure.contains(variable),
            "tokenvend names {variable}: {failure}"
        );
    }
}
