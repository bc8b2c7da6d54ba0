//! The status page: server-rendered HTML that works without JavaScript, the
//! same data as JSON under `/api/` (for `bb status`), drain and undrain, and
//! Prometheus `/metrics`.

mod action_html;
mod browse;
mod charts;
mod html;
mod layout;

use crate::queue::BuildQueue;
use axum::Router;
use axum::extract::{Form, FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use bb_client::StorageBackend;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
struct WorkerForm {
    worker: String,
}

/// The path of an action's page showing the result kept at `result`.
pub(crate) fn action_page(action: &bb_util::Digest, instance: &str, result: &bb_util::Digest) -> String {
    layout::action_url(action, instance, Some(&result.to_string()))
}

/// What the pages read: the queue, and the storage behind it.
#[derive(Clone)]
struct Pages {
    queue: Arc<BuildQueue>,
    storage: Arc<dyn StorageBackend>,
}

impl FromRef<Pages> for Arc<BuildQueue> {
    fn from_ref(pages: &Pages) -> Self {
        pages.queue.clone()
    }
}

impl FromRef<Pages> for Arc<dyn StorageBackend> {
    fn from_ref(pages: &Pages) -> Self {
        pages.storage.clone()
    }
}

pub fn router(queue: Arc<BuildQueue>, storage: Arc<dyn StorageBackend>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/operation/{name}", get(operation_page))
        .route("/charts", get(charts_page))
        .route("/api/history", get(history_json))
        .route("/action/{function}/{hash}/{size}", get(browse::action))
        .route("/directory/{function}/{hash}/{size}", get(browse::directory))
        .route("/tree/{function}/{hash}/{size}", get(browse::tree))
        .route("/file/{function}/{hash}/{size}", get(browse::file))
        .route("/blob/{function}/{hash}/{size}", get(browse::blob))
        .route("/workers/drain", post(drain_form))
        .route("/workers/undrain", post(undrain_form))
        .route("/api/status", get(status_json))
        .route("/api/operations/{name}", get(operation_json))
        .route("/api/drain", post(drain_api))
        .route("/api/undrain", post(undrain_api))
        .with_state(Pages { queue, storage })
        .merge(bb_util::metrics::router())
}

async fn overview(
    State(queue): State<Arc<BuildQueue>>,
    Query(filter): Query<html::OperationFilter>,
) -> Html<String> {
    Html(html::overview(&queue.status(), &filter))
}

async fn charts_page(State(queue): State<Arc<BuildQueue>>) -> Html<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Html(charts::charts(&queue.history(), now))
}

async fn history_json(State(queue): State<Arc<BuildQueue>>) -> Json<crate::queue::QueueHistory> {
    Json(queue.history())
}

async fn operation_page(State(queue): State<Arc<BuildQueue>>, Path(name): Path<String>) -> Response {
    match queue.operation_detail(&name) {
        Some(detail) => Html(html::operation(&detail)).into_response(),
        None => (StatusCode::NOT_FOUND, Html(html::not_found(&name))).into_response(),
    }
}

async fn drain_form(State(queue): State<Arc<BuildQueue>>, Form(form): Form<WorkerForm>) -> Response {
    set_drained_redirect(&queue, &form.worker, true)
}

async fn undrain_form(State(queue): State<Arc<BuildQueue>>, Form(form): Form<WorkerForm>) -> Response {
    set_drained_redirect(&queue, &form.worker, false)
}

fn set_drained_redirect(queue: &BuildQueue, worker: &str, drained: bool) -> Response {
    if queue.set_drained(worker, drained) {
        Redirect::to("/").into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("no worker {worker:?}")).into_response()
    }
}

async fn status_json(State(queue): State<Arc<BuildQueue>>) -> Json<crate::queue::QueueStatus> {
    Json(queue.status())
}

async fn operation_json(State(queue): State<Arc<BuildQueue>>, Path(name): Path<String>) -> Response {
    match queue.operation_detail(&name) {
        Some(detail) => Json(detail).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no operation {name:?}")).into_response(),
    }
}

async fn drain_api(State(queue): State<Arc<BuildQueue>>, Query(form): Query<WorkerForm>) -> Response {
    set_drained_json(&queue, &form.worker, true)
}

async fn undrain_api(State(queue): State<Arc<BuildQueue>>, Query(form): Query<WorkerForm>) -> Response {
    set_drained_json(&queue, &form.worker, false)
}

fn set_drained_json(queue: &BuildQueue, worker: &str, drained: bool) -> Response {
    if queue.set_drained(worker, drained) {
        Json(serde_json::json!({ "worker": worker, "drained": drained })).into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("no worker {worker:?}")).into_response()
    }
}
