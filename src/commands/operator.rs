//! The operator CLI: `tokenvend tenants …`, `tokenvend keys …`, `tokenvend token …`,
//! `tokenvend identity …` (in `identity`).
//!
//! It talks to a running service over its HTTP API (so it works the same against one
//! process or a fleet, and every change is authorised, validated and audited as any
//! other), with the caller key from `TOKENVEND_KEY`, or else the embedded default's
//! `admin.key` in the data directory.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::startup::ADMIN_KEY_FILE;

pub mod identity;

/// Where the service is and who is asking.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The running service's base URL.
    #[arg(
        long,
        env = "TOKENVEND_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// A caller key (default: the admin.key file in the data dir, if there is one).
    #[arg(
        long = "key",
        env = "TOKENVEND_KEY",
        hide_env_values = true,
        global = true
    )]
    pub key: Option<String>,
    /// Print the service's JSON answer instead of plain words.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TenantsCommand {
    /// Register a company's edX credentials, after checking them with edX (a token is
    /// fetched and kept; --no-verify skips the check). The client secret is read from
    /// TOKENVEND_CLIENT_SECRET or, when that is unset, from standard input (never from
    /// the command line, where other users could see it).
    Add(AddTenant),
    /// List tenants.
    List,
    /// Show one tenant and its token status.
    Show { id: String },
    /// Delete a tenant and its token.
    Rm { id: String },
}

#[derive(Debug, Clone, Args)]
pub struct AddTenant {
    /// Tenant id: lowercase letters, digits and '-'.
    pub id: String,
    /// Display name (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// The edX OAuth2 client id.
    #[arg(long)]
    pub client_id: String,
    /// The edX token endpoint (default: https://api.edx.org/oauth2/v1/access_token).
    #[arg(long)]
    pub token_url: Option<String>,
    /// The OAuth2 scope to ask for, space-separated.
    #[arg(long)]
    pub scope: Option<String>,
    /// jwt or bearer.
    #[arg(long)]
    pub token_type: Option<String>,
    /// The JWKS that signs this tenant's tokens (to check their signatures).
    #[arg(long)]
    pub jwks_url: Option<String>,
    /// Store the credentials without asking edX for a token first.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a caller key; it is printed once.
    Create {
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// A scope (repeat for several): admin, tenants:read, tenants:write, token:*,
        /// token:<tenant id> (an existing tenant), metrics.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List caller keys (never the keys themselves).
    List,
    /// Revoke a caller key by its id.
    Revoke { id: String },
}

/// A failed command, in plain words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OperatorError(String);

type Outcome = Result<(), OperatorError>;

struct Api {
    client: reqwest::Client,
    base: String,
    key: SecretString,
    json: bool,
}

impl Api {
    fn new(connection: &Connection, data_dir: &Path) -> Result<Self, OperatorError> {
        let key = match connection
            .key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            Some(key) => key.to_owned(),
            None => std::fs::read_to_string(data_dir.join(ADMIN_KEY_FILE))
                .map(|k| k.trim().to_owned())
                .map_err(|_| {
                    OperatorError(format!(
                        "no caller key: set TOKENVEND_KEY (or pass --key), or run where {} is",
                        data_dir.join(ADMIN_KEY_FILE).display()
                    ))
                })?,
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| OperatorError(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: connection.url.trim_end_matches('/').to_owned(),
            key: SecretString::from(key),
            json: connection.json,
        })
    }

    /// Sends a request; answers the JSON body of a success (or `Null` for 204), and turns
    /// a failure into plain words from its problem+json.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, OperatorError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method, &url)
            .bearer_auth(self.key.expose_secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            let why = if e.is_connect() {
                "connection refused or host unreachable; is it running? (set TOKENVEND_URL)"
            } else if e.is_timeout() {
                "no answer within 30 s"
            } else {
                "the request failed"
            };
            OperatorError(format!("cannot reach tokenvend at {}: {why}", self.base))
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let detail = body["detail"].as_str().unwrap_or("");
        let field = body["field"]
            .as_str()
            .map(|f| format!(" (field {f})"))
            .or_else(|| {
                body["upstream_error"]
                    .as_str()
                    .map(|code| format!(" (edX said {code}; --no-verify stores them anyway)"))
            })
            .unwrap_or_default();
        let hint = match status {
            StatusCode::UNAUTHORIZED => " Check TOKENVEND_KEY.",
            StatusCode::FORBIDDEN => " Use a key with that scope.",
            _ => "",
        };
        Err(OperatorError(format!(
            "{} {}: {detail}{field}.{hint}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error"),
        )))
    }

    /// Every item of a paged list, following `next_cursor` until it is `null`.
    async fn every_page(&self, path: &str) -> Result<Vec<Value>, OperatorError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}?limit=500&cursor={c}"),
                None => format!("{path}?limit=500"),
            };
            let page = self.call(Method::GET, &page_path, None).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// Prints `value` as JSON when asked to, otherwise the plain words `human` makes of it.
    fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{}", human(value));
        }
    }
}

