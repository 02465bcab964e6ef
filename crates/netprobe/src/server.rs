//! The HTTP server: JSON API under `/api/v1`, `/healthz`, `/readyz` and `/metrics` (axum).
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status. Results and events are read from the store,
//! which the batching writer fills at most one flush interval (1 s) behind the live state;
//! diagnoses are written to it directly when they finish ([`crate::autodiag`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use store::Store;

use crate::check::{CheckRuntime, CheckView};
use crate::metrics::Metrics;

/// Default `limit` of the results/events/diagnoses endpoints.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest accepted `limit`.
pub const MAX_LIMIT: u32 = 10_000;

/// Refreshes metrics mirrored from elsewhere (store counters) just before a scrape.
pub type ScrapeHook = Box<dyn Fn(&Metrics) + Send + Sync>;

/// Everything the handlers read.
pub struct AppState {
    checks: Vec<Arc<CheckRuntime>>,
    by_name: HashMap<String, usize>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    before_scrape: Option<ScrapeHook>,
    diagnosis_enabled: bool,
    mesh: Option<Arc<crate::mesh::MeshState>>,
    inbound: Option<Arc<crate::farend::InboundService>>,
}

impl AppState {
    /// Builds the state; `before_scrape` refreshes metrics mirrored from elsewhere (store counters).
    pub fn new(
        checks: Vec<Arc<CheckRuntime>>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        before_scrape: Option<ScrapeHook>,
    ) -> Self {
        let by_name = checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.spec.name.clone(), i))
            .collect();
        AppState {
            checks,
            by_name,
            store,
            metrics,
            ready: AtomicBool::new(false),
            before_scrape,
            diagnosis_enabled: true,
            mesh: None,
            inbound: None,
        }
    }

    /// Whether `netprobe run` diagnoses checks that turn unhealthy (`diagnosis.enabled`, default
    /// true); only changes the message of a 404 from the diagnosis endpoints.
    pub fn with_diagnosis(mut self, enabled: bool) -> Self {
        self.diagnosis_enabled = enabled;
        self
    }

    /// Serves the mesh endpoints from `mesh` (without it they answer 404), the diagnoses of its
    /// pairs (`mesh.NODE.ADDRESS`) under the check endpoints, and the inbound question peers ask
    /// (`POST /api/v1/diagnose/inbound`, only with a mesh).
    pub fn with_mesh(mut self, mesh: Arc<crate::mesh::MeshState>) -> Self {
        self.inbound = Some(crate::farend::InboundService::new(mesh.view().node));
        self.mesh = Some(mesh);
        self
    }

    fn mesh(&self) -> Result<&Arc<crate::mesh::MeshState>, ApiError> {
        self.mesh.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "the mesh is not configured (no mesh: section)".to_owned(),
            )
        })
    }

    /// Marks the daemon ready (`/readyz` → 200) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    fn check(&self, name: &str) -> Result<&Arc<CheckRuntime>, ApiError> {
        self.by_name
            .get(name)
            .and_then(|&i| self.checks.get(i))
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no check named {name:?}")))
    }

    /// A check, or `None` for a mesh pair's diagnosis name (`mesh.…`, with a mesh configured).
    fn check_or_pair(&self, name: &str) -> Result<Option<&Arc<CheckRuntime>>, ApiError> {
        match self.check(name) {
            Ok(c) => Ok(Some(c)),
            Err(_) if self.mesh.is_some() && name.starts_with("mesh.") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/checks", get(list_checks))
        .route("/api/v1/checks/{name}", get(get_check))
        .route("/api/v1/checks/{name}/results", get(get_results))
        .route("/api/v1/checks/{name}/events", get(get_events))
        .route("/api/v1/checks/{name}/diagnosis", get(get_diagnosis))
        .route("/api/v1/checks/{name}/diagnoses", get(get_diagnoses))
        .route("/api/v1/isolations", get(get_isolations))
        .route("/api/v1/mesh", get(get_mesh))
        .route("/api/v1/mesh/{peer}/history", get(get_mesh_history))
        .route(crate::farend::INBOUND_PATH, post(post_inbound))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint".to_owned()) })
        .with_state(state)
}

/// An API error rendered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        ApiError { status, message }
    }

    fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// `GET /api/v1/mesh`: this agent's row of the matrix (latest round per pair) and its discovery state.
async fn get_mesh(
    State(st): State<Arc<AppState>>,
) -> Result<axum::Json<crate::mesh::MeshView>, ApiError> {
    Ok(axum::Json(st.mesh()?.view()))
}

