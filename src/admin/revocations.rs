//! The revocation API (contract section 11), behind [`super::access`]: `POST /revocations` adds one (201 with its
//! id, or 422 naming the field), `GET /revocations` lists those in force, `DELETE /revocations/{id}` lifts one.
//! When the shared store (Redis) cannot take a change, the answer is 503: a revocation that only one replica
//! knows would look applied while the others still let the token through.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::{allow_only_any, json};
use crate::proxy::Runtime;
use crate::revoke::RevokeError;

/// Largest request body: a revocation is a few claims.
const MAX_BODY: usize = 64 * 1024;

/// Answers a request under `/revocations`.
pub async fn handle(req: Request<Incoming>, runtime: &Runtime) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let id = path.strip_prefix("/revocations").unwrap_or_default().trim_start_matches('/');
    let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy().into_owned();
    match (req.method().clone(), id.is_empty()) {
        (Method::GET, true) => list(runtime),
        (Method::POST, true) => add(req, runtime).await,
        (Method::DELETE, false) => delete(&id, runtime).await,
        (_, true) => allow_only_any(&[Method::GET, Method::POST]),
        (_, false) => allow_only_any(&[Method::DELETE]),
    }
}

fn list(runtime: &Runtime) -> Response<Full<Bytes>> {
    let list: Vec<_> = runtime.revocations.list().iter().map(|r| r.to_json()).collect();
    json(StatusCode::OK, &json!({"store": runtime.revocations.store_kind(), "revocations": list}))
}

async fn add(req: Request<Incoming>, runtime: &Runtime) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return refused(StatusCode::PAYLOAD_TOO_LARGE, "body", &format!("at most {MAX_BODY} bytes")),
    };
    match runtime.revocations.add(&body, &runtime.config).await {
        Ok(revocation) => {
            tracing::warn!(
                id = %revocation.id,
                issuer = %revocation.issuer,
                claims = %serde_json::to_string(&revocation.claims).unwrap_or_default(),
                reason = revocation.reason.as_deref().unwrap_or("-"),
                revoked_by = revocation.revoked_by.as_deref().unwrap_or("-"),
                "revocation added"
            );
            let mut shown = revocation.to_json();
            shown["store"] = json!(runtime.revocations.store_kind());
            json(StatusCode::CREATED, &shown)
        }
        Err(RevokeError::Field(e)) => refused(StatusCode::UNPROCESSABLE_ENTITY, &e.field, &e.message),
        Err(e @ RevokeError::Store(_)) => refused(StatusCode::SERVICE_UNAVAILABLE, "store", &e.to_string()),
    }
}

async fn delete(id: &str, runtime: &Runtime) -> Response<Full<Bytes>> {
    match runtime.revocations.delete(id).await {
        Ok(true) => {
            tracing::warn!(id, "revocation lifted");
            json(StatusCode::OK, &json!({"deleted": id}))
        }
        Ok(false) => refused(StatusCode::NOT_FOUND, "id", &format!("no revocation has id \"{id}\"")),
        Err(e) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "store",
            &format!("the shared revocation store is unavailable: {e}"),
        ),
    }
}

fn refused(status: StatusCode, field: &str, message: &str) -> Response<Full<Bytes>> {
    json(status, &json!({"error": format!("{field}: {message}"), "field": field}))
}
