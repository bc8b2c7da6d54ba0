//! The pages of what is stored: an action (its Command, input root and
//! result), a Directory, an output Tree, a file, and any blob as a download.
//! They read the CAS and the Action Cache of the instance named in
//! `?instance=`, which needs the `read` permission there: public pages show
//! the queue, never stored contents. What cannot be shown (a bad digest, a
//! blob evicted, a message that does not decode) is a page that says so.

use super::action_html::{self, ActionView, ResultView, Text};
use super::layout::{self, Refresh};
use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use bb_client::StorageBackend;
use bb_client::action_cache::Inline;
use bb_client::store::BlobStore;
use bb_proto::reapi;
use bb_util::auth::{Permission, Principal};
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use maud::html;
use prost::Message;
use serde::Deserialize;
use std::sync::Arc;

/// The largest message (Action, Command, Directory, Tree, ActionResult) a
/// page decodes; a larger blob is shown as a blob.
const MAX_MESSAGE: u64 = 64 << 20;
/// How much of a file or of an output stream is shown inline.
pub const INLINE_LIMIT: usize = 1 << 20;
/// Bytes per chunk of a download.
const DOWNLOAD_CHUNK: usize = 256 << 10;

/// `/KIND/{function}/{hash}/{size}`.
#[derive(Deserialize)]
pub struct DigestPath {
    function: String,
    hash: String,
    size: i64,
}

/// The query of a stored-content page.
#[derive(Default, Deserialize)]
pub struct Where {
    /// The instance whose CAS holds it.
    #[serde(default)]
    instance: String,
    /// Where a directory sits in its tree (shown, never resolved).
    #[serde(default)]
    path: String,
    /// A file's name, for its page and its download.
    #[serde(default)]
    name: String,
    /// Where a result the Action Cache does not hold is kept (HASH/SIZE).
    #[serde(default)]
    result: String,
}

/// Why a page cannot be shown, as a page with its HTTP status.
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Problem { status, title, detail: detail.into() }
    }

    fn missing(what: &str, digest: &Digest) -> Self {
        let detail = format!("The {what} {digest} is not in the CAS: it was evicted, or never uploaded.");
        Problem::new(StatusCode::NOT_FOUND, "Not in the CAS", detail)
    }

    fn storage(what: &str, error: impl std::fmt::Display) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Storage did not answer",
            format!("Reading the {what}: {error}"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = html! { p { (self.detail) } };
        (self.status, Html(layout::page(self.title, Refresh::Never, body))).into_response()
    }
}

type Page = Result<Response, Problem>;

/// The digest a page's path names.
fn parse(path: &DigestPath) -> Result<Digest, Problem> {
    let bad = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "Not a digest", detail);
    let function = DigestFunction::from_name(&path.function)
        .ok_or_else(|| bad(format!("{:?} is not a digest function this farm knows.", path.function)))?;
    Digest::parse(function, &path.hash, path.size).map_err(|e| bad(e.to_string()))
}

/// The instance's CAS, if the viewer may read it. A request that reached
/// no authentication (none is served so) may read nothing.
fn cas(
    storage: &dyn StorageBackend,
    principal: Option<&Principal>,
    instance: &str,
) -> Result<Arc<dyn BlobStore>, Problem> {
    if let Err(e) = bb_util::resource_name::validate_instance_name(instance) {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "Not an instance name", e.to_string()));
    }
    match principal {
        Some(principal) if principal.may(instance, Permission::Read) => Ok(storage.cas(instance)),
        Some(principal) => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!(
                "{} may not read the CAS of instance {instance:?}; sign in with a token that may.",
                principal.name()
            ),
        )),
        None => {
            Err(Problem::new(StatusCode::FORBIDDEN, "Not allowed", "This request was not authenticated."))
        }
    }
}

