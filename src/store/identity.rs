//! Identity providers and identity mappings (workload identity): each change with its
//! audit entry in one transaction. A row read back becomes a domain type or an error.

use chrono::{DateTime, Utc};
use url::Url;

use super::backend::{Backend, Store};
use super::keys::AuditEntry;
use crate::domain::{
    parse_cidrs, parse_matches, IdentityMapping, IdentityProvider, ProviderKeys, ScopeSet, TenantId,
};

/// A provider as stored, with its creation time.
#[derive(Debug, Clone)]
pub struct StoredProvider {
    pub provider: IdentityProvider,
    pub created_at: DateTime<Utc>,
}

/// A mapping as stored (its scopes bound to tenants), with its creation time.
#[derive(Debug, Clone)]
pub struct StoredMapping {
    pub mapping: IdentityMapping,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ProviderRow {
    id: String,
    issuer: String,
    audience: String,
    jwks_url: Option<String>,
    jwks: Option<String>,
    max_lifetime_seconds: i32,
    subject_claim: String,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct MappingRow {
    id: String,
    provider: String,
    claims: String,
    scopes: String,
    cidrs: String,
    created_at: DateTime<Utc>,
}

fn unreadable(what: &str, id: &str, cause: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {what} {id:?} is unreadable: {cause}").into())
}

impl TryFrom<ProviderRow> for StoredProvider {
    type Error = sqlx::Error;

    fn try_from(row: ProviderRow) -> Result<Self, sqlx::Error> {
        let bad = |cause: String| unreadable("identity provider", &row.id, cause);
        let keys = match (&row.jwks_url, &row.jwks) {
            (Some(url), None) => {
                ProviderKeys::Url(Url::parse(url).map_err(|e| bad(e.to_string()))?)
            }
            (None, Some(set)) => {
                ProviderKeys::Inline(serde_json::from_str(set).map_err(|e| bad(e.to_string()))?)
            }
            _ => return Err(bad("neither or both of jwks_url and jwks".to_owned())),
        };
        Ok(Self {
            provider: IdentityProvider {
                id: TenantId::parse(&row.id).map_err(bad)?,
                issuer: row.issuer,
                audience: row.audience,
                keys,
                max_lifetime_seconds: u32::try_from(row.max_lifetime_seconds)
                    .map_err(|e| bad(e.to_string()))?,
                subject_claim: row.subject_claim,
            },
            created_at: row.created_at,
        })
    }
}

impl TryFrom<MappingRow> for StoredMapping {
    type Error = sqlx::Error;

    fn try_from(row: MappingRow) -> Result<Self, sqlx::Error> {
        let bad = |cause: String| unreadable("identity mapping", &row.id, cause);
        let claims = serde_json::from_str(&row.claims).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            mapping: IdentityMapping {
                id: TenantId::parse(&row.id).map_err(bad)?,
                provider: TenantId::parse(&row.provider).map_err(bad)?,
                matches: parse_matches(Some(claims)).map_err(|e| bad(e.to_string()))?,
                scopes: ScopeSet::parse_stored(&row.scopes).map_err(bad)?,
                cidrs: parse_cidrs(row.cidrs.split_whitespace().map(str::to_owned).collect())
                    .map_err(|e| bad(e.to_string()))?,
            },
            created_at: row.created_at,
        })
    }
}

const PROVIDER_COLUMNS: &str = "id, issuer, audience, jwks_url, jwks, max_lifetime_seconds, \
     subject_claim, created_at";
const MAPPING_COLUMNS: &str = "id, provider, claims, scopes, cidrs, created_at";

fn rows_into<R, T: TryFrom<R, Error = sqlx::Error>>(rows: Vec<R>) -> Result<Vec<T>, sqlx::Error> {
    rows.into_iter().map(T::try_from).collect()
}

