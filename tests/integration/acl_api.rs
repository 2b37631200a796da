//! The ACL API and `trellis acl` against real agents: bootstrapping once,
//! policies and tokens created, read, changed and deleted over HTTP and
//! through the CLI, `token/self`, the anonymous token's protection,
//! `acl.tokens.initial_management` from a config file, and tokens written
//! and read through a client agent.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use trellis_testkit::{Agent, FORM_DEADLINE, Resp, wait_until_async};

use crate::harness::{temp_dir, trellis};

/// How long a CLI command may take.
const QUICK: Duration = Duration::from_secs(30);

/// The initial management secret the config-file tests use.
const ROOT: &str = "6d5c0a9e-2f0b-4c41-9f7e-0c1d2e3f4a5b";

/// Writes an `acl` stanza with ACLs on and `policy` as the default, plus
/// `extra` lines under `[acl.tokens]`.
fn acl_config(dir: &Path, policy: &str, tokens: &str) -> PathBuf {
    let file = dir.join("acl.toml");
    let text =
        format!("[acl]\nenabled = true\ndefault_policy = \"{policy}\"\n[acl.tokens]\n{tokens}\n");
    std::fs::write(&file, text).expect("write the config");
    file
}

/// One request with `token` in `X-Consul-Token` (none when empty).
async fn send(agent: &Agent, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = reqwest::Client::new()
        .request(method, agent.url(path))
        .timeout(Duration::from_secs(10));
    if !token.is_empty() {
        req = req.header("X-Consul-Token", token);
    }
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    Resp::read(req.send().await.expect("an answer"))
        .await
        .expect("a body")
}

