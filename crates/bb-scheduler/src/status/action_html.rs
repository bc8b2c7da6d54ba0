//! HTML of stored contents: an action with its Command, input root and
//! result; a Directory; an output Tree; a file. Every name, argument and
//! byte of output is escaped by maud; nothing a build wrote is markup.

use super::layout::{self, Refresh, human_size, page};
use bb_proto::bbrs::sandbox::CgroupResourceUsage;
use bb_proto::buildbarn::resourceusage::PosixResourceUsage;
use bb_proto::reapi;
use bb_util::Digest;
use maud::{Markup, html};
use prost::Message;
use std::collections::HashMap;
use std::time::SystemTime;

/// At most this many entries of an output Tree are listed (a Tree may
/// name one small directory a million times over).
const TREE_ENTRIES_SHOWN: usize = 5_000;

/// The start of a stored text, as shown.
pub struct Text {
    /// The bytes shown, as UTF-8 (invalid sequences replaced).
    pub shown: String,
    pub size: u64,
    /// Whether the bytes shown hold a NUL: binary, not shown as a file.
    pub binary: bool,
    /// Whether what is shown is all there is.
    pub complete: bool,
}

impl Text {
    pub fn from_head(head: &[u8], size: u64) -> Self {
        Text {
            shown: String::from_utf8_lossy(head).into_owned(),
            size,
            binary: head.contains(&0),
            complete: head.len() as u64 >= size,
        }
    }
}

/// An action's result, or why there is none to show.
pub enum ResultView {
    Found {
        result: Box<reapi::ActionResult>,
        /// Where it was found, for the reader.
        source: String,
        stdout: Option<Result<Text, String>>,
        stderr: Option<Result<Text, String>>,
    },
    Absent(String),
}

/// Everything an action page shows; what could not be read says why.
pub struct ActionView {
    pub digest: Digest,
    pub instance: String,
    pub action: reapi::Action,
    pub command: Result<reapi::Command, String>,
    pub input_root: Result<reapi::Directory, String>,
    pub result: ResultView,
}

fn digest_of(like: &Digest, digest: &Option<reapi::Digest>) -> Option<Digest> {
    Digest::from_proto(like.function(), digest.as_ref()?).ok()
}

/// Where the rerun lines put the action's inputs.
fn rerun_directory(action: &Digest) -> String {
    format!("action-{}", &action.hash_hex()[..12])
}

fn duration(d: &Option<prost_types::Duration>) -> String {
    match d {
        Some(d) => format!("{:.3}s", d.seconds as f64 + f64::from(d.nanos) / 1e9),
        None => String::new(),
    }
}

fn platform(properties: &[reapi::platform::Property]) -> Markup {
    html! {
        @for p in properties { code { (p.name) "=" (p.value) } br; }
    }
}

pub fn action(view: &ActionView) -> String {
    let a = &view.action;
    let platform_properties = match (&a.platform, &view.command) {
        (Some(p), _) if !p.properties.is_empty() => p.properties.as_slice(),
        (_, Ok(command)) => command.platform.as_ref().map_or(&[][..], |p| p.properties.as_slice()),
        _ => &[],
    };
    let body = html! {
        table {
            tr { th { "digest" } td { code { (view.digest.function().name()) " " (view.digest) } } }
            tr { th { "instance" } td { code { (view.instance) } } }
            tr { th { "platform" } td { (platform(platform_properties)) } }
            tr { th { "timeout" } td { (duration(&a.timeout)) } }
            tr { th { "do not cache" } td { (a.do_not_cache) } }
            @if !a.salt.is_empty() { tr { th { "salt" } td { code { (hex::encode(&a.salt)) } } } }
            tr { th { "command" } td { @if let Some(d) = digest_of(&view.digest, &a.command_digest) {
                (layout::digest_link(&d, &layout::blob_url(&d, &view.instance, "command.binpb")))
            } } }
        }
        h2 { "Command" }
        @match &view.command {
            Ok(command) => {
                (command_section(command))
                h3 { "Run it again" }
                p { "Fetch its input root, then run it on the farm from there:" }
                pre { code {
                    (bb_client::rerun::download_line(&view.instance, &view.digest, &rerun_directory(&view.digest)))
                    "\n"
                    (bb_client::rerun::exec_line(&view.instance, a, command, &rerun_directory(&view.digest)))
                } }
            },
            Err(why) => p.bad { (why) },
        }
        h2 { "Input root" }
        @match (&view.input_root, digest_of(&view.digest, &a.input_root_digest)) {
            (Ok(root), Some(d)) => {
                p { (layout::digest_link(&d, &layout::directory_url(&d, &view.instance, ""))) }
                (listing(&view.digest, &view.instance, "", root))
            },
            (Err(why), _) => p.bad { (why) },
            (Ok(_), None) => {},
        }
        h2 { "Result" }
        (result_section(view))
    };
    page(&format!("Action {}", view.digest), Refresh::Never, body)
}

