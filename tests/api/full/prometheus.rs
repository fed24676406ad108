//! The shipped Prometheus rules (`deploy/prometheus/`) under `promtool`, and a real
//! Prometheus (Debian's `prometheus`, installed by `scripts/test`) scraping the real
//! binary with the README's scrape config: both targets up, series ingested, every rule
//! evaluated, every query of the Grafana dashboard accepted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::poll_until;
use crate::helpers::{tokenvend, unused_port, wait_healthy};

/// How long Prometheus may take to start, scrape twice and evaluate the rules.
const LIVE_LIMIT: Duration = Duration::from_secs(30);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

/// The path of `name` on `PATH`, or a failure saying how to get it.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is missing: scripts/test installs Debian's prometheus package")
        })
}

fn promtool(args: &[&str]) {
    let output = Command::new(tool("promtool"))
        .args(args)
        .current_dir(deploy_dir())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_shipped_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "tokenvend-rules.yml"]);
    promtool(&["test", "rules", "tokenvend-rules.test.yml"]);
}

/// A process of the test's own, killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The two addresses the service logs (API, then keyless `/metrics`); the rest of its
/// log is drained in the background.
fn logged_addresses(stderr: std::process::ChildStderr) -> (String, String) {
    use std::io::BufRead;
    let (found, addresses) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut api = None;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let address = |marker: &str| {
                line.split(marker)
                    .nth(1)
                    .and_then(|rest| rest.split("addr=").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned)
            };
            if let Some(found_api) = address("tokenvend listening") {
                api = Some(found_api);
            } else if let (Some(api), Some(metrics)) =
                (&api, address("serving /metrics without a key"))
            {
                let _ = found.send((api.clone(), metrics));
            }
        }
    });
    addresses
        .recv_timeout(Duration::from_secs(10))
        .expect("the service logs both addresses it listens on")
}

/// The README's Prometheus block (the first ```yaml block with `scrape_configs:`), with
/// its paths and targets replaced by this test's; each must be there to be replaced.
fn readme_config(replacements: &[(&str, &str)]) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut block = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.contains("scrape_configs:"))
        .expect("the README shows a scrape config")
        .to_owned();
    for (from, to) in replacements {
        assert!(
            block.contains(from),
            "the README's scrape config lacks {from}"
        );
        block = block.replace(from, to);
    }
    format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{block}")
}

/// Every `expr` of the Grafana dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/tokenvend-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() > 10);
    exprs
}

/// `GET {base}{path}`'s `data`, once Prometheus answers.
async fn api(client: &reqwest::Client, base: &str, path: &str) -> Option<Value> {
    let resp = client.get(format!("{base}{path}")).send().await.ok()?;
    let body: Value = resp.json().await.ok()?;
    (body["status"] == "success").then(|| body["data"].clone())
}