/// The JSON of a 200, failing with the answer otherwise.
fn ok(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// `trellis <args>` aimed at `agent` with `CONSUL_HTTP_TOKEN=token`.
async fn cli(agent: &Agent, token: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::from(trellis().command());
    cmd.args(args)
        .env("TRELLIS_HTTP_ADDR", agent.addrs().http.to_string())
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if token.is_empty() {
        cmd.env_remove("CONSUL_HTTP_TOKEN");
    } else {
        cmd.env("CONSUL_HTTP_TOKEN", token);
    }
    tokio::time::timeout(QUICK, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("trellis {args:?} did not finish"))
        .expect("trellis output")
}

/// Asserts success and returns stdout.
async fn cli_ok(agent: &Agent, token: &str, args: &[&str]) -> String {
    let out = cli(agent, token, args).await;
    assert!(
        out.status.success(),
        "trellis {args:?}: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `agent` resolves `secret` (its replica holds the token) and
/// returns the token as `token/self` shows it.
async fn wait_token(agent: &Agent, secret: &str) -> Value {
    wait_until_async("the token resolves", FORM_DEADLINE, || async {
        let r = send(agent, "GET", "/v1/acl/token/self", secret, None).await;
        if r.status == 200 {
            Ok(r.json())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn bootstrap_once_then_policies_and_tokens_round_trip() {
    let dir = temp_dir();
    let agent = trellis()
        .dev()
        .config_file(acl_config(dir.path(), "deny", ""))
        .start();
    // Without a token nothing about ACLs may be read.
    let denied = send(&agent, "GET", "/v1/acl/tokens", "", None).await;
    assert_eq!(denied.status, 403, "{denied:?}");

    let boot = ok(&send(&agent, "PUT", "/v1/acl/bootstrap", "", None).await);
    let root = boot["SecretID"].as_str().expect("a secret").to_string();
    assert_eq!(boot["ID"], boot["SecretID"]);
    assert_eq!(boot["Policies"][0]["Name"], "global-management");
    let again = send(&agent, "PUT", "/v1/acl/bootstrap", "", None).await;
    assert_eq!(again.status, 403, "{again:?}");
    assert!(
        again
            .text
            .starts_with("Permission denied: ACL bootstrap no longer allowed"),
        "{again:?}"
    );

    // A policy, and a token linking it by name.
    let policy = ok(&send(
        &agent,
        "PUT",
        "/v1/acl/policy",
        &root,
        Some(&json!({"Name": "acl-read", "Rules": "acl = \"read\""})),
    )
    .await);
    let pid = policy["ID"].as_str().expect("an ID").to_string();
    let token = ok(&send(
        &agent,
        "PUT",
        "/v1/acl/token",
        &root,
        Some(&json!({"Description": "reader", "Policies": [{"Name": "acl-read"}]})),
    )
    .await);
    let (accessor, secret) = (
        token["AccessorID"].as_str().expect("accessor").to_string(),
        token["SecretID"].as_str().expect("secret").to_string(),
    );
    assert_eq!(token["Policies"], json!([{"ID": pid, "Name": "acl-read"}]));

    // token/self with the token's own secret, in each of the three places
    // a secret may come from.
    let me = ok(&send(&agent, "GET", "/v1/acl/token/self", &secret, None).await);
    assert_eq!(
        (me["AccessorID"].as_str(), me["SecretID"].as_str()),
        (Some(accessor.as_str()), Some(secret.as_str()))
    );
    let by_query = agent
        .get(&format!("/v1/acl/token/self?token={secret}"))
        .await
        .expect("answer");
    assert_eq!(ok(&by_query)["AccessorID"], accessor.as_str());
    let bearer = reqwest::Client::new()
        .get(agent.url("/v1/acl/token/self"))
        .header("Authorization", format!("Bearer {secret}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        ok(&Resp::read(bearer).await.expect("body"))["AccessorID"],
        accessor.as_str()
    );

    // The reader lists tokens without their secrets; management sees them.
    let listed = ok(&send(&agent, "GET", "/v1/acl/tokens", &secret, None).await);
    let listed = listed.as_array().expect("a list").clone();
    assert_eq!(listed.len(), 3, "bootstrap, reader, anonymous: {listed:?}");
    assert!(
        listed.iter().all(|t| t["SecretID"] == "<hidden>"),
        "{listed:?}"
    );
    let full = ok(&send(
        &agent,
        "GET",
        &format!("/v1/acl/token/{accessor}"),
        &root,
        None,
    )
    .await);
    assert_eq!(full["SecretID"], secret.as_str());
    let refused = send(
        &agent,
        "PUT",
        "/v1/acl/policy",
        &secret,
        Some(&json!({"Name": "x"})),
    )
    .await;
    assert_eq!(refused.status, 403, "{refused:?}");

    // Updated, then deleted.
    let updated = ok(&send(
        &agent,
        "PUT",
        &format!("/v1/acl/token/{accessor}"),
        &root,
        Some(&json!({"Description": "renamed", "Policies": [{"ID": pid}]})),
    )
    .await);
    assert_eq!(updated["SecretID"], secret.as_str());
    assert_eq!(updated["Description"], "renamed");

    let anonymous = send(
        &agent,
        "DELETE",
        "/v1/acl/token/00000000-0000-0000-0000-000000000002",
        &root,
        None,
    )
    .await;
    assert_eq!(
        (anonymous.status, anonymous.text.as_str()),
        (500, "Delete operation not permitted on the anonymous token")
    );

    let gone = send(
        &agent,
        "DELETE",
        &format!("/v1/acl/token/{accessor}"),
        &root,
        None,
    )
    .await;
    assert_eq!((gone.status, gone.text.as_str()), (200, "true"));
    let unknown = send(&agent, "GET", "/v1/acl/token/self", &secret, None).await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (403, "ACL not found")
    );
    let missing = send(
        &agent,
        "GET",
        &format!("/v1/acl/token/{accessor}"),
        &root,
        None,
    )
    .await;
    assert_eq!(missing.status, 404, "{missing:?}");
    let gone = send(
        &agent,
        "DELETE",
        &format!("/v1/acl/policy/{pid}"),
        &root,
        None,
    )
    .await;
    assert_eq!((gone.status, gone.text.as_str()), (200, "true"));
    let missing = send(&agent, "GET", "/v1/acl/policy/name/acl-read", &root, None).await;
    assert_eq!(missing.status, 404, "{missing:?}");
}

#[tokio::test]
async fn the_acl_cli_creates_reads_and_deletes_with_consuls_flags() {
    let dir = temp_dir();
    let agent = trellis()
        .dev()
        .config_file(acl_config(dir.path(), "deny", ""))
        .start();
    let boot: Value =
        serde_json::from_str(&cli_ok(&agent, "", &["acl", "bootstrap", "-format=json"]).await)
            .expect("JSON");
    let root = boot["SecretID"].as_str().expect("a secret").to_string();
    let out = cli(&agent, "", &["acl", "bootstrap"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Failed ACL bootstrapping: Unexpected response code: 403 (Permission denied: ACL bootstrap no longer allowed"),
        "{stderr}"
    );

    let rules = dir.path().join("rules.hcl");
    std::fs::write(&rules, "key_prefix \"app/\" { policy = \"read\" }\n").expect("rules");
    let created = cli_ok(
        &agent,
        &root,
        &[
            "acl",
            "policy",
            "create",
            "-name",
            "app-read",
            "-description",
            "reads app/",
            "-rules",
            &format!("@{}", rules.display()),
        ],
    )
    .await;
    assert!(created.contains("Name:         app-read\n"), "{created}");
    assert!(created.contains("Rules:\nkey_prefix \"app/\""), "{created}");
    let listed = cli_ok(&agent, &root, &["acl", "policy", "list"]).await;
    assert!(listed.contains("app-read:\n   ID:"), "{listed}");
    assert!(listed.contains("global-management:\n"), "{listed}");
    let read = cli_ok(
        &agent,
        &root,
        &["acl", "policy", "read", "-name", "app-read"],
    )
    .await;
    assert_eq!(read, created);

    let token: Value = serde_json::from_str(
        &cli_ok(
            &agent,
            &root,
            &[
                "acl",
                "token",
                "create",
                "-policy-name",
                "app-read",
                "-description",
                "app",
                "-format=json",
            ],
        )
        .await,
    )
    .expect("JSON");
    let accessor = token["AccessorID"].as_str().expect("accessor").to_string();
    let secret = token["SecretID"].as_str().expect("secret").to_string();
    // -token on the command line, and the token's own view of itself.
    let me = cli_ok(
        &agent,
        "",
        &["acl", "token", "read", "-self", "-token", &secret],
    )
    .await;
    assert!(
        me.starts_with(&format!(
            "AccessorID:       {accessor}\nSecretID:         {secret}\n"
        )),
        "{me}"
    );
    assert!(
        me.contains("Policies:\n   ") && me.contains(" - app-read\n"),
        "{me}"
    );
    let list = cli_ok(&agent, &root, &["acl", "token", "list"]).await;
    assert!(
        list.contains(&format!("AccessorID:       {accessor}\n")),
        "{list}"
    );

    // A token without acl:read is refused, in the Go client's words.
    let out = cli(&agent, &secret, &["acl", "token", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unexpected response code: 403 (Permission denied"),
        "{stderr}"
    );

    assert_eq!(
        cli_ok(&agent, &root, &["acl", "token", "delete", "-id", &accessor]).await,
        format!("Token {accessor:?} deleted successfully\n")
    );
    let deleted = cli_ok(
        &agent,
        &root,
        &["acl", "policy", "delete", "-name", "app-read"],
    )
    .await;
    assert!(deleted.ends_with("deleted successfully\n"), "{deleted}");
    let out = cli(
        &agent,
        &root,
        &["acl", "policy", "read", "-name", "app-read"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn initial_management_from_the_config_is_a_management_token_and_ends_bootstrap() {
    let dir = temp_dir();
    let agent = trellis()
        .server()
        .node("s1")
        .bootstrap_expect(1)
        .data_dir(dir.path().join("data"))
        .config_file(acl_config(
            dir.path(),
            "deny",
            &format!("initial_management = \"{ROOT}\""),
        ))
        .start();
    let me = wait_token(&agent, ROOT).await;
    assert_eq!(me["Description"], "Initial Management Token");
    assert_eq!(me["Policies"][0]["Name"], "global-management");
    assert_eq!(me["SecretID"], ROOT);
    let boot = send(&agent, "PUT", "/v1/acl/bootstrap", "", None).await;
    assert_eq!(boot.status, 403, "{boot:?}");
    // It may do what management may.
    ok(&send(
        &agent,
        "PUT",
        "/v1/acl/policy",
        ROOT,
        Some(&json!({"Name": "p"})),
    )
    .await);
}

#[tokio::test]
async fn tokens_are_written_and_read_through_a_client_agent() {
    let dir = temp_dir();
    let config = acl_config(
        dir.path(),
        // Allow, so the harness's own waits (raft configuration, members)
        // need no token: ACL management is refused under allow too.
        "allow",
        &format!("initial_management = \"{ROOT}\""),
    );
    let each = config.clone();
    let mut c = trellis()
        .cluster()
        .servers(1)
        .each(move |b| b.config_file(&each))
        .start()
        .await;
    c.add_client("c1", |b| b);
    let client = c.node("c1");
    // The client's own replica resolves the management token.
    wait_token(client, ROOT).await;
    let anonymous = send(client, "GET", "/v1/acl/tokens", "", None).await;
    assert_eq!(anonymous.status, 403, "{anonymous:?}");

    // Written through the client (forwarded to the servers), read back
    // through it at once.
    let policy = ok(&send(
        client,
        "PUT",
        "/v1/acl/policy",
        ROOT,
        Some(&json!({"Name": "via-client", "Rules": "acl = \"read\""})),
    )
    .await);
    let token = ok(&send(
        client,
        "PUT",
        "/v1/acl/token",
        ROOT,
        Some(&json!({"Description": "made on c1", "Policies": [{"ID": policy["ID"]}]})),
    )
    .await);
    let accessor = token["AccessorID"].as_str().expect("accessor").to_string();
    let secret = token["SecretID"].as_str().expect("secret").to_string();
    let read = ok(&send(
        client,
        "GET",
        &format!("/v1/acl/token/{accessor}"),
        ROOT,
        None,
    )
    .await);
    assert_eq!(read["Description"], "made on c1");
    assert_eq!(read["Policies"][0]["Name"], "via-client");
    // A client agent may hold no secrets: it shows the secret or hides it,
    // never another one.
    assert!(
        read["SecretID"] == secret.as_str() || read["SecretID"] == "<hidden>",
        "{read}"
    );
    // The new token works on the client, and on the server.
    let me = ok(&send(client, "GET", "/v1/acl/token/self", &secret, None).await);
    assert_eq!(
        (me["AccessorID"].as_str(), me["SecretID"].as_str()),
        (Some(accessor.as_str()), Some(secret.as_str()))
    );
    ok(&send(client, "GET", "/v1/acl/policies", &secret, None).await);
    let server = c.node("s1");
    let on_server = ok(&send(
        server,
        "GET",
        &format!("/v1/acl/token/{accessor}"),
        ROOT,
        None,
    )
    .await);
    assert_eq!(on_server["SecretID"], secret.as_str());
}