fn command_section(command: &reapi::Command) -> Markup {
    let line = bb_client::rerun::shell_line(&command.arguments);
    #[allow(deprecated)]
    let outputs: Vec<&String> = if command.output_paths.is_empty() {
        command.output_files.iter().chain(&command.output_directories).collect()
    } else {
        command.output_paths.iter().collect()
    };
    html! {
        pre { code { (line) } }
        table {
            tr { th { "working directory" } td { code { (command.working_directory) } } }
            tr { th { "output paths" } td { @for o in &outputs { code { (o) } br; } } }
        }
        @if !command.environment_variables.is_empty() {
            table {
                tr { th { "variable" } th { "value" } }
                @for v in &command.environment_variables {
                    tr { td { code { (v.name) } } td { code { (v.value) } } }
                }
            }
        }
    }
}

/// A Directory's entries: subdirectories linking to their pages, files to
/// theirs (and their downloads), symlinks with their targets as written.
fn listing(like: &Digest, instance: &str, path: &str, directory: &reapi::Directory) -> Markup {
    let join = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}/{name}") };
    html! {
        table {
            tr { th { "name" } th { "size" } th { "executable" } th { "digest" } }
            @for d in &directory.directories {
                tr {
                    @match digest_of(like, &d.digest) {
                        Some(digest) => {
                            td { a href=(layout::directory_url(&digest, instance, &join(&d.name))) { code { (d.name) "/" } } }
                            td {} td {} td { code { (digest) } }
                        },
                        None => { td { code { (d.name) "/" } } td {} td {} td.bad { "no valid digest" } },
                    }
                }
            }
            @for f in &directory.files {
                tr { (file_cells(like, instance, &f.name, &f.digest, f.is_executable)) }
            }
            @for s in &directory.symlinks {
                tr { td { code { (s.name) } " → " code { (s.target) } } td {} td {} td {} }
            }
        }
    }
}

fn file_cells(
    like: &Digest,
    instance: &str,
    name: &str,
    digest: &Option<reapi::Digest>,
    executable: bool,
) -> Markup {
    let leaf = name.rsplit('/').next().unwrap_or(name);
    html! {
        @match digest_of(like, digest) {
            Some(d) => {
                td { a href=(layout::file_url(&d, instance, leaf)) { code { (name) } } }
                td.n { (human_size(d.size())) }
                td { @if executable { "yes" } }
                td { (layout::digest_link(&d, &layout::blob_url(&d, instance, leaf))) }
            },
            None => { td { code { (name) } } td {} td {} td.bad { "no valid digest" } },
        }
    }
}

fn result_section(view: &ActionView) -> Markup {
    let (result, source, stdout, stderr) = match &view.result {
        ResultView::Found { result, source, stdout, stderr } => (result, source, stdout, stderr),
        ResultView::Absent(why) => return html! { p { (why) } },
    };
    let metadata = result.execution_metadata.clone().unwrap_or_default();
    html! {
        p { (source) }
        table {
            tr { th { "exit code" } td.bad[result.exit_code != 0] { (result.exit_code) } }
            tr { th { "worker" } td { code { (metadata.worker) } } }
            @for (phase, time) in phases(&metadata) {
                tr { th { (phase) } td { (time) } }
            }
            @for any in &metadata.auxiliary_metadata {
                @for (name, value) in usage(any) {
                    tr { th { (name) } td { (value) } }
                }
            }
        }
        (outputs(&view.digest, &view.instance, result))
        @for (name, stream, digest) in [("stdout", stdout, &result.stdout_digest), ("stderr", stderr, &result.stderr_digest)] {
            h3 { (name) }
            (stream_section(&view.digest, &view.instance, name, stream, digest))
        }
    }
}

