//! The rendered containers run as the pods would run them, with the real binary: their
//! command and arguments, their environment, the Secret's keys as files where the
//! volumes put them, the writable volumes as directories, and everything else of the
//! file system (the read-only root) as a directory that must stay as it was. Addresses
//! bound on `0.0.0.0` are moved to free loopback ports; the probes then ask those.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;

use super::{at, env, rendered, repo};
use crate::helpers::{eventually_within, postgres_admin_url};
use crate::helpers::{terminate, tokenvend, unused_port};

/// Runs `tokenvend serve` with `variable` naming a file that holds `value`, and returns
/// what it said when it refused to start.
pub fn refused_setting(variable: &str, value: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, value).unwrap();
    let output = tokenvend(dir.path())
        .arg("serve")
        .env("TOKENVEND_LISTEN", "127.0.0.1:0")
        .env(variable, &file)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{variable}={value:?} is refused"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The image's working directory: the Dockerfile's last `WORKDIR`.
fn image_workdir() -> String {
    std::fs::read_to_string(repo().join("Dockerfile"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("WORKDIR "))
        .next_back()
        .expect("the Dockerfile sets WORKDIR")
        .trim()
        .to_owned()
}

/// A pod's file system and ports on this machine.
struct Sandbox {
    dir: TempDir,
    /// (mount path in the pod, directory here), the longest mount path first.
    mounts: Vec<(String, PathBuf)>,
    /// containerPort → the loopback port it was moved to.
    ports: HashMap<i64, u16>,
}

impl Sandbox {
    /// Lays out the container's volumes; `secret` holds the Secret's keys.
    fn new(pod: &Value, container: &Value, secret: &HashMap<&str, String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        let mut mounts = Vec::new();
        for mount in container["volumeMounts"].as_array().unwrap() {
            let volume_name = mount["name"].as_str().unwrap();
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == volume_name)
                .unwrap();
            let here = dir.path().join("volumes").join(volume_name);
            std::fs::create_dir_all(&here).unwrap();
            if let Some(source) = volume.get("secret") {
                let mode = source["defaultMode"].as_u64().unwrap_or(0o644);
                for item in source["items"].as_array().unwrap() {
                    let key = item["key"].as_str().unwrap();
                    let value = secret
                        .get(key)
                        .unwrap_or_else(|| panic!("the Secret has no key {key}: no pod starts"));
                    let file = here.join(item["path"].as_str().unwrap());
                    std::fs::write(&file, value).unwrap();
                    let mode = u32::try_from(mode).unwrap();
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
                }
            } else {
                assert!(
                    volume.get("emptyDir").is_some()
                        || volume.get("persistentVolumeClaim").is_some(),
                    "an unexpected volume: {volume}"
                );
            }
            mounts.push((mount["mountPath"].as_str().unwrap().to_owned(), here));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let sandbox = Self {
            dir,
            mounts,
            ports: HashMap::new(),
        };
        std::fs::create_dir_all(sandbox.path(&image_workdir())).unwrap();
        sandbox
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Where a path of the pod is here: on its volume, or else under the read-only root.
    fn path(&self, in_pod: &str) -> PathBuf {
        for (mount, here) in &self.mounts {
            if in_pod == mount {
                return here.clone();
            }
            if let Some(rest) = in_pod
                .strip_prefix(mount.as_str())
                .and_then(|r| r.strip_prefix('/'))
            {
                return here.join(rest);
            }
        }
        self.root().join(in_pod.trim_start_matches('/'))
    }

    /// A setting's value as it must be here: addresses on loopback, paths moved.
    fn value(&mut self, value: &str) -> String {
        if let Some(port) = value.strip_prefix("0.0.0.0:") {
            let port: i64 = port.parse().unwrap();
            let here = *self.ports.entry(port).or_insert_with(unused_port);
            return format!("127.0.0.1:{here}");
        }
        if value.starts_with('/') {
            return self.path(value).display().to_string();
        }
        value.to_owned()
    }

    /// Every file and directory under the read-only root.
    fn root_entries(&self) -> BTreeSet<PathBuf> {
        fn walk(dir: &Path, into: &mut BTreeSet<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, into);
                }
                into.insert(path);
            }
        }
        let mut entries = BTreeSet::new();
        walk(&self.root(), &mut entries);
        entries
    }

    /// The container's process, started as the pod would start it.
    fn start(&mut self, container: &Value) -> Child {
        let command = container["command"].as_array().unwrap();
        assert_eq!(command, &[Value::from("tokenvend")], "the image's binary");
        let workdir = self.path(&image_workdir());
        let mut cmd = tokenvend(&workdir);
        for arg in container["args"].as_array().unwrap() {
            cmd.arg(arg.as_str().unwrap());
        }
        for e in container["env"].as_array().unwrap() {
            let value = self.value(e["value"].as_str().unwrap());
            cmd.env(e["name"].as_str().unwrap(), value);
        }
        let log = std::fs::File::create(self.dir.path().join("log")).unwrap();
        cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The loopback URL of a port of the container, by name or number.
    fn url(&self, container: &Value, port: &Value, path: &str) -> String {
        let number = match port {
            Value::String(named) => super::container_port(container, named),
            other => other.as_i64().unwrap(),
        };
        let here = self
            .ports
            .get(&number)
            .unwrap_or_else(|| panic!("nothing listens on {number}"));
        format!("http://127.0.0.1:{here}{path}")
    }
}

