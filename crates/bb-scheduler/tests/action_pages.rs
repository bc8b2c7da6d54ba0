//! The status page's pages of stored contents, rendered for real data by a
//! real scheduler: an action with a nested input tree and hostile names, a
//! cached result, a failed action found through its operation, blobs that
//! are gone or do not decode.

mod common;

use bb_client::{ActionCache, Source, StorageClient};
use bb_proto::buildbarn::remoteworker::current_state;
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use common::{SimWorker, TestFarm, config};
use prost::Message;

const LINUX: &[(&str, &str)] = &[("OSFamily", "linux")];
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>&.c";
const HOSTILE_OUTPUT: &str = "out <b>bold</b> & \"quoted\" <script>x</script>\n";

async fn put(farm: &TestFarm, data: &[u8]) -> Digest {
    farm.upload(data).await
}

async fn put_message(farm: &TestFarm, message: &impl Message) -> Digest {
    put(farm, &message.encode_to_vec()).await
}

fn file_node(name: &str, digest: &Digest, executable: bool) -> reapi::FileNode {
    reapi::FileNode {
        name: name.into(),
        digest: Some(digest.to_proto()),
        is_executable: executable,
        ..Default::default()
    }
}

/// The body of an HTTP response, and the response's head.
fn split(response: &str) -> (&str, &str) {
    response.split_once("\r\n\r\n").unwrap_or((response, ""))
}

/// The first link on `page` starting with `prefix`, as a request path.
fn link(page: &str, prefix: &str) -> String {
    let start =
        page.find(&format!("href=\"{prefix}")).unwrap_or_else(|| panic!("no link to {prefix} in {page}"));
    let rest = &page[start + 6..];
    rest[..rest.find('"').unwrap()].replace("&amp;", "&")
}

/// No markup from the build reached the page unescaped.
fn assert_escaped(page: &str) {
    assert!(
        !page.contains("<script>") && !page.contains("<b>bold") && !page.contains("<img"),
        "unescaped markup in {page}"
    );
}

struct Stored {
    action: Digest,
    source: Digest,
}

