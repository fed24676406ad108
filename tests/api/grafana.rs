//! The shipped Grafana dashboard (`deploy/grafana/`) and Prometheus rules
//! (`deploy/prometheus/`) query only metrics a running tokenvend exposes, and every
//! alert's runbook link lands on a README paragraph.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{eventually, json_body, spawn_app, Backend};
use crate::webhooks::{register, Receiver};

fn repository_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Every `tokenvend_*` metric name in `text`, histogram suffixes stripped
/// (`tokenvend:…` recording-rule names are not metric names and are left out).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("tokenvend_") {
        let preceded_by_word =
            rest[..start].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_word {
            let name = &tail[..end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The PromQL of a Grafana dashboard: every `expr`, and the variables' `query` and
/// `definition` strings.
fn dashboard_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Value::String(query)) => {
                        out.push(query.clone());
                    }
                    _ => dashboard_queries(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| dashboard_queries(item, out)),
        _ => {}
    }
}

/// Whether `/metrics` exposes `name`: a series of it, or its `# TYPE` line (a counter's
/// without `_total`), so that a labelled family with no series yet counts.
fn exposed(metrics: &str, name: &str) -> bool {
    let family = name.strip_suffix("_total").unwrap_or(name);
    metrics.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            || line
                .strip_prefix("# TYPE ")
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|typed| typed == name || typed == family)
    })
}

const ENTERPRISE: &str = "/tenants/acme/proxy/api/enterprise/v1/enterprise-customer/";

/// A running app that has vended a token, proxied calls (one retried after a `401`) and
/// delivered a webhook, so that the labelled series appear; its `/metrics` text.
async fn busy_metrics() -> String {
    let app = spawn_app(Backend::Sqlite).await;
    let client = app.issuer_tenant("acme").await;
    json_body(app.get_token("acme").await, StatusCode::OK).await;
    let key = app.create_key(&["proxy:acme"]).await;
    let proxied = async || {
        let resp = app
            .client
            .get(app.url(ENTERPRISE))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    };
    proxied().await;
    // Past the minimum refresh interval, a revoked token is replaced and the call retried.
    app.advance(6);
    assert_eq!(app.issuer.revoke_tokens_of(&client), 1);
    proxied().await;

    let (receiver, url, _server) = Receiver::start().await;
    let (id, _) = register(&app, &url, &["*"]).await;
    let resp = app
        .admin(Method::POST, &format!("/webhooks/{id}/test"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    eventually("the test event delivered", async || {
        let resp = app
            .admin(Method::GET, &format!("/webhooks/{id}/deliveries"), None)
            .await;
        let body = json_body(resp, StatusCode::OK).await;
        receiver.count() == 1 && body["items"][0]["status"] == "delivered"
    })
    .await;
    app.metrics().await
}

/// Fails listing every name in `names` that `metrics` lacks.
fn assert_all_exposed(what: &str, names: &BTreeSet<String>, metrics: &str) {
    let missing: Vec<&String> = names.iter().filter(|n| !exposed(metrics, n)).collect();
    assert!(
        missing.is_empty(),
        "{what} uses metrics tokenvend does not expose: {missing:?}\n(checked: {names:?})"
    );
}

#[tokio::test]
async fn the_dashboard_and_the_rules_query_only_metrics_tokenvend_exposes() {
    let dashboard: Value =
        serde_json::from_str(&repository_file("deploy/grafana/tokenvend-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard["panels"], &mut queries);
    dashboard_queries(&dashboard["templating"], &mut queries);
    let dashboard_names = metric_names(&queries.join("\n"));
    let rules_names = metric_names(&repository_file("deploy/prometheus/tokenvend-rules.yml"));
    // The extraction itself: each file uses a good part of the metrics.
    assert!(dashboard_names.len() >= 12, "{dashboard_names:?}");
    assert!(rules_names.len() >= 10, "{rules_names:?}");

    let metrics = busy_metrics().await;
    assert!(!exposed(&metrics, "tokenvend_no_such_metric"));
    assert_all_exposed("the Grafana dashboard", &dashboard_names, &metrics);
    assert_all_exposed("the Prometheus rules", &rules_names, &metrics);
}

#[test]
fn the_dashboard_is_importable_with_a_prometheus_data_source_variable() {
    let dashboard: Value =
        serde_json::from_str(&repository_file("deploy/grafana/tokenvend-dashboard.json")).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!(dashboard["uid"], "tokenvend");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["name"] == "datasource"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        assert_eq!(
            panel["datasource"],
            json!({"type": "prometheus", "uid": "${datasource}"}),
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"], panel["datasource"]);
            assert!(target["expr"].as_str().is_some_and(|e| e.contains("$job")));
        }
    }
}

/// Each alert's `runbook_url` is `README.md#<its name in lower case>`, and the README
/// has that heading.
#[test]
fn every_alert_links_to_its_runbook_paragraph_in_the_readme() {
    let rules = repository_file("deploy/prometheus/tokenvend-rules.yml");
    let readme = repository_file("README.md");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in alerts {
        let anchor = alert.to_lowercase();
        assert!(
            rules.contains(&format!("runbook_url: README.md#{anchor}\n")),
            "{alert} links to README.md#{anchor}"
        );
        assert!(
            readme
                .lines()
                .any(|line| line.starts_with('#') && line.trim_start_matches('#').trim() == alert),
            "the README has a heading {alert} (anchor #{anchor})"
        );
    }
}