fn outputs(like: &Digest, instance: &str, result: &reapi::ActionResult) -> Markup {
    #[allow(deprecated)]
    let symlinks: Vec<&reapi::OutputSymlink> = result
        .output_symlinks
        .iter()
        .chain(&result.output_file_symlinks)
        .chain(&result.output_directory_symlinks)
        .collect();
    html! {
        h3 { "Outputs" }
        @if result.output_files.is_empty() && result.output_directories.is_empty() && symlinks.is_empty() {
            p { "None." }
        } @else {
            table {
                tr { th { "path" } th { "size" } th { "executable" } th { "digest" } }
                @for f in &result.output_files {
                    tr { (file_cells(like, instance, &f.path, &f.digest, f.is_executable)) }
                }
                @for d in &result.output_directories {
                    tr {
                        @match digest_of(like, &d.tree_digest) {
                            Some(tree) => {
                                td { a href=(layout::tree_url(&tree, instance, &d.path)) { code { (d.path) "/" } } }
                                td {} td {} td { code { (tree) } }
                            },
                            None => { td { code { (d.path) "/" } } td {} td {} td.bad { "no valid digest" } },
                        }
                    }
                }
                @for s in &symlinks {
                    tr { td { code { (s.path) } " → " code { (s.target) } } td {} td {} td {} }
                }
            }
        }
    }
}

fn stream_section(
    like: &Digest,
    instance: &str,
    name: &str,
    stream: &Option<Result<Text, String>>,
    digest: &Option<reapi::Digest>,
) -> Markup {
    let download = digest_of(like, digest).map(|d| layout::blob_url(&d, instance, name));
    html! {
        @match stream {
            None => p { "Empty." },
            Some(Err(why)) => p.bad { (why) },
            Some(Ok(text)) if text.size == 0 => p { "Empty." },
            Some(Ok(text)) => {
                pre { (text.shown) }
                @if !text.complete {
                    p { "The first " (human_size(super::browse::INLINE_LIMIT as u64)) " of " (human_size(text.size)) "." }
                }
            },
        }
        @if let Some(url) = download { p { a href=(url) { "download " (name) } } }
    }
}

fn timestamp(t: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    SystemTime::try_from((*t)?).ok()
}

/// How long each phase took, from the worker's timestamps.
fn phases(m: &reapi::ExecutedActionMetadata) -> Vec<(&'static str, String)> {
    let spans = [
        ("queued", &m.queued_timestamp, &m.worker_start_timestamp),
        ("fetching inputs", &m.input_fetch_start_timestamp, &m.input_fetch_completed_timestamp),
        ("running", &m.execution_start_timestamp, &m.execution_completed_timestamp),
        ("uploading outputs", &m.output_upload_start_timestamp, &m.output_upload_completed_timestamp),
        ("on the worker, in all", &m.worker_start_timestamp, &m.worker_completed_timestamp),
    ];
    spans
        .into_iter()
        .filter_map(|(name, from, to)| {
            let took = timestamp(to)?.duration_since(timestamp(from)?).ok()?;
            Some((name, format!("{:.3}s", took.as_secs_f64())))
        })
        .collect()
}

