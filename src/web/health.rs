//! `GET /readyz`: 200 only when this process can do its job — the database
//! answers, its schema is current, and every background component (the
//! delivery engine; later the scheduler) runs; 503 with the reasons
//! otherwise. `/healthz` stays the liveness check: a process riding out a
//! database outage is alive, restarting it would not help.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::WebState;

/// A probe must answer quickly even when the database does not (a pool
/// waits up to its acquire timeout for a connection).
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn readyz(State(s): State<WebState>) -> Response {
    let mut problems = Vec::new();
    match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, s.app.schema_is_current()).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => problems.push(
            "database: migrations are not all applied; run `herald migrate` with this version"
                .to_owned(),
        ),
        Ok(Err(e)) => problems.push(format!("database: {e}")),
        Err(_) => problems.push(format!(
            "database: no answer within {}s",
            DATABASE_PROBE_TIMEOUT.as_secs()
        )),
    }
    problems.extend(s.app.readiness.problems());
    let components: serde_json::Map<String, serde_json::Value> = s
        .app
        .readiness
        .components()
        .into_iter()
        .map(|(name, state)| (name.to_owned(), state.to_string().into()))
        .collect();
    if problems.is_empty() {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready", "components": components })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "not ready",
                "problems": problems,
                "components": components,
            })),
        )
            .into_response()
    }
}