/// An action whose input root nests `src/a b/` with a hostile file name and
/// a symlink, and a cached result with stdout, an output file and an output
/// directory.
async fn store_cached_action(farm: &TestFarm) -> Stored {
    let source = put(farm, b"int main() { return 0; } // <i>not markup</i>\n").await;
    let inner = reapi::Directory {
        files: vec![file_node("deep.txt", &put(farm, b"deep\n").await, false)],
        ..Default::default()
    };
    let src = reapi::Directory {
        files: vec![file_node(HOSTILE_NAME, &source, false)],
        directories: vec![reapi::DirectoryNode {
            name: "a b".into(),
            digest: Some(put_message(farm, &inner).await.to_proto()),
        }],
        symlinks: vec![reapi::SymlinkNode {
            name: "link".into(),
            target: "../<x>".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let root = reapi::Directory {
        directories: vec![reapi::DirectoryNode {
            name: "src".into(),
            digest: Some(put_message(farm, &src).await.to_proto()),
        }],
        ..Default::default()
    };
    let command = reapi::Command {
        arguments: vec!["sh".into(), "-c".into(), "cc src/*.c -o 'out/a b' && echo <done>".into()],
        environment_variables: vec![reapi::command::EnvironmentVariable {
            name: "CFLAGS".into(),
            value: "-O2 <x>".into(),
        }],
        output_paths: vec!["out/a b".into(), "out/dir".into()],
        working_directory: "".into(),
        ..Default::default()
    };
    let action = reapi::Action {
        command_digest: Some(put_message(farm, &command).await.to_proto()),
        input_root_digest: Some(put_message(farm, &root).await.to_proto()),
        platform: Some(reapi::Platform {
            properties: vec![reapi::platform::Property { name: "OSFamily".into(), value: "linux".into() }],
        }),
        timeout: Some(prost_types::Duration { seconds: 90, nanos: 0 }),
        ..Default::default()
    };
    let action_digest = put_message(farm, &action).await;
    let tree = reapi::Tree {
        root: Some(reapi::Directory {
            files: vec![file_node("made.o", &source, true)],
            ..Default::default()
        }),
        children: vec![],
    };
    let result = reapi::ActionResult {
        exit_code: 0,
        stdout_digest: Some(put(farm, HOSTILE_OUTPUT.as_bytes()).await.to_proto()),
        output_files: vec![reapi::OutputFile {
            path: "out/a b".into(),
            digest: Some(source.to_proto()),
            is_executable: true,
            ..Default::default()
        }],
        output_directories: vec![reapi::OutputDirectory {
            path: "out/dir".into(),
            tree_digest: Some(put_message(farm, &tree).await.to_proto()),
            ..Default::default()
        }],
        execution_metadata: Some(reapi::ExecutedActionMetadata {
            worker: "w<1>".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    StorageClient::new(farm.client.clone()).update_action_result("", &action_digest, &result).await.unwrap();
    Stored { action: action_digest, source }
}

#[tokio::test]
async fn an_action_page_shows_command_inputs_and_cached_result() {
    let farm = TestFarm::start(config("")).await;
    let stored = store_cached_action(&farm).await;
    let url = format!("/action/sha256/{}/{}", stored.action.hash_hex(), stored.action.size());
    let response = farm.http_get(&url).await;
    let (head, page) = split(&response);
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    assert_escaped(page);
    for needle in [
        "sh -c &quot;cc src/*.c -o 'out/a b' &amp;&amp; echo &lt;done&gt;&quot;",
        "CFLAGS",
        "-O2 &lt;x&gt;",
        "out/dir",
        "OSFamily=linux",
        "90.000s",
        "Found in the Action Cache.",
        "w&lt;1&gt;",
        "out &lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;",
        "src/",
        "bb action download sha256:",
        "bb exec --input action-",
        "--env 'CFLAGS=-O2 &lt;x&gt;'",
    ] {
        assert!(page.contains(needle), "{needle:?} missing from {page}");
    }

    // The input root is browsable: src/, then the hostile name and a b/.
    let root = farm.http_get(&link(page, "/directory/")).await;
    assert!(root.contains("Directory /</h1>"), "{root}");
    let src = farm.http_get(&link(&root, "/directory/")).await;
    let (head, src) = split(&src);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_escaped(src);
    assert!(src.contains("&lt;img src=x onerror=alert(1)&gt;&amp;.c"), "{src}");
    assert!(src.contains("link</code> → <code>../&lt;x&gt;"), "{src}");
    assert!(src.contains("Directory /src"), "{src}");
    let deeper = farm.http_get(&link(src, "/directory/")).await;
    assert!(deeper.contains("deep.txt") && deeper.contains("Directory /src/a b"), "{deeper}");

    // A small text file is shown, escaped; its blob downloads as it is.
    let file = farm.http_get(&link(src, "/file/")).await;
    assert!(file.contains("// &lt;i&gt;not markup&lt;/i&gt;"), "{file}");
    let blob = farm.http_get(&link(&file, "/blob/")).await;
    let (head, body) = split(&blob);
    assert!(head.contains("content-type: application/octet-stream"), "{head}");
    assert!(
        head.contains("x-content-type-options: nosniff") && head.contains("content-security-policy: sandbox"),
        "{head}"
    );
    assert!(
        head.contains("content-disposition: attachment; filename=\"_img_src_x_onerror_alert_1___.c\""),
        "{head}"
    );
    assert_eq!(body, "int main() { return 0; } // <i>not markup</i>\n");

    // The output directory's Tree is listed with its file.
    let tree = farm.http_get(&link(page, "/tree/")).await;
    assert!(tree.contains("made.o") && tree.contains("executable"), "{tree}");
    let _ = stored.source;
}

#[tokio::test]
async fn a_failed_action_is_found_from_its_operation() {
    let farm = TestFarm::start(config("status_page_url = \"http://farm.example:7982/\"")).await;
    let action = farm.action(&["false"], LINUX, false).await;
    let mut stream = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let name = stream.message().await.unwrap().unwrap().name;
    let mut worker = SimWorker::new(&farm, "w1", LINUX);
    worker.take().await.unwrap();

    // What bb-worker does with a failure: the result into the CAS (not the
    // Action Cache), then Completed.
    let result = reapi::ActionResult {
        exit_code: 3,
        stderr_digest: Some(put(&farm, b"boom <err>\n").await.to_proto()),
        execution_metadata: Some(reapi::ExecutedActionMetadata { worker: "w1".into(), ..Default::default() }),
        ..Default::default()
    };
    let kept = Digest::of_message(DigestFunction::Sha256, &result);
    let blob = Source::Bytes(Bytes::from(result.encode_to_vec()));
    StorageClient::new(farm.client.clone()).upload("", vec![(kept, blob)]).await.unwrap();
    let response = reapi::ExecuteResponse {
        result: Some(result),
        status: Some(bb_util::status::rpc_ok()),
        ..Default::default()
    };
    let completed = current_state::executing::ExecutionState::Completed(response);
    worker.sync(SimWorker::executing(&action.to_proto(), completed)).await.unwrap();

    let operation = farm.http_get(&format!("/operation/{name}")).await;
    let action_link = link(&operation, "/action/");
    assert!(action_link.contains(&format!("result={}%2F{}", kept.hash_hex(), kept.size())), "{action_link}");
    // The client is told where to look, in the message Bazel prints.
    let done = common::collect(stream).await;
    let message = common::execute_response(done.last().unwrap()).message;
    assert_eq!(message, format!("Details of this action: http://farm.example:7982{action_link}"));
    let page = farm.http_get(&action_link).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for needle in ["Kept in the CAS as", "boom &lt;err&gt;", "<td class=\"bad\">3</td>", "false"] {
        assert!(page.contains(needle), "{needle:?} missing from {page}");
    }
    // The overview filters by outcome; the charts page draws the samples.
    let failed = farm.http_get("/?outcome=nonzero_exit").await;
    assert!(failed.contains(&name) && failed.contains("Operations (1 of 1)"), "{failed}");
    assert_eq!(link(&failed, "/action/"), action_link, "the overview links to the kept result too");
    let succeeded = farm.http_get("/?outcome=success&worker=w1").await;
    assert!(!succeeded.contains(&name) && succeeded.contains("Operations (0 of 1)"), "{succeeded}");
    let charts = farm.http_get("/charts").await;
    assert!(
        charts.starts_with("HTTP/1.1 200")
            && charts.contains("<svg")
            && charts.contains("Worker utilisation"),
        "{charts}"
    );
    let history = farm.http_get("/api/history").await;
    assert!(history.contains("\"sample_seconds\":10") && history.contains("\"busy_workers\":"), "{history}");

    // Without the link, the Action Cache is asked, which holds nothing.
    let plain = farm.http_get(&format!("/action/sha256/{}/{}", action.hash_hex(), action.size())).await;
    assert!(plain.contains("The Action Cache holds no result of this action."), "{plain}");
}

#[tokio::test]
async fn what_cannot_be_shown_is_a_page_that_says_why() {
    let farm = TestFarm::start(config("")).await;
    let gone = Digest::of(DigestFunction::Sha256, b"never uploaded");
    let page = |kind: &str, d: &Digest| format!("/{kind}/sha256/{}/{}", d.hash_hex(), d.size());

    let missing = farm.http_get(&page("action", &gone)).await;
    assert!(missing.starts_with("HTTP/1.1 404") && missing.contains("is not in the CAS"), "{missing}");
    assert!(farm.http_get(&page("blob", &gone)).await.starts_with("HTTP/1.1 404"));

    let garbage = put(&farm, b"\xff\xff\xff not a message").await;
    let undecodable = farm.http_get(&page("directory", &garbage)).await;
    assert!(
        undecodable.starts_with("HTTP/1.1 422") && undecodable.contains("does not decode as Directory"),
        "{undecodable}"
    );

    // An action whose Command and input root were evicted still shows.
    let action = reapi::Action {
        command_digest: Some(gone.to_proto()),
        input_root_digest: Some(gone.to_proto()),
        ..Default::default()
    };
    let action = put_message(&farm, &action).await;
    let partial = farm.http_get(&page("action", &action)).await;
    assert!(partial.starts_with("HTTP/1.1 200"), "{partial}");
    assert!(partial.contains("The Command") && partial.contains("The input root"), "{partial}");

    for bad in ["/action/sha256/xyz/1", "/action/md5/00/1", "/file/sha256/00/-1"] {
        let response = farm.http_get(bad).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{bad}: {response}");
    }
    let bad_instance = farm.http_get(&format!("{}?instance=main/blobs/x", page("action", &action))).await;
    assert!(bad_instance.starts_with("HTTP/1.1 400"), "{bad_instance}");
}