impl Store {
    pub async fn insert_identity_provider(
        &self,
        p: &StoredProvider,
        audit: &AuditEntry,
    ) -> Result<(), sqlx::Error> {
        let provider = &p.provider;
        let jwks = provider
            .inline_jwks()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| sqlx::Error::Encode(e.into()))?;
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO identity_providers (id, issuer, audience, jwks_url, jwks, \
                 max_lifetime_seconds, subject_claim, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(provider.id.as_str())
            .bind(&provider.issuer)
            .bind(&provider.audience)
            .bind(provider.jwks_url().map(Url::as_str))
            .bind(&jwks)
            .bind(provider.max_lifetime_seconds as i32)
            .bind(&provider.subject_claim)
            .bind(p.created_at)
            .execute(&mut *tx)
            .await?;
            write_audit!(tx, audit)?;
            tx.commit().await
        })
    }

    pub async fn list_identity_providers(&self) -> Result<Vec<StoredProvider>, sqlx::Error> {
        let sql =
            format!("SELECT {PROVIDER_COLUMNS} FROM identity_providers ORDER BY created_at, id");
        let rows: Vec<ProviderRow> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows_into(rows)
    }

    /// Up to `limit` providers in creation order, after the position `after`.
    pub async fn list_identity_providers_page(
        &self,
        after: Option<&(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<StoredProvider>, sqlx::Error> {
        let (at, id) = after.cloned().unwrap_or_default();
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS} FROM identity_providers \
             WHERE created_at > $1 OR (created_at = $1 AND id > $2) \
             ORDER BY created_at, id LIMIT $3"
        );
        let rows: Vec<ProviderRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        rows_into(rows)
    }

    pub async fn get_identity_provider(
        &self,
        id: &str,
    ) -> Result<Option<StoredProvider>, sqlx::Error> {
        let sql = format!("SELECT {PROVIDER_COLUMNS} FROM identity_providers WHERE id = $1");
        let row: Option<ProviderRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(StoredProvider::try_from).transpose()
    }

    /// Deletes the provider and its mappings; `false` when there was none.
    pub async fn delete_identity_provider(
        &self,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<bool, sqlx::Error> {
        delete_audited!(
            self,
            ["DELETE FROM identity_mappings WHERE provider = $1"],
            "DELETE FROM identity_providers WHERE id = $1",
            id,
            audit
        )
    }

    /// Stores the mapping unless its provider is gone (`false`, nothing written).
    pub async fn insert_identity_mapping(
        &self,
        m: &StoredMapping,
        audit: &AuditEntry,
    ) -> Result<bool, sqlx::Error> {
        let mapping = &m.mapping;
        let claims = serde_json::Value::Object(mapping.match_object()).to_string();
        let cidrs = mapping
            .cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO identity_mappings (id, provider, claims, scopes, cidrs, created_at) \
                 SELECT $1, $2, $3, $4, $5, $6 \
                 WHERE EXISTS (SELECT 1 FROM identity_providers WHERE id = $2)",
            )
            .bind(mapping.id.as_str())
            .bind(mapping.provider.as_str())
            .bind(&claims)
            .bind(mapping.scopes.to_stored())
            .bind(&cidrs)
            .bind(m.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            write_audit!(tx, audit)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn list_identity_mappings(&self) -> Result<Vec<StoredMapping>, sqlx::Error> {
        let sql =
            format!("SELECT {MAPPING_COLUMNS} FROM identity_mappings ORDER BY created_at, id");
        let rows: Vec<MappingRow> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows_into(rows)
    }

    /// Up to `limit` mappings in creation order, after the position `after`.
    pub async fn list_identity_mappings_page(
        &self,
        after: Option<&(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<StoredMapping>, sqlx::Error> {
        let (at, id) = after.cloned().unwrap_or_default();
        let sql = format!(
            "SELECT {MAPPING_COLUMNS} FROM identity_mappings \
             WHERE created_at > $1 OR (created_at = $1 AND id > $2) \
             ORDER BY created_at, id LIMIT $3"
        );
        let rows: Vec<MappingRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        rows_into(rows)
    }

    pub async fn get_identity_mapping(
        &self,
        id: &str,
    ) -> Result<Option<StoredMapping>, sqlx::Error> {
        let sql = format!("SELECT {MAPPING_COLUMNS} FROM identity_mappings WHERE id = $1");
        let row: Option<MappingRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(StoredMapping::try_from).transpose()
    }

    pub async fn delete_identity_mapping(
        &self,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<bool, sqlx::Error> {
        delete_audited!(
            self,
            [],
            "DELETE FROM identity_mappings WHERE id = $1",
            id,
            audit
        )
    }
}
