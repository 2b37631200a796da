//! The KV API (`/v1/kv/*`) of a real dev agent, held to Consul's behaviour
//! (JSON field order, base64, statuses, headers, presence flags, cas, size
//! and key limits, blocking reads on one key or a prefix) and to the
//! issue's extras (every write's index, chunked bodies counted, one key's
//! blocking read not woken by another's write).
//!
//! The helpers here (requests with raw bodies, and requests written byte
//! for byte on a socket) serve the txn and cluster tests too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use trellis_testkit::{Agent, Resp, wait_until_async};

use crate::harness::trellis;

/// Longer than any blocking read these tests make, so the client never
/// gives up first.
const LONG: Duration = Duration::from_secs(40);

/// How soon a parked read must answer once its key changed: far below its
/// 10 s wait (so a timeout is never mistaken for a wake), with room for a
/// loaded two-core machine. Unloaded it takes milliseconds.
const WOKE_WITHIN: Duration = Duration::from_secs(3);

/// Consul's `kv_max_value_size`.
pub(crate) const MAX_VALUE: usize = 512 * 1024;

/// A dev agent that knows its leader, so writes are accepted at once.
pub(crate) async fn dev() -> Agent {
    let agent = trellis().dev().start();
    wait_until_async("the dev agent leads", Duration::from_secs(30), || async {
        match agent.leader_seen().await {
            Some(l) if !l.is_empty() => Ok(()),
            other => Err(format!("leader: {other:?}")),
        }
    })
    .await;
    agent
}

/// An HTTP client that outwaits blocking reads.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(LONG)
        .build()
        .expect("an HTTP client")
}

/// One request with `body` as raw bytes (sent with its Content-Length).
pub(crate) async fn call(agent: &Agent, method: &str, path: &str, body: &[u8]) -> Resp {
    call_url(&agent.url(path), method, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
}

/// [`call`] by URL, for tasks that do not hold the agent.
pub(crate) async fn call_url(url: &str, method: &str, body: &[u8]) -> Result<Resp, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let r = http()
        .request(method, url)
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Resp::read(r).await
}

/// GET `path`.
pub(crate) async fn get(agent: &Agent, path: &str) -> Resp {
    call(agent, "GET", path, b"").await
}

/// PUTs `value` at `/v1/kv/<key_and_query>`, asserts Consul's `true`, and
/// returns the write's `X-Consul-Index`.
pub(crate) async fn put_ok(agent: &Agent, key_and_query: &str, value: &[u8]) -> u64 {
    let r = call(agent, "PUT", &format!("/v1/kv/{key_and_query}"), value).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (200, "true"),
        "PUT {key_and_query}: {r:?}"
    );
    r.index
        .unwrap_or_else(|| panic!("PUT {key_and_query} answered without X-Consul-Index: {r:?}"))
}

/// The one entry a single-key GET answered.
pub(crate) fn entry(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "GET: {r:?}");
    let body = r.json();
    let list = body
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {}", r.text));
    assert_eq!(list.len(), 1, "one entry: {}", r.text);
    list[0].clone()
}

/// The entry of `key` as the agent has it now.
pub(crate) async fn read(agent: &Agent, key: &str) -> Value {
    entry(&get(agent, &format!("/v1/kv/{key}")).await)
}

/// The value of `key` as raw bytes, `None` when the key is missing.
pub(crate) async fn raw(agent: &Agent, key: &str) -> Option<Vec<u8>> {
    let r = get(agent, &format!("/v1/kv/{key}?raw")).await;
    match r.status {
        200 => Some(r.bytes),
        404 => None,
        _ => panic!("GET {key}?raw: {r:?}"),
    }
}

/// Standard base64, as Consul encodes values.
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A GET started now and answered later, for blocking reads.
pub(crate) fn spawn_get(url: String) -> tokio::task::JoinHandle<Resp> {
    tokio::spawn(async move {
        call_url(&url, "GET", b"")
            .await
            .unwrap_or_else(|e| panic!("GET {url}: no answer: {e}"))
    })
}