/// The instant vector `query` evaluates to.
async fn query(client: &reqwest::Client, base: &str, query: &str) -> Vec<Value> {
    let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
    api(client, base, &format!("/api/v1/query?query={encoded}"))
        .await
        .and_then(|data| data["result"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_both_listeners_with_the_readme_config_and_runs_the_rules() {
    let prometheus = tool("prometheus");
    let dir = tempfile::tempdir().unwrap();
    // 32 random bytes as hex: an admin key the start-up check accepts.
    let admin_key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut service = Killed(
        tokenvend(dir.path())
            .env("TOKENVEND_LISTEN", "127.0.0.1:0")
            .env("TOKENVEND_METRICS_LISTEN", "127.0.0.1:0")
            .env("TOKENVEND_ADMIN_KEY", &admin_key)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (address, metrics_address) = logged_addresses(service.0.stderr.take().unwrap());
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    wait_healthy(&client, &base, &mut service.0).await;

    let resp = client
        .post(format!("{base}/api-keys"))
        .bearer_auth(&admin_key)
        .json(&json!({"name": "prometheus", "scopes": ["metrics"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let key_file = dir.path().join("tokenvend.key");
    std::fs::write(&key_file, format!("{}\n", created["key"].as_str().unwrap())).unwrap();
    let resp = client
        .post(format!("{base}/tenants"))
        .bearer_auth(&admin_key)
        .json(&json!({"id": "acme", "name": "Acme", "client_id": "cid",
                      "client_secret": "scraped-secret-never-fetched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let rules = deploy_dir().join("tokenvend-rules.yml");
    let config = readme_config(&[
        (
            "/etc/prometheus/tokenvend-rules.yml",
            rules.to_str().unwrap(),
        ),
        ("/etc/prometheus/tokenvend.key", key_file.to_str().unwrap()),
        ("tokenvend:8080", &address),
        ("10.0.0.5:9091", &metrics_address),
    ]);
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, &config).unwrap();
    let log_file = dir.path().join("prometheus.log");
    let port = unused_port();
    let _prometheus = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(File::create(&log_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let prom = format!("http://127.0.0.1:{port}");
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();

    let mut targets = Value::Null;
    let up = poll_until(LIVE_LIMIT, async || {
        targets = api(&client, &prom, "/api/v1/targets")
            .await
            .unwrap_or(Value::Null);
        let active = targets["activeTargets"].as_array().cloned();
        active.is_some_and(|active| {
            active.len() == 2 && active.iter().all(|target| target["health"] == "up")
        })
    })
    .await;
    assert!(
        up.is_some(),
        "both targets up; targets: {targets:#}\nconfig:\n{config}\nprometheus log:\n{}",
        log()
    );

    for job in ["tokenvend", "tokenvend-metrics"] {
        let ingested = poll_until(LIVE_LIMIT, async || {
            !query(
                &client,
                &prom,
                &format!("tokenvend_tenants{{job=\"{job}\"}} == 1"),
            )
            .await
            .is_empty()
        })
        .await;
        assert!(ingested.is_some(), "job {job}: tokenvend_tenants is 1");
    }

    // A recording rule over a rate needs two scrapes and an evaluation.
    let recorded = poll_until(LIVE_LIMIT, async || {
        query(&client, &prom, "tokenvend:token_requests:rate5m")
            .await
            .len()
            == 4
    })
    .await;
    assert!(
        recorded.is_some(),
        "tokenvend:token_requests:rate5m has a value per result; prometheus log:\n{}",
        log()
    );

    // A recording rule over a gauge: the tenant that never fetched a token is `missing`.
    let by_state = poll_until(LIVE_LIMIT, async || {
        !query(
            &client,
            &prom,
            "tokenvend:tenants_by_state:max{state=\"missing\"} == 1",
        )
        .await
        .is_empty()
    })
    .await;
    assert!(
        by_state.is_some(),
        "tokenvend:tenants_by_state:max counts acme as missing"
    );

    // Every query of the Grafana dashboard is PromQL this Prometheus accepts.
    for expr in dashboard_exprs() {
        let expr = expr.replace("$job", ".+").replace("$__rate_interval", "1m");
        let encoded: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let resp = client
            .get(format!("{prom}/api/v1/query?query={encoded}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{expr}: {}", resp.text().await.unwrap());
    }

    // Every rule, recording or alerting, has been evaluated without an error.
    let mut groups = Value::Null;
    let evaluated = poll_until(LIVE_LIMIT, async || {
        groups = api(&client, &prom, "/api/v1/rules")
            .await
            .unwrap_or(Value::Null);
        let rules: Vec<Value> = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.len() > 20 && rules.iter().all(|rule| rule["health"] == "ok")
    })
    .await;
    assert!(
        evaluated.is_some(),
        "every shipped rule evaluates; rules: {groups:#}"
    );
    let firing = query(&client, &prom, "ALERTS").await;
    assert!(
        firing.is_empty(),
        "no alert pending or firing on a healthy service: {firing:?}"
    );
}
