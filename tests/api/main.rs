//! The API test suite: the real app over real HTTP, every case on PostgreSQL and SQLite.

#![allow(clippy::unwrap_used)]

mod api_keys;
mod auth;
mod binary;
mod cluster;
mod contract;
mod dashboard;
mod errors;
mod fleet;
mod health;
mod helpers;
mod identity;
mod interop;
mod oauth;
mod operator;
mod outage;
mod python;
mod secrets;
mod tenants;
mod tokens;
