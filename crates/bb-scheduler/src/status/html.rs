//! HTML of the live pages: the overview (queues, workers, operations) and
//! an operation. Forms do the drain and undrain, so nothing needs
//! JavaScript; maud escapes every value.

use super::layout::{self, Refresh, page};
use crate::queue::{OperationDetail, OperationSummary, QueueStatus};
use bb_client::status::{PlatformStatus, WorkerStatus};
use bb_util::{Digest, DigestFunction};
use maud::{Markup, html};
use serde::Deserialize;

/// A HASH/SIZE of the operation's digest function (its action's digest,
/// its stdout's), as a Digest.
fn digest_of(op: &OperationSummary, text: &str) -> Option<Digest> {
    layout::parse_hash_size(DigestFunction::from_name(&op.digest_function)?, text)
}

fn action_cell(op: &OperationSummary, result: Option<&str>) -> Markup {
    match digest_of(op, &op.action_digest) {
        Some(digest) => layout::digest_link(&digest, &layout::action_url(&digest, &op.instance_name, result)),
        None => html! { code { (op.action_digest) } },
    }
}

fn operation_row(op: &OperationSummary) -> Markup {
    html! {
        tr {
            td { a href=(layout::operation_url(&op.name)) { code { (op.name) } } }
            td { (op.instance_name) }
            td { (action_cell(op, op.uncached_result.as_deref())) }
            td { (op.stage) }
            td { (op.worker.as_deref().unwrap_or("")) }
            td { (op.attempts) }
            td { (op.exit_code.map(|c| c.to_string()).unwrap_or_default()) }
            td { (op.outcome.as_deref().unwrap_or("")) }
            td.bad { (op.status.as_deref().unwrap_or("")) }
        }
    }
}

fn queues(platforms: &[PlatformStatus]) -> Markup {
    html! {
        h2 { "Queues" }
        @if platforms.is_empty() {
            p { "Nothing is queued or running." }
        } @else {
            table {
                tr { th { "instance" } th { "platform" } th { "queued" } th { "executing" } th { "workers" } }
                @for p in platforms {
                    tr {
                        td { (p.instance_name) } td { code { (p.platform) } }
                        td { (p.queued) } td { (p.executing) } td { (p.workers) }
                    }
                }
            }
        }
    }
}

fn worker_row(w: &WorkerStatus) -> Markup {
    let (action, label) = if w.drained { ("undrain", "Undrain") } else { ("drain", "Drain") };
    html! {
        tr {
            td { code { (w.id) } }
            td { code { (w.platform) } }
            td { (w.state) }
            td {
                @if let Some(name) = &w.operation {
                    a href=(layout::operation_url(name)) { code { (w.action_digest.as_deref().unwrap_or("")) } }
                    br;
                    (w.phase.as_deref().unwrap_or(""))
                }
            }
            td { (format!("{:.1}s ago", w.last_seen_seconds_ago)) }
            td { (w.completed_actions) }
            td {
                form method="post" action=(format!("/workers/{action}")) {
                    input type="hidden" name="worker" value=(w.id);
                    button type="submit" { (label) }
                }
            }
        }
    }
}

fn workers(workers: &[WorkerStatus]) -> Markup {
    html! {
        h2 { "Workers (" (workers.len()) ")" }
        @if workers.is_empty() {
            p { "No worker is registered." }
        } @else {
            table {
                tr {
                    th { "worker" } th { "platform" } th { "state" } th { "operation" }
                    th { "last seen" } th { "completed" } th {}
                }
                @for w in workers { (worker_row(w)) }
            }
        }
    }
}

/// Which operations the overview lists (`?outcome=&instance=&worker=`);
/// empty fields match everything.
#[derive(Default, Deserialize)]
pub struct OperationFilter {
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    instance: String,
    #[serde(default)]
    worker: String,
}