/// An id as one URL path segment; anything that is not a plain id is refused here.
fn segment(id: &str) -> Result<&str, OperatorError> {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(id)
    } else {
        Err(OperatorError(format!("{id:?} is not a tenant or key id")))
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads the client secret from TOKENVEND_CLIENT_SECRET or one line of standard input.
fn client_secret() -> Result<String, OperatorError> {
    if let Ok(secret) = std::env::var("TOKENVEND_CLIENT_SECRET") {
        return Ok(secret.trim().to_owned());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("edX client secret (input is shown; prefer TOKENVEND_CLIENT_SECRET): ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| OperatorError(format!("cannot read the client secret: {e}")))?;
    let secret = line.trim().to_owned();
    if secret.is_empty() {
        return Err(OperatorError(
            "no client secret: set TOKENVEND_CLIENT_SECRET or pipe it on standard input".to_owned(),
        ));
    }
    Ok(secret)
}

pub async fn tenants(
    command: &TenantsCommand,
    connection: &Connection,
    data_dir: &Path,
) -> Outcome {
    let api = Api::new(connection, data_dir)?;
    match command {
        TenantsCommand::Add(add) => {
            let mut body = json!({
                "id": add.id,
                "name": add.name.clone().unwrap_or_else(|| add.id.clone()),
                "client_id": add.client_id,
                "client_secret": client_secret()?,
            });
            for (field, value) in [
                ("token_url", &add.token_url),
                ("scope", &add.scope),
                ("token_type", &add.token_type),
                ("jwks_url", &add.jwks_url),
            ] {
                if let Some(value) = value {
                    body[field] = json!(value);
                }
            }
            let path = if add.no_verify {
                "/tenants"
            } else {
                "/tenants?verify=true"
            };
            let created = api.call(Method::POST, path, Some(body)).await?;
            api.print(&created, |t| format!("added tenant {}", text(&t["id"])));
        }
        TenantsCommand::List => {
            let all = json!({ "items": api.every_page("/tenants").await? });
            api.print(&all, |all| {
                let items = all["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    return "no tenants".to_owned();
                }
                let mut out = format!("{:<24} {:<32} {}", "ID", "NAME", "TOKEN URL");
                for t in items {
                    out.push_str(&format!(
                        "\n{:<24} {:<32} {}",
                        text(&t["id"]),
                        text(&t["name"]),
                        t["token_url"].as_str().unwrap_or("(edX default)")
                    ));
                }
                out
            });
        }
        TenantsCommand::Show { id } => {
            let id = segment(id)?;
            let tenant = api
                .call(Method::GET, &format!("/tenants/{id}"), None)
                .await?;
            let status = api
                .call(Method::GET, &format!("/tenants/{id}/token/status"), None)
                .await?;
            let both = json!({ "tenant": tenant, "token_status": status });
            api.print(&both, |both| {
                let t = &both["tenant"];
                let s = &both["token_status"];
                let mut out = String::new();
                for (label, value) in [
                    ("id", &t["id"]),
                    ("name", &t["name"]),
                    ("client id", &t["client_id"]),
                    ("token url", &t["token_url"]),
                    ("scope", &t["scope"]),
                    ("token type", &t["token_type"]),
                    ("token state", &s["state"]),
                    ("expires at", &s["expires_at"]),
                    ("seconds left", &s["remaining_seconds"]),
                    ("next refresh", &s["next_refresh_at"]),
                    ("last error", &s["last_error"]["message"]),
                    ("upstream calls", &s["upstream_calls"]),
                ] {
                    out.push_str(&format!("{label:<15} {}\n", text(value)));
                }
                out.trim_end().to_owned()
            });
        }
        TenantsCommand::Rm { id } => {
            let id = segment(id)?;
            api.call(Method::DELETE, &format!("/tenants/{id}"), None)
                .await?;
            api.print(&json!({ "deleted": id }), |_| {
                format!("deleted tenant {id}")
            });
        }
    }
    Ok(())
}

pub async fn keys(command: &KeysCommand, connection: &Connection, data_dir: &Path) -> Outcome {
    let api = Api::new(connection, data_dir)?;
    match command {
        KeysCommand::Create { name, scopes } => {
            let created = api
                .call(
                    Method::POST,
                    "/api-keys",
                    Some(json!({ "name": name, "scopes": scopes })),
                )
                .await?;
            api.print(&created, |k| {
                format!(
                    "created key {} ({}); it is shown this once:\n{}",
                    text(&k["id"]),
                    k["scopes"]
                        .as_array()
                        .map(|s| s.iter().map(text).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default(),
                    text(&k["key"])
                )
            });
        }
        KeysCommand::List => {
            let list = json!({ "items": api.every_page("/api-keys").await? });
            api.print(&list, |list| {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    return "no caller keys (besides the bootstrap admin key)".to_owned();
                }
                let mut out = format!("{:<14} {:<24} {:<21} {}", "ID", "NAME", "CREATED", "SCOPES");
                for k in items {
                    out.push_str(&format!(
                        "\n{:<14} {:<24} {:<21} {}",
                        text(&k["id"]),
                        text(&k["name"]),
                        text(&k["created_at"]),
                        k["scopes"]
                            .as_array()
                            .map(|s| s.iter().map(text).collect::<Vec<_>>().join(" "))
                            .unwrap_or_default()
                    ));
                }
                out
            });
        }
        KeysCommand::Revoke { id } => {
            let id = segment(id)?;
            api.call(Method::DELETE, &format!("/api-keys/{id}"), None)
                .await?;
            api.print(&json!({ "revoked": id }), |_| format!("revoked key {id}"));
        }
    }
    Ok(())
}

/// Prints a tenant's token: just the token (for `$(tokenvend token acme)`), or the whole
/// answer with `--json`.
pub async fn token(
    tenant: &str,
    min_ttl: Option<u64>,
    connection: &Connection,
    data_dir: &Path,
) -> Outcome {
    let api = Api::new(connection, data_dir)?;
    let tenant = segment(tenant)?;
    let path = match min_ttl {
        Some(n) => format!("/tenants/{tenant}/token?min_ttl={n}"),
        None => format!("/tenants/{tenant}/token"),
    };
    let answer = api.call(Method::GET, &path, None).await?;
    api.print(&answer, |a| text(&a["access_token"]));
    Ok(())
}