/// The status and body of an answer to [`raw_request`].
#[derive(Debug)]
pub(crate) struct RawAnswer {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// One HTTP/1.1 request written byte for byte on a fresh connection: the
/// path exactly as given (no client normalises it), and the body either with
/// its Content-Length or, with `chunked`, in 64 KiB chunks with none. The
/// answer is read while the body is still being written, since a server may
/// refuse (413) before it read it all and then close. The writing half stays
/// open until the answer is in: hyper drops a request whose client
/// half-closed.
pub(crate) async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    chunked: bool,
) -> RawAnswer {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut rd, mut wr) = stream.into_split();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{framing}\r\nConnection: close\r\n\r\n"
    );
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        // Write errors are expected once the server refused and closed.
        wr.write_all(head.as_bytes()).await?;
        if chunked {
            for chunk in body.chunks(64 * 1024) {
                wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                wr.write_all(chunk).await?;
                wr.write_all(b"\r\n").await?;
            }
            wr.write_all(b"0\r\n\r\n").await?;
        } else {
            wr.write_all(&body).await?;
        }
        wr.flush().await?;
        Ok::<_, std::io::Error>(wr)
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(LONG, rd.read_to_end(&mut answer)).await;
    writer.abort();
    if answer.is_empty() {
        panic!("{method} {path}: no answer: {read:?}");
    }
    parse_answer(&answer).unwrap_or_else(|| {
        panic!(
            "{method} {path}: unparsable answer {:?}",
            String::from_utf8_lossy(&answer)
        )
    })
}