impl OperationFilter {
    fn matches(&self, op: &OperationSummary) -> bool {
        let outcome = op.outcome.as_deref().unwrap_or("unfinished");
        (self.outcome.is_empty() || self.outcome == outcome)
            && (self.instance.is_empty() || self.instance == op.instance_name)
            && (self.worker.is_empty() || op.worker.as_deref().is_some_and(|w| w.contains(&self.worker)))
    }
}

const OUTCOMES: [&str; 7] =
    ["unfinished", "success", "nonzero_exit", "cache_hit", "timeout", "cancelled", "error"];

fn filter_form(filter: &OperationFilter) -> Markup {
    html! {
        form method="get" action="/" {
            label { "outcome " select name="outcome" {
                option value="" { "any" }
                @for outcome in OUTCOMES {
                    option value=(outcome) selected[filter.outcome == outcome] { (outcome) }
                }
            } }
            " " label { "instance " input name="instance" value=(filter.instance); }
            " " label { "worker " input name="worker" value=(filter.worker); }
            " " button type="submit" { "Filter" }
        }
    }
}

pub fn overview(status: &QueueStatus, filter: &OperationFilter) -> String {
    let shown: Vec<&OperationSummary> = status.operations.iter().filter(|op| filter.matches(op)).collect();
    let body = html! {
        (queues(&status.platforms))
        (workers(&status.workers))
        h2 { "Operations (" (shown.len()) " of " (status.operations.len()) ")" }
        (filter_form(filter))
        @if !shown.is_empty() {
            table {
                tr {
                    th { "operation" } th { "instance" } th { "action" } th { "stage" } th { "worker" }
                    th { "attempts" } th { "exit code" } th { "outcome" } th { "error" }
                }
                @for op in shown.iter().take(500) { (operation_row(op)) }
            }
        }
    };
    page("bb-scheduler", Refresh::Every10s, body)
}

/// A stream's digest, linking to its page, named for download as `name`.
fn stream_cell(op: &OperationSummary, digest: Option<&str>, name: &str) -> Markup {
    match digest.and_then(|text| digest_of(op, text)) {
        Some(digest) => layout::digest_link(&digest, &layout::file_url(&digest, &op.instance_name, name)),
        None => html! {},
    }
}

pub fn operation(detail: &OperationDetail) -> String {
    let s = &detail.summary;
    let plain: Vec<(&str, String)> = vec![
        ("instance", s.instance_name.clone()),
        ("stage", s.stage.clone()),
        ("platform", detail.platform.clone()),
        ("worker", s.worker.clone().unwrap_or_default()),
        ("attempts", s.attempts.to_string()),
        ("priority", s.priority.to_string()),
        ("invocation", s.invocation.clone()),
        ("submitted by", s.submitter.clone()),
        ("clients watching", s.watchers.to_string()),
        ("timeout", detail.timeout_seconds.map(|t| format!("{t}s")).unwrap_or_default()),
        ("do not cache", detail.do_not_cache.to_string()),
        ("served from the cache", detail.cached_result.to_string()),
        ("queued", s.queued_at.clone()),
        ("started", detail.started_at.clone().unwrap_or_default()),
        ("completed", detail.completed_at.clone().unwrap_or_default()),
        ("exit code", s.exit_code.map(|c| c.to_string()).unwrap_or_default()),
        ("output files", detail.output_files.join(", ")),
        ("error", s.status.clone().unwrap_or_default()),
        ("message", detail.message.clone()),
    ];
    let body = html! {
        table {
            tr { th { "action" } td { (action_cell(s, s.uncached_result.as_deref())) } }
            @for (name, value) in &plain {
                tr { th { (name) } td { code { (value) } } }
            }
            tr { th { "stdout" } td { (stream_cell(s, detail.stdout_digest.as_deref(), "stdout")) } }
            tr { th { "stderr" } td { (stream_cell(s, detail.stderr_digest.as_deref(), "stderr")) } }
        }
    };
    page(&format!("Operation {}", s.name), Refresh::Every10s, body)
}

pub fn not_found(name: &str) -> String {
    let body = html! {
        p { "No operation " code { (name) } "; finished ones are kept only a while." }
    };
    page("Operation not found", Refresh::Never, body)
}
