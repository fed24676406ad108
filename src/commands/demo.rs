//! `tokenvend demo`: the service on a fresh embedded store, the project's local edX-like
//! issuer in the same process standing in for edX, three demo tenants (one whose edX
//! refuses it), a caller key, and ready-to-paste commands. No edX account needed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use edx_issuer::{Failure, Issuer};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::config::Settings;
use crate::crypto::MasterKey;
use crate::startup::Application;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo's store and keys in this directory (default: a temporary one,
    /// deleted on exit).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The demo tenants: id, name, token lifetime, and whether edX refuses its credentials.
const TENANTS: [(&str, &str, u64, bool); 3] = [
    ("acme", "Acme Corp", 3600, false),
    ("globex", "Globex Learning", 300, false),
    ("initech", "Initech (wrong secret)", 3600, true),
];

pub async fn run(
    args: &DemoArgs,
    mut settings: Settings,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("tokenvend-demo-")
                .tempdir()?;
            temp.path().to_owned()
        }
    };
    let issuer = Issuer::new(chrono::Utc::now);
    let edx = issuer
        .start()
        .await
        .context("start the local edX-like issuer")?;

    let admin_key = SecretString::from(format!("demo-admin-{}", uuid::Uuid::new_v4().simple()));
    settings.database_url = None;
    settings.data_dir = dir.clone();
    settings.master_key = Some(MasterKey::generate().0);
    settings.admin_key = Some(admin_key.clone());
    // The local issuer is plain HTTP on loopback.
    settings.allow_insecure_token_urls = true;
    let app = Application::build(settings).await?;
    let base = format!("http://{}", app.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));

    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(admin_key.expose_secret())
            .json(&body)
            .send()
    };
    for (id, name, lifetime, refused) in TENANTS {
        let client_id = format!("demo-{id}");
        let secret = format!("demo-secret-{}", uuid::Uuid::new_v4().simple());
        issuer.register(&client_id, &secret);
        issuer.configure(&client_id, |b| {
            b.lifetime = Duration::from_secs(lifetime);
            b.failure = refused.then_some(Failure::InvalidClient);
        });
        let resp = call(
            reqwest::Method::POST,
            "/tenants",
            json!({
                "id": id, "name": name, "client_id": client_id, "client_secret": secret,
                "token_url": edx.token_url(), "jwks_url": edx.jwks_url(), "scope": "read write",
            }),
        )
        .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "creating demo tenant {id}: {}",
            resp.status()
        );
        // Fetch each token now, so the dashboard starts with something to show.
        let _ = http
            .get(format!("{base}/tenants/{id}/token"))
            .bearer_auth(admin_key.expose_secret())
            .send()
            .await?;
    }
    let created: Value = call(
        reqwest::Method::POST,
        "/api-keys",
        json!({"name": "demo", "scopes": ["tenants:read", "token:*"]}),
    )
    .await?
    .json()
    .await?;
    let key = created["key"].as_str().context("the demo key")?.to_owned();

    let stored = if args.dir.is_some() {
        format!("kept in {}", dir.display())
    } else {
        format!("in {} (deleted on exit)", dir.display())
    };
    println!(
        "\
tokenvend demo is running: the service on an embedded SQLite store {stored},
with a local edX-like issuer standing in for edX at {issuer_url}.
Tenants: acme (1 h tokens), globex (5 min tokens, refreshed ahead), initech (edX refuses
its secret, so it shows as failing). The issuer also serves an edX-like API that echoes
what it receives: the proxy line below calls it with acme's token.

  dashboard:   {base}/dashboard   (paste the caller key)
  caller key:  {key}   (scopes tenants:read, token:*)

Try:
  curl -s {base}/tenants/acme/token -H 'Authorization: Bearer {key}'
  curl -s {base}/tokens/status -H 'Authorization: Bearer {key}'
  curl -s {base}/oauth2/access_token -d grant_type=client_credentials -d client_id=acme -d client_secret={key}
  curl -s {base}/tenants/acme/proxy/api/enterprise/v1/enterprise-customer/ -H 'Authorization: Bearer {key}'

Press Ctrl-C to stop.",
        issuer_url = edx.token_url(),
    );

    tokio::select! {
        () = stop => {}
        result = &mut server => {
            return result.context("the demo service task")?.map_err(Into::into);
        }
    }
    let _ = stop_tx.send(());
    server.await.context("the demo service task")??;
    println!("demo stopped");
    Ok(())
}