/// The resource usage the runner reported, as rows.
fn usage(any: &prost_types::Any) -> Vec<(&'static str, String)> {
    if let Ok(u) = any.to_msg::<PosixResourceUsage>() {
        let mut rows = vec![
            ("user CPU time", duration(&u.user_time)),
            ("system CPU time", duration(&u.system_time)),
            ("peak resident memory", human_size(u.maximum_resident_set_size.max(0) as u64)),
            ("page faults", u.page_faults.to_string()),
            (
                "context switches (voluntary, not)",
                format!("{}, {}", u.voluntary_context_switches, u.involuntary_context_switches),
            ),
        ];
        if !u.termination_signal.is_empty() {
            rows.push(("ended by signal", format!("SIG{}", u.termination_signal)));
        }
        return rows;
    }
    if let Ok(u) = any.to_msg::<CgroupResourceUsage>() {
        return vec![
            ("peak memory (cgroup)", human_size(u.memory_peak_bytes)),
            (
                "memory limit",
                if u.memory_limit_bytes == 0 { "none".into() } else { human_size(u.memory_limit_bytes) },
            ),
            ("out-of-memory kills", u.oom_kills.to_string()),
            ("peak processes", u.processes_peak.to_string()),
        ];
    }
    vec![("metadata", any.type_url.clone())]
}

pub fn directory_page(digest: &Digest, instance: &str, path: &str, directory: &reapi::Directory) -> String {
    let body = html! {
        p { code { (digest) } " · " a href=(layout::blob_url(digest, instance, "directory.binpb")) { "download" } }
        (listing(digest, instance, path, directory))
    };
    page(&format!("Directory /{path}"), Refresh::Never, body)
}

/// An output directory's Tree, listed whole (up to a bound).
pub fn tree_page(digest: &Digest, instance: &str, path: &str, tree: &reapi::Tree) -> String {
    let children: HashMap<Digest, &reapi::Directory> =
        tree.children.iter().map(|c| (Digest::of(digest.function(), &c.encode_to_vec()), c)).collect();
    let mut budget = TREE_ENTRIES_SHOWN;
    let root = tree.root.clone().unwrap_or_default();
    let body = html! {
        p { code { (digest) } " · " a href=(layout::blob_url(digest, instance, "tree.binpb")) { "download" } }
        (tree_level(digest, instance, path, &root, &children, &mut budget))
        @if budget == 0 { p.bad { "Only the first " (TREE_ENTRIES_SHOWN) " entries are shown." } }
    };
    page(&format!("Output directory {path}"), Refresh::Never, body)
}

fn tree_level(
    like: &Digest,
    instance: &str,
    path: &str,
    directory: &reapi::Directory,
    children: &HashMap<Digest, &reapi::Directory>,
    budget: &mut usize,
) -> Markup {
    let mut items = Vec::new();
    for d in &directory.directories {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let child = digest_of(like, &d.digest).and_then(|digest| children.get(&digest).copied());
        let inner = match child {
            Some(child) => tree_level(like, instance, &format!("{path}/{}", d.name), child, children, budget),
            None => html! { span.bad { "not in the Tree" } },
        };
        items.push(html! { li { code { (d.name) "/" } (inner) } });
    }
    for f in &directory.files {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let entry = match digest_of(like, &f.digest) {
            Some(d) => html! {
                a href=(layout::file_url(&d, instance, &f.name)) { code { (f.name) } }
                " " (human_size(d.size())) @if f.is_executable { ", executable" }
            },
            None => html! { code { (f.name) } span.bad { " no valid digest" } },
        };
        items.push(html! { li { (entry) } });
    }
    for s in &directory.symlinks {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        items.push(html! { li { code { (s.name) } " → " code { (s.target) } } });
    }
    html! { ul.tree { @for item in items { (item) } } }
}

pub fn file_page(digest: &Digest, instance: &str, name: &str, text: &Text) -> String {
    let body = html! {
        p {
            code { (digest) } " · " (human_size(text.size)) " · "
            a href=(layout::blob_url(digest, instance, name)) { "download" }
        }
        @if text.binary {
            p { "Binary contents: download the file to see them." }
        } @else {
            pre { (text.shown) }
            @if !text.complete {
                p { "The first " (human_size(super::browse::INLINE_LIMIT as u64)) " are shown." }
            }
        }
    };
    page(&format!("File {name}"), Refresh::Never, body)
}
