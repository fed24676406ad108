//! `tokenvend identity …`: identity providers and mappings on a running service.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{segment, text, Api, Connection, OperatorError, Outcome};

#[derive(Debug, Clone, Subcommand)]
pub enum IdentityCommand {
    /// Identity providers: whose JWTs are trusted.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Identity mappings: which tokens of a provider get which scopes.
    #[command(subcommand)]
    Mappings(MappingsCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum ProvidersCommand {
    /// Trust a provider, its keys at --jwks-url or in --jwks-file (`-`: standard input,
    /// e.g. `kubectl get --raw /openid/v1/jwks | tokenvend identity providers add …`).
    Add(AddProvider),
    /// List providers.
    List,
    /// Stop trusting a provider (its mappings go with it).
    Delete { id: String },
}

#[derive(Debug, Clone, Args)]
pub struct AddProvider {
    /// Provider id: lowercase letters, digits and '-'.
    pub id: String,
    /// The exact `iss` of its tokens.
    #[arg(long)]
    pub issuer: String,
    /// The audience its tokens must name.
    #[arg(long)]
    pub audience: String,
    /// Where its JWK Set is published.
    #[arg(
        long,
        conflicts_with = "jwks_file",
        required_unless_present = "jwks_file"
    )]
    pub jwks_url: Option<String>,
    /// A file holding its JWK Set (`-` for standard input).
    #[arg(long)]
    pub jwks_file: Option<PathBuf>,
    /// The longest token lifetime accepted (default 3600).
    #[arg(long)]
    pub max_lifetime_seconds: Option<u32>,
    /// The claim naming the caller (default `sub`).
    #[arg(long)]
    pub subject_claim: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum MappingsCommand {
    /// Give the tokens of a provider whose claims match some scopes.
    Add(AddMapping),
    /// List mappings.
    List,
    /// Delete a mapping.
    Delete { id: String },
}

#[derive(Debug, Clone, Args)]
pub struct AddMapping {
    /// Mapping id: lowercase letters, digits and '-'.
    pub id: String,
    /// The provider's id.
    #[arg(long)]
    pub provider: String,
    /// CLAIM=VALUE, repeated: every one must hold. A claim starting with `/` is a JSON
    /// Pointer (`/kubernetes.io/namespace=jobs`); a value ending in `*` is a prefix.
    #[arg(long = "match", required = true)]
    pub matches: Vec<String>,
    /// A scope (repeat for several), as for keys but never admin.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// A CIDR the caller's address must be inside (repeat for several).
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
}

fn read_jwks(path: &Path) -> Result<Value, OperatorError> {
    let mut raw = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut raw).map(drop)
    } else {
        std::fs::read_to_string(path).map(|r| raw = r)
    };
    read.map_err(|e| OperatorError(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&raw)
        .map_err(|e| OperatorError(format!("{} is not JSON: {e}", path.display())))
}

fn matches(raw: &[String]) -> Result<Map<String, Value>, OperatorError> {
    raw.iter()
        .map(|m| {
            m.split_once('=')
                .map(|(claim, value)| (claim.to_owned(), Value::String(value.to_owned())))
                .ok_or_else(|| OperatorError(format!("--match {m:?} is not CLAIM=VALUE")))
        })
        .collect()
}

fn list_of(value: &Value) -> String {
    value
        .as_array()
        .map(|s| s.iter().map(text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub async fn run(command: &IdentityCommand, connection: &Connection, data_dir: &Path) -> Outcome {
    let api = Api::new(connection, data_dir)?;
    match command {
        IdentityCommand::Providers(ProvidersCommand::Add(p)) => {
            let mut body = json!({"id": p.id, "issuer": p.issuer, "audience": p.audience});
            match (&p.jwks_url, &p.jwks_file) {
                (Some(url), _) => body["jwks_url"] = json!(url),
                (None, Some(file)) => body["jwks"] = read_jwks(file)?,
                (None, None) => unreachable!("clap requires one"),
            }
            if let Some(max) = p.max_lifetime_seconds {
                body["max_lifetime_seconds"] = json!(max);
            }
            if let Some(claim) = &p.subject_claim {
                body["subject_claim"] = json!(claim);
            }
            let created = api
                .call(Method::POST, "/identity/providers", Some(body))
                .await?;
            api.print(&created, |p| {
                format!(
                    "trusted identity provider {} ({})",
                    text(&p["id"]),
                    text(&p["issuer"])
                )
            });
        }
        IdentityCommand::Providers(ProvidersCommand::List) => {
            let list = json!({ "items": api.every_page("/identity/providers").await? });
            api.print(&list, |list| {
                let mut out = format!(
                    "{:<20} {:<10} {:<45} {}",
                    "ID", "AUDIENCE", "ISSUER", "KEYS"
                );
                for p in list["items"].as_array().into_iter().flatten() {
                    let keys = p["jwks_url"].as_str().unwrap_or("inline");
                    out.push_str(&format!(
                        "\n{:<20} {:<10} {:<45} {keys}",
                        text(&p["id"]),
                        text(&p["audience"]),
                        text(&p["issuer"])
                    ));
                }
                out
            });
        }
        IdentityCommand::Providers(ProvidersCommand::Delete { id }) => {
            let id = segment(id)?;
            api.call(Method::DELETE, &format!("/identity/providers/{id}"), None)
                .await?;
            api.print(&json!({ "deleted": id }), |_| {
                format!("deleted identity provider {id} and its mappings")
            });
        }
        IdentityCommand::Mappings(MappingsCommand::Add(m)) => {
            let body = json!({"id": m.id, "provider": m.provider, "match": matches(&m.matches)?,
                              "scopes": m.scopes, "cidrs": m.cidrs});
            let created = api
                .call(Method::POST, "/identity/mappings", Some(body))
                .await?;
            api.print(&created, |m| {
                format!(
                    "created identity mapping {} ({}: {})",
                    text(&m["id"]),
                    text(&m["provider"]),
                    list_of(&m["scopes"])
                )
            });
        }
        IdentityCommand::Mappings(MappingsCommand::List) => {
            let list = json!({ "items": api.every_page("/identity/mappings").await? });
            api.print(&list, |list| {
                let mut out = format!(
                    "{:<20} {:<16} {:<30} {}",
                    "ID", "PROVIDER", "SCOPES", "MATCH"
                );
                for m in list["items"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n{:<20} {:<16} {:<30} {}",
                        text(&m["id"]),
                        text(&m["provider"]),
                        list_of(&m["scopes"]),
                        m["match"]
                    ));
                }
                out
            });
        }
        IdentityCommand::Mappings(MappingsCommand::Delete { id }) => {
            let id = segment(id)?;
            api.call(Method::DELETE, &format!("/identity/mappings/{id}"), None)
                .await?;
            api.print(&json!({ "deleted": id }), |_| {
                format!("deleted identity mapping {id}")
            });
        }
    }
    Ok(())
}
