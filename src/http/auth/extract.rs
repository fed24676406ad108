//! The `Caller` and `Authorized<R>` extractors: a `tv_` key through the key ring, a JWT
//! through the identity registry; both take what they need from any state by `FromRef`.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use super::bearer::bearer;
use super::identity::{self, IdentityRegistry};
use super::{client_ip, Authorized, Caller, KeyRing, Refusal, RequiredScope};
use crate::http::error::ApiError;

impl<R, S> FromRequestParts<S> for Authorized<R>
where
    R: RequiredScope,
    Arc<KeyRing>: FromRef<S>,
    Arc<IdentityRegistry>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(R::scope())?;
        Ok(Authorized(caller, PhantomData))
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<KeyRing>: FromRef<S>,
    Arc<IdentityRegistry>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let key = bearer(&parts.headers).ok_or(ApiError::MissingCredentials)?;
        let client = client_ip(&parts.extensions);
        let ring = Arc::<KeyRing>::from_ref(state);
        let admitted = if identity::looks_like_jwt(key) {
            let identities = Arc::<IdentityRegistry>::from_ref(state);
            identity::admit(&identities, &ring, key, client).await?
        } else {
            ring.admit(key, client)
        };
        let entry = admitted.map_err(|refusal| match refusal {
            Refusal::Unknown => ApiError::InvalidCredentials,
            Refusal::TooManyFailures(wait) => ApiError::RateLimited {
                retry_after: wait,
                detail: "too many failed authentications from this address".to_owned(),
            },
            Refusal::OverRate(wait) => ApiError::RateLimited {
                retry_after: wait,
                detail: "this caller key is over its rate limit".to_owned(),
            },
        })?;
        tracing::Span::current().record("caller", entry.id.as_str());
        Ok(Caller(entry))
    }
}
