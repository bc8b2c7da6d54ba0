//! HTML rendering of the status page. Plain markup and a little CSS; forms
//! do the drain and undrain, so nothing needs JavaScript.

use crate::queue::{OperationDetail, OperationSummary, QueueStatus};
use std::fmt::Write;

/// Escapes text for HTML content and attribute values.
fn e(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         th,td{{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}}\
         th{{background:#eee}}code{{font-size:.9em}}form{{margin:0}}.bad{{color:#a00}}</style></head>\
         <body><h1>{}</h1>{body}<p><a href=\"/\">overview</a> · <a href=\"/api/status\">JSON</a> · \
         <a href=\"/metrics\">metrics</a></p></body></html>\n",
        e(title),
        e(title)
    )
}

fn operation_row(out: &mut String, op: &OperationSummary) {
    let _ = write!(
        out,
        "<tr><td><a href=\"/operation/{}\"><code>{}</code></a></td><td>{}</td><td><code>{}</code></td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
        segment(&op.name),
        e(&op.name),
        e(&op.instance_name),
        e(&op.action_digest),
        e(&op.stage),
        e(op.worker.as_deref().unwrap_or("")),
        op.attempts,
        op.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        e(op.status.as_deref().unwrap_or("")),
    );
}

pub fn overview(status: &QueueStatus) -> String {
    let mut body = String::from("<h2>Queues</h2>");
    if status.platforms.is_empty() {
        body.push_str("<p>Nothing is queued or running.</p>");
    } else {
        body.push_str(
            "<table><tr><th>instance</th><th>platform</th><th>queued</th><th>executing</th><th>workers</th></tr>",
        );
        for p in &status.platforms {
            let _ = write!(
                body,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&p.instance_name),
                e(&p.platform),
                p.queued,
                p.executing,
                p.workers
            );
        }
        body.push_str("</table>");
    }

    let _ = write!(body, "<h2>Workers ({})</h2>", status.workers.len());
    if status.workers.is_empty() {
        body.push_str("<p>No worker is registered.</p>");
    } else {
        body.push_str(
            "<table><tr><th>worker</th><th>platform</th><th>state</th><th>operation</th><th>last seen</th>\
             <th>completed</th><th></th></tr>",
        );
        for w in &status.workers {
            let operation = match &w.operation {
                Some(name) => format!(
                    "<a href=\"/operation/{}\"><code>{}</code></a><br>{}",
                    segment(name),
                    e(w.action_digest.as_deref().unwrap_or("")),
                    e(w.phase.as_deref().unwrap_or(""))
                ),
                None => String::new(),
            };
            let (action, label) = if w.drained { ("undrain", "Undrain") } else { ("drain", "Drain") };
            let _ = write!(
                body,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{operation}</td><td>{:.1}s ago</td>\
                 <td>{}</td><td><form method=\"post\" action=\"/workers/{action}\"><input type=\"hidden\" \
                 name=\"worker\" value=\"{}\"><button type=\"submit\">{label}</button></form></td></tr>",
                e(&w.id),
                e(&w.platform),
                e(&w.state),
                w.last_seen_seconds_ago,
                w.completed_actions,
                e(&w.id),
            );
        }
        body.push_str("</table>");
    }

    let _ = write!(body, "<h2>Operations ({})</h2>", status.operations.len());
    if !status.operations.is_empty() {
        body.push_str(
            "<table><tr><th>operation</th><th>instance</th><th>action</th><th>stage</th><th>worker</th>\
             <th>attempts</th><th>exit code</th><th>error</th></tr>",
        );
        for op in status.operations.iter().take(500) {
            operation_row(&mut body, op);
        }
        body.push_str("</table>");
    }
    page("bb-scheduler", &body)
}

pub fn operation(detail: &OperationDetail) -> String {
    let s = &detail.summary;
    let rows: Vec<(&str, String)> = vec![
        ("instance", s.instance_name.clone()),
        ("action digest", s.action_digest.clone()),
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
        ("stdout", detail.stdout_digest.clone().unwrap_or_default()),
        ("stderr", detail.stderr_digest.clone().unwrap_or_default()),
        ("output files", detail.output_files.join(", ")),
        ("error", s.status.clone().unwrap_or_default()),
        ("message", detail.message.clone()),
    ];
    let mut body = String::from("<table>");
    for (name, value) in rows {
        let _ = write!(body, "<tr><th>{name}</th><td><code>{}</code></td></tr>", e(&value));
    }
    body.push_str("</table>");
    page(&format!("Operation {}", s.name), &body)
}

pub fn not_found(name: &str) -> String {
    page(
        "Operation not found",
        &format!("<p>No operation <code>{}</code>; finished ones are kept only a while.</p>", e(name)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(e("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
