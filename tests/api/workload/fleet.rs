//! Providers and mappings reach every replica on one PostgreSQL database as they change,
//! like caller keys: a deletion on one replica stops a token on another at once.

use reqwest::{Method, StatusCode};

use super::{setup, token, WORKER};
use crate::helpers::{eventually, spawn_app, Backend};

mod postgres {
    use super::*;

    #[tokio::test]
    async fn identity_changes_reach_the_other_replicas() {
        let app = spawn_app(Backend::Postgres).await;
        let (replica, _stop) = app.start_replica().await;
        let jwt = token(&app, WORKER);
        let on_replica = async || {
            app.client
                .get(format!("{replica}/tenants"))
                .bearer_auth(&jwt)
                .send()
                .await
                .unwrap()
                .status()
        };
        assert_eq!(on_replica().await, StatusCode::UNAUTHORIZED);
        setup(&app).await;
        eventually(
            "the replica trusts the provider and applies the mapping",
            async || on_replica().await == StatusCode::OK,
        )
        .await;
        let resp = app
            .admin(Method::DELETE, "/identity/mappings/jobs", None)
            .await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        eventually("the replica drops the mapping", async || {
            on_replica().await == StatusCode::FORBIDDEN
        })
        .await;
        let resp = app
            .admin(Method::DELETE, "/identity/providers/k8s", None)
            .await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        eventually("the replica forgets the provider", async || {
            on_replica().await == StatusCode::UNAUTHORIZED
        })
        .await;
    }
}