/// Up to `limit` bytes from the start of a blob.
async fn read_head(cas: &dyn BlobStore, digest: &Digest, what: &str, limit: usize) -> Result<Bytes, Problem> {
    let blob = cas.get(digest).await.map_err(|e| Problem::storage(what, e))?;
    let blob = blob.ok_or_else(|| Problem::missing(what, digest))?;
    let mut reader = blob.reader(0);
    let mut head = Vec::with_capacity(limit.min(digest.size() as usize));
    while head.len() < limit {
        match reader.next_chunk(limit - head.len()).await.map_err(|e| Problem::storage(what, e))? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => break,
        }
    }
    Ok(head.into())
}

/// A stored message, decoded.
pub async fn read_message<M: Message + Default>(
    cas: &dyn BlobStore,
    digest: &Digest,
    what: &str,
) -> Result<M, Problem> {
    if digest.size() > MAX_MESSAGE {
        let detail = format!("The {what} {digest} is larger than the {MAX_MESSAGE} bytes a page decodes.");
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Too large to show", detail));
    }
    let data = read_head(cas, digest, what, digest.size() as usize).await?;
    M::decode(data).map_err(|e| {
        let detail = format!("The blob {digest} does not decode as {what}: {e}.");
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Not readable", detail)
    })
}

/// What of a stored text is shown inline.
pub async fn read_text(cas: &dyn BlobStore, digest: &Digest, what: &str) -> Result<Text, Problem> {
    let head = read_head(cas, digest, what, INLINE_LIMIT).await?;
    Ok(Text::from_head(&head, digest.size()))
}

/// What every stored-content page starts from: the digest its path names,
/// the query, and the CAS of the instance it names, checked readable.
pub struct Stored {
    digest: Digest,
    query: Where,
    cas: Arc<dyn BlobStore>,
    storage: Arc<dyn StorageBackend>,
}

impl<S: Send + Sync> FromRequestParts<S> for Stored
where
    Arc<dyn StorageBackend>: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let bad = |e: &dyn std::fmt::Display| {
            Problem::new(StatusCode::BAD_REQUEST, "Not a page", e.to_string()).into_response()
        };
        let Path(path) = Path::<DigestPath>::from_request_parts(parts, state).await.map_err(|e| bad(&e))?;
        let Query(query) = Query::<Where>::from_request_parts(parts, state).await.map_err(|e| bad(&e))?;
        let digest = parse(&path).map_err(IntoResponse::into_response)?;
        let storage = Arc::<dyn StorageBackend>::from_ref(state);
        let principal = parts.extensions.get::<Principal>();
        let cas = cas(storage.as_ref(), principal, &query.instance).map_err(IntoResponse::into_response)?;
        Ok(Stored { digest, query, cas, storage })
    }
}

/// A digest of the function of `like`, from a message field.
fn field_digest(like: &Digest, digest: &Option<reapi::Digest>) -> Option<Digest> {
    Digest::from_proto(like.function(), digest.as_ref()?).ok()
}

pub async fn action(stored: Stored) -> Page {
    let Stored { digest, query, cas, storage } = stored;
    let action: reapi::Action = read_message(cas.as_ref(), &digest, "Action").await?;
    let command = match field_digest(&digest, &action.command_digest) {
        Some(d) => read_message::<reapi::Command>(cas.as_ref(), &d, "Command").await.map_err(|p| p.detail),
        None => Err("The Action names no valid command digest.".to_string()),
    };
    let input_root = match field_digest(&digest, &action.input_root_digest) {
        Some(d) => {
            read_message::<reapi::Directory>(cas.as_ref(), &d, "input root").await.map_err(|p| p.detail)
        }
        None => Err("The Action names no valid input root digest.".to_string()),
    };
    let result = find_result(storage.as_ref(), cas.as_ref(), &digest, &query).await;
    let view = ActionView { digest, instance: query.instance, action, command, input_root, result };
    Ok(Html(action_html::action(&view)).into_response())
}

