//! What every status page shares: the frame around a page, and the links
//! between pages (path segments and query strings encoded here, once).

use bb_util::Digest;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but what RFC 3986 leaves unreserved is encoded in a segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em}\
    table{border-collapse:collapse;margin-bottom:1.5em}\
    th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
    th{background:#eee}code{font-size:.9em}form{margin:0}.bad{color:#a00}\
    pre{background:#f6f6f6;padding:.5em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}\
    ul.tree{list-style:none;padding-left:1.2em}td.n{text-align:right}";

/// Whether a page reloads itself (the live ones do; an action's does not).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Every10s,
    Never,
}

/// A whole page: `title` as its heading, `body` beneath, links home.
pub fn page(title: &str, refresh: Refresh, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                @if refresh == Refresh::Every10s {
                    meta http-equiv="refresh" content="10";
                }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                (body)
                p {
                    a href="/" { "overview" } " · " a href="/charts" { "charts" } " · " a href="/api/status" { "JSON" } " · " a href="/metrics" { "metrics" }
                }
            }
        }
    }
    .into_string()
}

/// `text` as one percent-encoded path segment.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

fn query(pairs: &[(&str, &str)]) -> String {
    let pairs = pairs.iter().filter(|(_, value)| !value.is_empty());
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    if query.is_empty() { query } else { format!("?{query}") }
}

/// `/KIND/FUNCTION/HASH/SIZE?instance=...&...`: the page of a digest.
fn digest_url(kind: &str, digest: &Digest, instance: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![("instance", instance)];
    pairs.extend_from_slice(extra);
    format!("/{kind}/{}/{}/{}{}", digest.function().name(), digest.hash_hex(), digest.size(), query(&pairs))
}

pub fn operation_url(name: &str) -> String {
    format!("/operation/{}", segment(name))
}

/// An action's page; `result` is where a result the Action Cache does not
/// hold was kept (HASH/SIZE in the CAS).
pub fn action_url(digest: &Digest, instance: &str, result: Option<&str>) -> String {
    digest_url("action", digest, instance, &[("result", result.unwrap_or(""))])
}

/// A Directory's page, `path` being where it sits in its tree.
pub fn directory_url(digest: &Digest, instance: &str, path: &str) -> String {
    digest_url("directory", digest, instance, &[("path", path)])
}

/// An output directory's Tree, shown whole.
pub fn tree_url(digest: &Digest, instance: &str, path: &str) -> String {
    digest_url("tree", digest, instance, &[("path", path)])
}

/// A file's page: its contents shown when small and text.
pub fn file_url(digest: &Digest, instance: &str, name: &str) -> String {
    digest_url("file", digest, instance, &[("name", name)])
}

/// The blob itself, as a download named `name`.
pub fn blob_url(digest: &Digest, instance: &str, name: &str) -> String {
    digest_url("blob", digest, instance, &[("name", name)])
}

/// `HASH/SIZE` (as digests are written on the pages and in the JSON) of
/// `function`, or `None` if it is not one.
pub fn parse_hash_size(function: bb_util::DigestFunction, text: &str) -> Option<Digest> {
    let (hash, size) = text.split_once('/')?;
    Digest::parse(function, hash, size.parse().ok()?).ok()
}

/// A digest as HASH/SIZE in code, linking to `url`.
pub fn digest_link(digest: &Digest, url: &str) -> Markup {
    html! { a href=(url) { code { (digest) } } }
}

/// A byte count a person reads ("1.5 KiB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_util::DigestFunction;

    #[test]
    fn links_encode_what_they_carry() {
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        let digest = Digest::of(DigestFunction::Sha256, b"x");
        let url = file_url(&digest, "main/ci", "a&b \"c\".txt");
        assert!(url.starts_with(&format!("/file/sha256/{}/1?", digest.hash_hex())), "{url}");
        assert!(url.ends_with("?instance=main%2Fci&name=a%26b+%22c%22.txt"), "{url}");
        assert_eq!(directory_url(&digest, "", ""), format!("/directory/sha256/{}/1", digest.hash_hex()));
    }

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