/// Status line, headers, and a body that may be chunked.
fn parse_answer(raw: &[u8]) -> Option<RawAnswer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut rest = &raw[end + 4..];
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?, 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
    } else {
        body.extend_from_slice(rest);
    }
    Some(RawAnswer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ---- reads and writes ----

#[tokio::test]
async fn a_value_round_trips_in_consuls_json_and_as_raw_bytes() {
    let agent = dev().await;
    let n = put_ok(&agent, "app/config", b"hello").await;

    let r = get(&agent, "/v1/kv/app/config").await;
    assert_eq!(r.status, 200);
    // Field order and names as Consul's, Session left out when unheld.
    assert_eq!(
        r.text,
        format!(
            r#"[{{"LockIndex":0,"Key":"app/config","Flags":0,"Value":"aGVsbG8=","CreateIndex":{n},"ModifyIndex":{n}}}]"#
        )
    );
    assert_eq!(r.index, Some(n), "a key's index is its ModifyIndex");

    let r = get(&agent, "/v1/kv/app/config?raw").await;
    assert_eq!((r.status, r.bytes.as_slice()), (200, &b"hello"[..]));
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["content-security-policy"], "sandbox");

    // Every byte value, including NUL and invalid UTF-8.
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    put_ok(&agent, "app/blob", &binary).await;
    assert_eq!(read(&agent, "app/blob").await["Value"], json!(b64(&binary)));
    assert_eq!(raw(&agent, "app/blob").await, Some(binary));

    // An empty body stores an empty value, shown as null.
    let e = put_ok(&agent, "app/empty", b"").await;
    let r = get(&agent, "/v1/kv/app/empty").await;
    assert!(r.text.contains(r#""Value":null"#), "{}", r.text);
    assert_eq!(entry(&r)["ModifyIndex"], json!(e));
    assert_eq!(raw(&agent, "app/empty").await, Some(Vec::new()));

    let r = call(&agent, "DELETE", "/v1/kv/app/config", b"").await;
    assert_eq!((r.status, r.text.as_str()), (200, "true"), "{r:?}");
    let d = r.index.expect("a delete reports its index");
    assert!(d > n, "delete at {d} after the write at {n}");
    assert_eq!(raw(&agent, "app/config").await, None);
    assert_eq!(raw(&agent, "app/blob").await.map(|v| v.len()), Some(256));
}

#[tokio::test]
async fn a_missing_key_is_an_empty_404_with_every_consul_header() {
    let agent = dev().await;
    for path in ["/v1/kv/never/written", "/v1/kv/never/written?raw"] {
        let r = get(&agent, path).await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert_eq!(r.text, "", "{path}: an empty body");
        assert!(r.index.is_some_and(|i| i >= 1), "{path}: index ≥ 1: {r:?}");
        assert_eq!(r.known_leader, Some(true), "{path}: {r:?}");
        assert!(
            r.headers.contains_key("x-consul-lastcontact"),
            "{path}: {r:?}"
        );
    }
    // Deleted is missing too, and its index is the delete's.
    put_ok(&agent, "gone", b"x").await;
    let d = call(&agent, "DELETE", "/v1/kv/gone", b"").await.index;
    let r = get(&agent, "/v1/kv/gone").await;
    assert_eq!((r.status, r.index), (404, d), "{r:?}");

    for path in ["/v1/kv/", "/v1/kv/?raw"] {
        let r = get(&agent, path).await;
        assert_eq!(
            (r.status, r.text.as_str()),
            (400, "Missing key name"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn listings_recurse_and_list_keys_cut_at_the_separator() {
    let agent = dev().await;
    // An empty store lists its root as [], not 404.
    let r = get(&agent, "/v1/kv/?keys").await;
    assert_eq!((r.status, r.json()), (200, json!([])), "{r:?}");
    assert!(r.index.is_some_and(|i| i >= 1), "{r:?}");

    for key in ["a/b/c", "a/b/d", "a/e", "ab", "b/x"] {
        put_ok(&agent, key, key.as_bytes()).await;
    }
    let last = put_ok(&agent, "a/b/d", b"again").await;
    let keys_of = |r: &Resp| -> Vec<String> {
        r.json()
            .as_array()
            .unwrap_or_else(|| panic!("a list: {r:?}"))
            .iter()
            .map(|e| e["Key"].as_str().expect("Key").to_string())
            .collect()
    };
    for q in ["recurse", "recurse=false", "recurse=0", "recurse="] {
        let r = get(&agent, &format!("/v1/kv/a/?{q}")).await;
        assert_eq!(r.status, 200, "?{q}: {r:?}");
        assert_eq!(keys_of(&r), ["a/b/c", "a/b/d", "a/e"], "?{q} recurses");
        assert_eq!(r.index, Some(last), "?{q}: the prefix's highest index");
    }
    let r = get(&agent, "/v1/kv/a?recurse").await;
    assert_eq!(
        keys_of(&r),
        ["a/b/c", "a/b/d", "a/e", "ab"],
        "a string prefix"
    );
    let everything = get(&agent, "/v1/kv/?recurse").await;
    assert_eq!(keys_of(&everything).len(), 5);

    let r = get(&agent, "/v1/kv/a/?keys").await;
    assert_eq!(r.json(), json!(["a/b/c", "a/b/d", "a/e"]));
    let r = get(&agent, "/v1/kv/a/?keys&separator=/").await;
    assert_eq!(
        r.json(),
        json!(["a/b/", "a/e"]),
        "cut after the separator, once"
    );
    let r = get(&agent, "/v1/kv/?keys&separator=/").await;
    assert_eq!(r.json(), json!(["a/", "ab", "b/"]));
    let r = get(&agent, "/v1/kv/?keys&seperator=/").await;
    assert_eq!(
        r.json(),
        json!(["a/", "ab", "b/"]),
        "Consul's misspelling too"
    );

    for path in ["/v1/kv/nothing/?keys", "/v1/kv/nothing/?recurse"] {
        let r = get(&agent, path).await;
        assert_eq!((r.status, r.text.as_str()), (404, ""), "{path}: {r:?}");
        assert!(r.index.is_some_and(|i| i >= 1), "{path}: {r:?}");
    }
}

#[tokio::test]
async fn writes_report_their_index_and_honour_flags_and_cas() {
    let agent = dev().await;
    let first = put_ok(&agent, "k", b"v1").await;
    let e = read(&agent, "k").await;
    assert_eq!(
        (e["CreateIndex"].clone(), e["ModifyIndex"].clone()),
        (json!(first), json!(first))
    );

    // An identical rewrite changes nothing, not even the index, and answers
    // the index a following cas needs.
    put_ok(&agent, "other", b"moves the log on").await;
    let again = put_ok(&agent, "k", b"v1").await;
    assert_eq!(read(&agent, "k").await["ModifyIndex"], json!(first));
    assert_eq!(again, first, "the answer's index is the key's ModifyIndex");

    let second = put_ok(&agent, &format!("k?flags=42&cas={again}"), b"v2").await;
    assert!(second > first);
    let e = read(&agent, "k").await;
    assert_eq!(e["Flags"], json!(42));
    assert_eq!(e["ModifyIndex"], json!(second));
    assert_eq!(e["CreateIndex"], json!(first));
    let r = call(&agent, "PUT", "/v1/kv/k?flags=x", b"v3").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.text.contains("flags"), "names the flag: {}", r.text);

    // cas=0 creates only.
    let r = call(&agent, "PUT", "/v1/kv/k?cas=0", b"clobber").await;
    assert_eq!((r.status, r.text.as_str()), (200, "false"), "{r:?}");
    assert!(
        r.headers
            .get("x-trellis-refused")
            .is_some_and(|v| v.contains("index is stale")),
        "{r:?}"
    );
    let created = put_ok(&agent, "fresh?cas=0", b"new").await;
    assert_eq!(read(&agent, "fresh").await["CreateIndex"], json!(created));

    // A stale index changes nothing; the current one writes.
    let r = call(&agent, "PUT", &format!("/v1/kv/k?cas={first}"), b"stale").await;
    assert_eq!((r.status, r.text.as_str()), (200, "false"), "{r:?}");
    let e = read(&agent, "k").await;
    assert_eq!(
        (e["Value"].clone(), e["ModifyIndex"].clone()),
        (json!(b64(b"v2")), json!(second))
    );
    let third = put_ok(&agent, &format!("k?cas={second}"), b"v3").await;
    assert_eq!(read(&agent, "k").await["ModifyIndex"], json!(third));
    let r = call(&agent, "PUT", "/v1/kv/missing?cas=5", b"x").await;
    assert_eq!(r.text, "false", "cas on a missing key: {r:?}");
    assert_eq!(raw(&agent, "missing").await, None);

    // Consul's text: every parameter, sorted by name, encoded as Go's
    // `url.Values.Encode`.
    for (q, text) in [
        ("cas=1&acquire=abc", "acquire=abc&cas=1"),
        (
            "release=a%20b&flags=3&acquire=abc",
            "acquire=abc&flags=3&release=a+b",
        ),
    ] {
        let r = call(&agent, "PUT", &format!("/v1/kv/k?{q}"), b"x").await;
        assert_eq!(r.status, 400, "{q}: {r:?}");
        assert_eq!(r.text, format!("Conflicting flags: {text}\n"), "{q}");
    }
    let r = call(&agent, "DELETE", "/v1/kv/k?recurse&cas=1", b"").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.text, "Conflicting flags: cas=1&recurse=\n");
    assert_eq!(
        raw(&agent, "k").await.as_deref(),
        Some(&b"v3"[..]),
        "refusals change nothing"
    );

    // Conditional deletes.
    let r = call(&agent, "DELETE", &format!("/v1/kv/k?cas={second}"), b"").await;
    assert_eq!((r.status, r.text.as_str()), (200, "false"), "{r:?}");
    assert!(
        raw(&agent, "k").await.is_some(),
        "a stale delete keeps the key"
    );
    let r = call(&agent, "DELETE", "/v1/kv/never?cas=7", b"").await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (200, "true"),
        "Consul's kvsDeleteCASTxn"
    );
    let r = call(&agent, "DELETE", &format!("/v1/kv/k?cas={third}"), b"").await;
    assert_eq!(r.text, "true", "{r:?}");
    assert_eq!(raw(&agent, "k").await, None);

    // A recursive delete takes the prefix and nothing else.
    for key in ["tree/a", "tree/b/c", "treehouse", "other"] {
        put_ok(&agent, key, b"x").await;
    }
    let r = call(&agent, "DELETE", "/v1/kv/tree/?recurse", b"").await;
    assert_eq!(r.text, "true", "{r:?}");
    let r = get(&agent, "/v1/kv/?keys").await;
    assert_eq!(r.json(), json!(["fresh", "other", "treehouse"]));
}

#[tokio::test]
async fn values_over_512_kib_are_refused_on_the_bytes_read_and_change_nothing() {
    let agent = dev().await;
    let addr = agent.addrs().http;
    put_ok(&agent, "limit", b"old").await;

    let exact = vec![b'x'; MAX_VALUE];
    put_ok(&agent, "exact", &exact).await;
    assert_eq!(raw(&agent, "exact").await.map(|v| v.len()), Some(MAX_VALUE));
    let r = raw_request(addr, "PUT", "/v1/kv/exact-chunked", &exact, true).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "true"),
        "chunked, exactly the limit"
    );
    assert_eq!(
        raw(&agent, "exact-chunked").await.map(|v| v.len()),
        Some(MAX_VALUE)
    );

    let over = vec![b'y'; MAX_VALUE + 1];
    for chunked in [false, true] {
        let r = raw_request(addr, "PUT", "/v1/kv/limit", &over, chunked).await;
        assert_eq!(r.status, 413, "chunked {chunked}: {r:?}");
        assert!(
            r.body.contains("too large") && r.body.contains("524288"),
            "chunked {chunked}: Consul's message: {}",
            r.body
        );
        assert_eq!(
            raw(&agent, "limit").await.as_deref(),
            Some(&b"old"[..]),
            "chunked {chunked}: the old value stays"
        );
        let r = raw_request(addr, "PUT", "/v1/kv/new-and-big", &over, chunked).await;
        assert_eq!(r.status, 413, "chunked {chunked}: {r:?}");
        assert_eq!(raw(&agent, "new-and-big").await, None, "chunked {chunked}");
    }
}

#[tokio::test]
async fn keys_with_a_leading_slash_traversal_or_surrounding_spaces_are_refused() {
    let agent = dev().await;
    let addr = agent.addrs().http;
    let refused = [
        "/v1/kv/%2Fx",
        "/v1/kv//x",
        "/v1/kv/a/..%2Fb",
        "/v1/kv/..%2Fetc",
        "/v1/kv/%2E%2E%2Fx",
        "/v1/kv/%20lead",
        "/v1/kv/trail%20",
    ];
    for path in refused {
        for method in ["PUT", "GET", "DELETE"] {
            let r = raw_request(addr, method, path, b"v", false).await;
            assert_eq!(r.status, 400, "{method} {path}: {r:?}");
            assert!(
                r.body.contains("key"),
                "{method} {path}: names the key: {}",
                r.body
            );
        }
    }
    let long = "k".repeat(5000);
    let r = call(&agent, "PUT", &format!("/v1/kv/{long}"), b"v").await;
    assert_eq!(r.status, 413, "{r:?}");

    // Any other UTF-8 is a key, dots and inner spaces too.
    for key in ["配置/ключ", "emoji/🔑", "v1..2", "a b", "x/.hidden"] {
        put_ok(&agent, &key.replace(' ', "%20"), key.as_bytes()).await;
        let e = read(&agent, &key.replace(' ', "%20")).await;
        assert_eq!(e["Key"], json!(key));
        assert_eq!(e["Value"], json!(b64(key.as_bytes())));
    }
    let r = get(&agent, "/v1/kv/?keys").await;
    let mut want = vec!["a b", "emoji/🔑", "v1..2", "x/.hidden", "配置/ключ"];
    want.sort_unstable();
    assert_eq!(r.json(), json!(want), "nothing refused was stored");
}

#[tokio::test]
async fn read_options_are_checked_and_honoured_as_consuls() {
    let agent = dev().await;
    let i = put_ok(&agent, "opt", b"v").await;
    for (q, mode) in [
        ("", "leader"),
        ("?stale", "stale"),
        ("?consistent", "consistent"),
    ] {
        let r = get(&agent, &format!("/v1/kv/opt{q}")).await;
        assert_eq!((r.status, r.index), (200, Some(i)), "{q}: {r:?}");
        assert_eq!(r.headers["x-consul-effective-consistency"], mode, "{q}");
    }
    for (q, says) in [
        (
            "stale&consistent",
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
        ("index=abc", "Invalid index"),
        ("index=1&wait=soon", "Invalid wait time"),
    ] {
        let r = get(&agent, &format!("/v1/kv/opt?{q}")).await;
        assert_eq!((r.status, r.text.as_str()), (400, says), "?{q}");
    }
    let r = get(&agent, "/v1/kv/opt?dc=elsewhere").await;
    assert_eq!((r.status, r.text.as_str()), (500, "No path to datacenter"));
    let r = get(&agent, &format!("/v1/kv/opt?dc=dc1&index={i}&wait=1ms")).await;
    assert_eq!(r.status, 200, "our own datacenter by name: {r:?}");

    // Go's duration forms: a blocking read with nothing changing waits them
    // out and answers the same index.
    for wait in ["250ms", "0.25s", "0.250s"] {
        let at = Instant::now();
        let r = get(&agent, &format!("/v1/kv/opt?index={i}&wait={wait}")).await;
        let took = at.elapsed();
        assert_eq!((r.status, r.index), (200, Some(i)), "wait={wait}: {r:?}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(5),
            "wait={wait} took {took:?}"
        );
    }
}

// ---- blocking reads ----

/// Waits for a blocking read to answer, up to `within`; its answer and how
/// long it took from `since`.
async fn answered(
    mut h: tokio::task::JoinHandle<Resp>,
    since: Instant,
    within: Duration,
) -> (Resp, Duration) {
    let r = tokio::time::timeout(within, &mut h)
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"))
        .expect("the reader task");
    (r, since.elapsed())
}

#[tokio::test]
async fn a_blocking_read_of_one_key_wakes_on_that_key_and_not_on_another() {
    let agent = dev().await;
    let a = put_ok(&agent, "watch/a", b"1").await;
    put_ok(&agent, "watch/b", b"1").await;

    let mut waiter = spawn_get(agent.url(&format!("/v1/kv/watch/a?index={a}&wait=10s")));
    let b = put_ok(&agent, "watch/b", b"2").await;
    assert!(b > a);
    // Another key's write must leave it parked (Consul #9449).
    let woke = tokio::time::timeout(Duration::from_secs(1), &mut waiter).await;
    assert!(woke.is_err(), "woken by another key's write: {woke:?}");

    let at = Instant::now();
    let a2 = put_ok(&agent, "watch/a", b"2").await;
    let (r, took) = answered(waiter, at, Duration::from_secs(8)).await;
    assert_eq!(r.index, Some(a2), "answers with the new index: {r:?}");
    assert_eq!(entry(&r)["Value"], json!(b64(b"2")));
    assert!(took < WOKE_WITHIN, "woke {took:?} after the write");
}

#[tokio::test]
async fn a_blocking_read_of_a_missing_key_wakes_when_it_is_created() {
    let agent = dev().await;
    put_ok(&agent, "elsewhere", b"x").await;
    let r = get(&agent, "/v1/kv/later").await;
    assert_eq!(r.status, 404);
    let i = r.index.expect("X-Consul-Index");

    let mut waiter = spawn_get(agent.url(&format!("/v1/kv/later?index={i}&wait=10s")));
    put_ok(&agent, "elsewhere", b"y").await;
    let woke = tokio::time::timeout(Duration::from_secs(1), &mut waiter).await;
    assert!(woke.is_err(), "woken by another key's write: {woke:?}");
    let at = Instant::now();
    let created = put_ok(&agent, "later", b"here").await;
    let (r, took) = answered(waiter, at, Duration::from_secs(8)).await;
    assert_eq!((r.status, r.index), (200, Some(created)), "{r:?}");
    assert_eq!(entry(&r)["Value"], json!(b64(b"here")));
    assert!(took < WOKE_WITHIN, "woke {took:?} after the write");
}

#[tokio::test]
async fn a_blocking_listing_wakes_on_a_delete_and_its_index_never_goes_back() {
    let agent = dev().await;
    put_ok(&agent, "p/1", b"1").await;
    let top = put_ok(&agent, "p/2", b"2").await;
    put_ok(&agent, "q", b"outside").await;
    let r = get(&agent, "/v1/kv/p/?recurse").await;
    assert_eq!(r.index, Some(top));

    // Deleting the newest key: without its tombstone the index would fall
    // back to p/1's.
    let waiter = spawn_get(agent.url(&format!("/v1/kv/p/?recurse&index={top}&wait=10s")));
    let at = Instant::now();
    let r = call(&agent, "DELETE", "/v1/kv/p/2", b"").await;
    assert_eq!(r.text, "true");
    let deleted = r.index.expect("the delete's index");
    let (r, took) = answered(waiter, at, Duration::from_secs(8)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.index,
        Some(deleted),
        "the delete's index, not p/1's: {r:?}"
    );
    assert_eq!(r.json().as_array().map(Vec::len), Some(1), "{}", r.text);
    assert!(took < WOKE_WITHIN, "woke {took:?} after the delete");

    // Emptied, the prefix is a 404 whose index still has not gone back.
    let waiter = spawn_get(agent.url(&format!("/v1/kv/p/?recurse&index={deleted}&wait=10s")));
    let r = call(&agent, "DELETE", "/v1/kv/p/?recurse", b"").await;
    let emptied = r.index.expect("the delete's index");
    let (r, _) = answered(waiter, Instant::now(), Duration::from_secs(8)).await;
    assert_eq!((r.status, r.index), (404, Some(emptied)), "{r:?}");
    assert!(emptied > deleted);
    let r = get(&agent, "/v1/kv/p/?keys").await;
    assert_eq!((r.status, r.index), (404, Some(emptied)), "{r:?}");
}

// ---- locks ----

/// Creates a session on the agent's own node with `body`; returns its ID.
/// The dev agent registers its node and serfHealth check on its own after
/// start, so a create refused for their absence is asked again.
pub(crate) async fn session(agent: &Agent, body: Value) -> String {
    let what = format!("a session {body}");
    wait_until_async(&what, Duration::from_secs(30), || async {
        let r = call(
            agent,
            "PUT",
            "/v1/session/create",
            body.to_string().as_bytes(),
        )
        .await;
        match r.status {
            200 => Ok(r.json()["ID"]
                .as_str()
                .unwrap_or_else(|| panic!("no ID: {r:?}"))
                .to_string()),
            500 if r.text.contains("registration") || r.text.contains("critical") => Err(r.text),
            _ => panic!("{what}: {r:?}"),
        }
    })
    .await
}

/// A KV write Consul answers `false`; `X-Trellis-Refused` must say `why`.
async fn refused(agent: &Agent, key_and_query: &str, value: &[u8], why: &str) {
    let r = call(agent, "PUT", &format!("/v1/kv/{key_and_query}"), value).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (200, "false"),
        "{key_and_query}: {r:?}"
    );
    let reason = r.headers.get("x-trellis-refused").map(String::as_str);
    assert!(
        reason.is_some_and(|v| v.contains(why)),
        "{key_and_query}: refused for {why:?}, said {reason:?}"
    );
}

/// LockIndex, Session (`None` when absent) and the value of `key`.
async fn lock_state(agent: &Agent, key: &str) -> (u64, Option<String>, Vec<u8>) {
    let e = read(agent, key).await;
    let value = raw(agent, key).await.expect("the key exists");
    (
        e["LockIndex"].as_u64().expect("LockIndex"),
        e.get("Session")
            .map(|s| s.as_str().expect("Session is a string").to_string()),
        value,
    )
}

#[tokio::test]
async fn locks_are_taken_refused_and_released_as_consuls() {
    let agent = dev().await;
    let s1 = session(&agent, json!({"Name": "one"})).await;
    let s2 = session(&agent, json!({"Name": "two", "LockDelay": "15s"})).await;
    let key = "service/leader";

    put_ok(&agent, &format!("{key}?acquire={s1}"), b"one").await;
    assert_eq!(
        lock_state(&agent, key).await,
        (1, Some(s1.clone()), b"one".to_vec())
    );
    // The holder again: LockIndex stays, the value changes.
    put_ok(&agent, &format!("{key}?acquire={s1}"), b"one again").await;
    assert_eq!(
        lock_state(&agent, key).await,
        (1, Some(s1.clone()), b"one again".to_vec())
    );

    refused(
        &agent,
        &format!("{key}?acquire={s2}"),
        b"two",
        "lock is already held",
    )
    .await;
    refused(
        &agent,
        &format!("{key}?release={s2}"),
        b"two",
        "held by another session",
    )
    .await;
    assert_eq!(
        lock_state(&agent, key).await,
        (1, Some(s1.clone()), b"one again".to_vec())
    );

    // Advisory: a plain write succeeds and keeps the holder.
    put_ok(&agent, key, b"plain").await;
    assert_eq!(
        lock_state(&agent, key).await,
        (1, Some(s1.clone()), b"plain".to_vec())
    );

    // Release clears the holder, keeps LockIndex and writes the body.
    let released = put_ok(&agent, &format!("{key}?release={s1}"), b"released").await;
    assert_eq!(
        lock_state(&agent, key).await,
        (1, None, b"released".to_vec())
    );
    assert_eq!(read(&agent, key).await["ModifyIndex"], json!(released));
    refused(
        &agent,
        &format!("{key}?release={s1}"),
        b"x",
        "lock isn't held",
    )
    .await;
    refused(
        &agent,
        &format!("nothing?release={s1}"),
        b"x",
        "lock isn't held",
    )
    .await;
    assert_eq!(raw(&agent, "nothing").await, None);

    // A release sets no lock-delay: the next holder takes it at once.
    put_ok(&agent, &format!("{key}?acquire={s2}"), b"two").await;
    assert_eq!(
        lock_state(&agent, key).await,
        (2, Some(s2.clone()), b"two".to_vec())
    );

    // Unknown and empty sessions are Consul's 500s, and change nothing.
    let unknown = "0f0e0d0c-0b0a-0908-0706-050403020100";
    let r = call(
        &agent,
        "PUT",
        &format!("/v1/kv/{key}?acquire={unknown}"),
        b"x",
    )
    .await;
    assert_eq!(
        (r.status, r.text.clone()),
        (500, format!("invalid session \"{unknown}\""))
    );
    let r = call(
        &agent,
        "PUT",
        &format!("/v1/kv/other?acquire={unknown}"),
        b"x",
    )
    .await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(raw(&agent, "other").await, None);
    let r = call(&agent, "PUT", &format!("/v1/kv/{key}?acquire="), b"x").await;
    assert_eq!((r.status, r.text.as_str()), (500, "missing session"));
    assert_eq!(
        lock_state(&agent, key).await,
        (2, Some(s2.clone()), b"two".to_vec())
    );

    // Destroying the holder releases the key and starts its lock-delay.
    let r = call(&agent, "PUT", &format!("/v1/session/destroy/{s2}"), b"").await;
    assert_eq!(r.text, "true", "{r:?}");
    assert_eq!(lock_state(&agent, key).await, (2, None, b"two".to_vec()));
    refused(&agent, &format!("{key}?acquire={s1}"), b"one", "lock delay").await;

    // A held key can be deleted: locks are advisory.
    put_ok(&agent, &format!("mine?acquire={s1}"), b"x").await;
    let r = call(&agent, "DELETE", "/v1/kv/mine", b"").await;
    assert_eq!(r.text, "true", "{r:?}");
    assert_eq!(raw(&agent, "mine").await, None);
}

#[tokio::test]
async fn reaped_tombstones_leave_a_floor_so_no_listing_index_goes_back() {
    let dir = crate::harness::temp_dir();
    let config = dir.path().join("kv.json");
    std::fs::write(&config, r#"{"tombstone_ttl": "1s"}"#).expect("write config");
    let agent = trellis().dev().config_file(&config).start();
    wait_until_async("the dev agent leads", Duration::from_secs(30), || async {
        match agent.leader_seen().await {
            Some(l) if !l.is_empty() => Ok(()),
            other => Err(format!("leader: {other:?}")),
        }
    })
    .await;
    put_ok(&agent, "p/1", b"1").await;
    put_ok(&agent, "p/2", b"2").await;
    let r = call(&agent, "DELETE", "/v1/kv/p/2", b"").await;
    let deleted = r.index.expect("the delete's index");
    let untouched = get(&agent, "/v1/kv/q/?recurse").await;
    assert_eq!(untouched.status, 404);
    assert!(untouched.index < Some(deleted), "{untouched:?}");

    // Once the tombstone is reaped, a prefix that never had a key reports
    // the reaped index as its floor: the only sign of the reaping. The
    // leader looks for due tombstones every 30 s (`expiry::REAP_EVERY`), so
    // this takes up to that long past the 1 s TTL.
    wait_until_async("the tombstone reaped", Duration::from_secs(75), || async {
        let r = get(&agent, "/v1/kv/q/?recurse").await;
        match r.index {
            Some(i) if i >= deleted => Ok(()),
            other => Err(format!("q/ at {other:?}")),
        }
    })
    .await;
    let r = get(&agent, "/v1/kv/p/?recurse").await;
    assert!(
        r.index.is_some_and(|i| i >= deleted),
        "p/ went back below its delete at {deleted}: {r:?}"
    );
    let r = get(&agent, "/v1/kv/p/2").await;
    assert!(r.index.is_some_and(|i| i >= deleted), "{r:?}");
}