/// The action's result: the one kept in the CAS that the link names, else
/// the Action Cache's, with its stdout and stderr.
async fn find_result(
    storage: &dyn StorageBackend,
    cas: &dyn BlobStore,
    action: &Digest,
    query: &Where,
) -> ResultView {
    let kept = (!query.result.is_empty()).then(|| {
        layout::parse_hash_size(action.function(), &query.result)
            .ok_or_else(|| format!("{:?} is not a digest.", query.result))
    });
    let (result, source) = match kept {
        Some(Ok(d)) => match read_message::<reapi::ActionResult>(cas, &d, "ActionResult").await {
            Ok(result) => {
                (result, format!("Kept in the CAS as {d}: the Action Cache holds no failed results."))
            }
            Err(problem) => return ResultView::Absent(problem.detail),
        },
        Some(Err(message)) => return ResultView::Absent(message),
        None => match storage.get_action_result(&query.instance, action, &Inline::default()).await {
            Ok(Some(result)) => (result, "Found in the Action Cache.".to_string()),
            Ok(None) => return ResultView::Absent("The Action Cache holds no result of this action.".into()),
            Err(e) => return ResultView::Absent(format!("The Action Cache did not answer: {}", e.message())),
        },
    };
    let stdout = stream_text(cas, action, &result.stdout_raw, &result.stdout_digest, "stdout").await;
    let stderr = stream_text(cas, action, &result.stderr_raw, &result.stderr_digest, "stderr").await;
    ResultView::Found { result: Box::new(result), source, stdout, stderr }
}

async fn stream_text(
    cas: &dyn BlobStore,
    action: &Digest,
    raw: &[u8],
    digest: &Option<reapi::Digest>,
    what: &str,
) -> Option<Result<Text, String>> {
    if !raw.is_empty() {
        return Some(Ok(Text::from_head(&raw[..raw.len().min(INLINE_LIMIT)], raw.len() as u64)));
    }
    let digest = field_digest(action, digest)?;
    Some(read_text(cas, &digest, what).await.map_err(|p| p.detail))
}

pub async fn directory(stored: Stored) -> Page {
    let Stored { digest, query, cas, .. } = stored;
    let directory: reapi::Directory = read_message(cas.as_ref(), &digest, "Directory").await?;
    Ok(Html(action_html::directory_page(&digest, &query.instance, &query.path, &directory)).into_response())
}

pub async fn tree(stored: Stored) -> Page {
    let Stored { digest, query, cas, .. } = stored;
    let tree: reapi::Tree = read_message(cas.as_ref(), &digest, "Tree").await?;
    Ok(Html(action_html::tree_page(&digest, &query.instance, &query.path, &tree)).into_response())
}

pub async fn file(stored: Stored) -> Page {
    let Stored { digest, query, cas, .. } = stored;
    let text = read_text(cas.as_ref(), &digest, "file").await?;
    Ok(Html(action_html::file_page(&digest, &query.instance, &query.name, &text)).into_response())
}

/// Any blob as a download: never shown by the browser as a page of this
/// site (it could be HTML written by anyone who can upload).
pub async fn blob(stored: Stored) -> Page {
    let Stored { digest, query, cas, .. } = stored;
    let blob = cas.get(&digest).await.map_err(|e| Problem::storage("blob", e))?;
    let blob = blob.ok_or_else(|| Problem::missing("blob", &digest))?;
    let chunks = futures::stream::unfold(Some(blob.reader(0)), |reader| async move {
        let mut reader = reader?;
        match reader.next_chunk(DOWNLOAD_CHUNK).await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
            Ok(None) => None,
            // The length was promised: a short body tells the browser.
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(digest.size()));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    if let Ok(value) = HeaderValue::from_str(&attachment(&query.name, &digest)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `attachment` with the file name: ASCII letters, digits and `._-` as
/// they are (others become `_`), and the whole name in RFC 5987 form.
fn attachment(name: &str, digest: &Digest) -> String {
    let name =
        name.rsplit('/').next().filter(|n| !n.is_empty()).map_or_else(|| digest.hash_hex(), str::to_string);
    let plain: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{}", layout::segment(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_cannot_break_the_header() {
        let digest = Digest::of(DigestFunction::Sha256, b"x");
        assert_eq!(
            attachment("out/a \"b\";\r\nc.txt", &digest),
            "attachment; filename=\"a__b____c.txt\"; filename*=UTF-8''a%20%22b%22%3B%0D%0Ac.txt"
        );
        assert!(attachment("", &digest).contains(&digest.hash_hex()));
    }
}