/// Starts the Deployment's container, waits for each of its probes to answer 200, reads
/// `/metrics` on the metrics port and lists tenants with the admin key, then stops it
/// with SIGTERM as Kubernetes does: it must exit 0, and have written nothing outside its
/// writable volumes.
async fn serve_until_probed(deployment: &Value, secret: &HashMap<&str, String>) -> Sandbox {
    let pod = at(deployment, "/spec/template/spec");
    let container = &pod["containers"][0];
    let mut sandbox = Sandbox::new(pod, container, secret);
    let before = sandbox.root_entries();
    let mut child = sandbox.start(container);
    let client = reqwest::Client::new();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = at(container, &format!("/{probe}/httpGet"));
        let url = sandbox.url(container, &get["port"], get["path"].as_str().unwrap());
        eventually_within(
            Duration::from_secs(20),
            &format!("{probe} {url}"),
            async || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("tokenvend exited ({status}):\n{}", sandbox.log());
                }
                let resp = client.get(&url).send().await;
                resp.is_ok_and(|r| r.status() == StatusCode::OK)
            },
        )
        .await;
    }
    let metrics = sandbox.url(container, &"metrics".into(), "/metrics");
    let resp = client.get(&metrics).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "/metrics without a key on the metrics port"
    );
    assert!(resp.text().await.unwrap().contains("tokenvend_"));
    let tenants = sandbox.url(container, &"http".into(), "/tenants");
    let resp = client
        .get(&tenants)
        .bearer_auth(&secret["admin-key"])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the admin key from its file works"
    );

    terminate(&child);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM stops it cleanly ({status}):\n{}",
        sandbox.log()
    );
    assert_eq!(
        sandbox.root_entries(),
        before,
        "nothing written on the read-only root"
    );
    sandbox
}

fn generated_secret() -> HashMap<&'static str, String> {
    let key = || base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    HashMap::from([("master-key", key()), ("admin-key", key())])
}

#[tokio::test]
async fn the_sqlite_pod_starts_the_real_binary_keeps_its_database_on_the_volume_and_answers_its_probes(
) {
    let objects = rendered("sqlite").await;
    let deployment = objects.get("Deployment", "tokenvend");
    let sandbox = serve_until_probed(deployment, &generated_secret()).await;
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let data_dir = sandbox.path(env(container, "TOKENVEND_DATA_DIR").unwrap());
    assert!(data_dir.join("tokenvend.db").exists(), "{}", sandbox.log());
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o700,
        "tokenvend made its data directory on the volume"
    );
    for generated in ["master.key", "admin.key"] {
        assert!(
            !data_dir.join(generated).exists(),
            "{generated}: the keys come from the Secret"
        );
    }
}

#[tokio::test]
async fn the_postgres_migration_job_and_pods_run_the_real_binary_and_answer_their_probes() {
    let objects = rendered("postgres").await;
    let database = Database::create().await;
    let url = database.url.clone();
    let mut secret = generated_secret();
    secret.insert("database-url", url.to_string());

    let job = objects.get("Job", "tokenvend-migrate");
    let pod = at(job, "/spec/template/spec");
    let mut sandbox = Sandbox::new(pod, &pod["containers"][0], &secret);
    let mut child = sandbox.start(&pod["containers"][0]);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the Job's tokenvend migrate: {status}\n{}",
        sandbox.log()
    );
    let mut db = PgConnection::connect(url.as_str()).await.unwrap();
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(migrated > 0, "the Job applied the migrations");
    db.close().await.unwrap();

    serve_until_probed(objects.get("Deployment", "tokenvend"), &secret).await;
}

/// A PostgreSQL database of its own on the test server, dropped at the end.
struct Database {
    name: String,
    url: url::Url,
}

impl Database {
    async fn create() -> Self {
        let admin_url = postgres_admin_url();
        let name = format!("tokenvend_k8s_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url).await.unwrap();
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Self { name, url }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let drop = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        // Inside the test's runtime: block on a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&postgres_admin_url()).await {
                    let _ = conn.execute(drop.as_str()).await;
                }
            });
        })
        .join();
    }
}