/// `GET /api/v1/mesh/{peer}/history?limit=N`: for each address of `peer`, its newest `limit`
/// (default 100) rounds, oldest first, stored or not written yet.
async fn get_mesh_history(
    State(st): State<Arc<AppState>>,
    Path(peer): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let mesh = st.mesh()?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid limit {l:?}; expected a whole number from 1 to {MAX_LIMIT}"
                ))
            })?,
    };
    let history = mesh
        .history(&peer, limit)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no mesh peer named {peer:?}"),
            )
        })?;
    Ok(axum::Json(json!({ "peer": peer, "addresses": history })))
}

/// `POST /api/v1/diagnose/inbound`: the body is a [`crate::diagnose::InboundQuestion`]
/// (`{"source", "destination", "protocol": "icmp"|"tcp", "port"}`); the answer an
/// [`crate::diagnose::InboundAnswer`] (`{"node", "diagnosis"}`) — this host's trace of the flow
/// arriving from `source` at `destination` and of its reply. Errors: 404 without a mesh, 400 for
/// a bad question or a destination that is not an address of this host, 429 while another is
/// collected (for longer than [`crate::farend::QUEUE_WAIT`]), 500 if the host cannot be read.
async fn post_inbound(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use crate::farend::InboundError;
    let svc = st.inbound.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "the inbound diagnosis answers mesh peers only: the mesh is not configured (no mesh: section)"
                .to_owned(),
        )
    })?;
    match svc.answer(&body).await {
        Ok(a) => Ok(axum::Json(a).into_response()),
        Err(e @ (InboundError::BadRequest(_) | InboundError::NotLocal(..))) => {
            Err(ApiError::bad_request(e.to_string()))
        }
        Err(e @ InboundError::Busy) => Ok((
            [(header::RETRY_AFTER, "5")],
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        )
            .into_response()),
        Err(e @ InboundError::Failed(_)) => {
            tracing::warn!(error = %e, "Inbound diagnosis failed.");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ))
        }
    }
}

async fn list_checks(State(st): State<Arc<AppState>>) -> axum::Json<Vec<CheckView>> {
    axum::Json(st.checks.iter().map(|c| c.view()).collect())
}

/// `GET /api/v1/checks/{name}`: the live state plus a summary of the latest diagnosis.
#[derive(Serialize)]
struct CheckDetail {
    #[serde(flatten)]
    view: CheckView,
    /// `None` when the check was never diagnosed (or the store cannot be read right now).
    last_diagnosis: Option<DiagnosisSummary>,
}

/// The short form of a stored diagnosis.
#[derive(Serialize)]
struct DiagnosisSummary {
    at_ms: i64,
    conclusion: String,
    finding_ids: Vec<String>,
}

async fn get_check(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let view = st.check(&name)?.view();
    // One indexed row; a store that cannot answer must not hide the live state.
    let last_diagnosis = match st.store.latest_diagnosis(&name).await {
        Ok(d) => d.map(|d| DiagnosisSummary {
            at_ms: d.at_ms,
            conclusion: d.conclusion,
            finding_ids: d.finding_ids,
        }),
        Err(e) => {
            tracing::warn!(check = %name, error = %e, "Store read of the last diagnosis failed.");
            None
        }
    };
    Ok(axum::Json(CheckDetail {
        view,
        last_diagnosis,
    })
    .into_response())
}

/// Why a check has no diagnosis, as a 404.
fn no_diagnosis(st: &AppState, check: &CheckRuntime) -> ApiError {
    let name = &check.spec.name;
    let message = if check.spec.kind == probe::Kind::Exec {
        format!("check {name:?} is an exec check: it has no network flow to diagnose")
    } else if !st.diagnosis_enabled {
        format!(
            "check {name:?} has no diagnosis: automatic diagnosis is off (diagnosis.enabled: false); \
             run `netprobe diagnose {}`",
            check.spec.target
        )
    } else {
        format!("check {name:?} has no diagnosis yet: one is taken when it turns unhealthy")
    };
    ApiError::new(StatusCode::NOT_FOUND, message)
}

async fn get_diagnosis(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let check = st.check_or_pair(&name)?;
    match st
        .store
        .latest_diagnosis(&name)
        .await
        .map_err(store_error)?
    {
        Some(d) => Ok(axum::Json(d).into_response()),
        None => Err(match check {
            Some(check) => no_diagnosis(&st, check),
            None => ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "mesh pair {name:?} has no diagnosis: one is taken when a pair loses every echo{}",
                    if st.diagnosis_enabled {
                        ""
                    } else {
                        " (automatic diagnosis is off: diagnosis.enabled: false)"
                    }
                ),
            ),
        }),
    }
}

async fn get_diagnoses(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    history(&st, &name, &params, History::Diagnoses).await
}

/// `since` (Unix ms, or a duration ago such as `15m`) and `limit` (1..=10000, default 100).
#[derive(Debug, PartialEq, Eq)]
struct Window {
    since_ms: Option<i64>,
    limit: u32,
}

fn parse_window(params: &HashMap<String, String>, now_ms: i64) -> Result<Window, ApiError> {
    if let Some(key) = params.keys().find(|k| *k != "since" && *k != "limit") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {key:?}; expected since, limit"
        )));
    }
    let since_ms = match params.get("since") {
        None => None,
        Some(s) => Some(match s.parse::<i64>() {
            Ok(ms) if ms >= 0 => ms,
            Ok(_) => {
                return Err(ApiError::bad_request(format!(
                    "since must not be negative, got {s}"
                )));
            }
            Err(_) => {
                let ago = probe::HumanDuration::parse(s).map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid since {s:?}: expected Unix milliseconds or a duration ago like 15m"
                    ))
                })?;
                now_ms
                    - i64::try_from(ago.0.as_millis())
                        .unwrap_or(i64::MAX)
                        .min(now_ms)
            }
        }),
    };
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid limit {s:?}: expected 1..={MAX_LIMIT}"
                )));
            }
        },
    };
    Ok(Window { since_ms, limit })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

#[derive(Clone, Copy)]
enum History {
    Results,
    Events,
    Diagnoses,
}

async fn history(
    st: &AppState,
    name: &str,
    params: &HashMap<String, String>,
    what: History,
) -> Result<Response, ApiError> {
    match what {
        History::Diagnoses => st.check_or_pair(name).map(|_| ())?,
        History::Results | History::Events => st.check(name).map(|_| ())?,
    }
    let w = parse_window(params, now_ms())?;
    let response = match what {
        History::Results => axum::Json(
            st.store
                .results(name, w.since_ms, w.limit)
                .await
                .map_err(store_error)?,
        )
        .into_response(),
        History::Events => axum::Json(
            st.store
                .events(name, w.since_ms, w.limit)
                .await
                .map_err(store_error)?,
        )
        .into_response(),
        History::Diagnoses => axum::Json(
            st.store
                .diagnoses(name, w.since_ms, w.limit)
                .await
                .map_err(store_error)?,
        )
        .into_response(),
    };
    Ok(response)
}

async fn get_results(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    history(&st, &name, &params, History::Results).await
}

async fn get_events(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    history(&st, &name, &params, History::Events).await
}

/// `GET /api/v1/isolations`: `netprobe isolate`/`release` records (who, when, reason, the exact
/// rules), newest first; `since` and `limit` as for the check histories.
async fn get_isolations(
    State(st): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let w = parse_window(&params, now_ms())?;
    let mut rows = st.store.isolations(w.limit).await.map_err(store_error)?;
    if let Some(since) = w.since_ms {
        rows.retain(|r| r.at_ms >= since);
    }
    Ok(axum::Json(rows).into_response())
}

fn store_error(e: store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "Store read failed.");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if st.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not ready".to_owned()).into_response()
    }
}

/// `/metrics`: OpenMetrics when the scraper asks for it (Prometheus does), else the Prometheus text
/// format 0.0.4.
async fn metrics(State(st): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(refresh) = &st.before_scrape {
        refresh(&st.metrics);
    }
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        (
            [(header::CONTENT_TYPE, ct)],
            st.metrics.encode_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            st.metrics.encode(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Without a mesh the inbound question is not answered, and a mesh pair's name is no check.
    #[tokio::test]
    async fn the_inbound_endpoint_needs_the_mesh() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            store::SqliteStore::open(&dir.path().join("s.db"))
                .await
                .unwrap(),
        );
        let app = router(Arc::new(AppState::new(
            Vec::new(),
            Arc::clone(&store),
            Arc::new(Metrics::new()),
            None,
        )));
        let body =
            r#"{"source": "198.51.100.1", "destination": "198.51.100.5", "protocol": "icmp"}"#;
        let req = axum::http::Request::post(crate::farend::INBOUND_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("mesh is not configured"),
            "{v}"
        );
        let req = axum::http::Request::get("/api/v1/checks/mesh.node-1.198.51.100.2/diagnosis")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        store.close().await;
    }

    #[test]
    fn window_parsing() {
        let now = 1_000_000;
        assert_eq!(
            parse_window(&params(&[]), now).unwrap(),
            Window {
                since_ms: None,
                limit: DEFAULT_LIMIT
            }
        );
        assert_eq!(
            parse_window(&params(&[("since", "5000"), ("limit", "7")]), now).unwrap(),
            Window {
                since_ms: Some(5000),
                limit: 7
            }
        );
        assert_eq!(
            parse_window(&params(&[("since", "10s")]), now)
                .unwrap()
                .since_ms,
            Some(990_000)
        );
        for bad in [
            ("since", "yesterday"),
            ("since", "-5"),
            ("limit", "0"),
            ("limit", "x"),
            ("limit", "10001"),
        ] {
            let err = parse_window(&params(&[bad]), now).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        assert!(
            parse_window(&params(&[("sinse", "1")]), now)
                .unwrap_err()
                .message
                .contains("sinse")
        );
    }
}
