use serde_json::json;

use super::*;

const MIN: Duration = Duration::from_secs(10);

fn decode(body: Value) -> Result<Session, (StatusCode, String)> {
    decode_create(Some(&body), "me", MIN).map_err(|e| (e.status(), e.to_string()))
}

fn ok(body: Value) -> Session {
    decode(body.clone()).unwrap_or_else(|e| panic!("{body}: {e:?}"))
}

#[test]
fn an_empty_create_takes_consul_defaults() {
    let s = decode_create(None, "me", MIN).unwrap();
    assert_eq!(s.node, "me");
    assert_eq!(s.node_checks, vec!["serfHealth"]);
    assert!(s.service_checks.is_empty());
    assert_eq!(s.lock_delay_ns, 15_000_000_000);
    assert_eq!(s.behavior, Behavior::Release);
    assert_eq!((s.ttl.as_str(), s.ttl_ms), ("", 0));
    assert_eq!(s.name, "");
}

#[test]
fn keys_are_case_insensitive_as_py_consul_sends_them() {
    let s = ok(json!({
        "name": "web-lock", "node": "n2", "lockdelay": "5s",
        "behavior": "delete", "ttl": "30s", "checks": ["serfHealth", "service:web"],
    }));
    assert_eq!(s.name, "web-lock");
    assert_eq!(s.node, "n2");
    assert_eq!(s.lock_delay_ns, 5_000_000_000);
    assert_eq!(s.behavior, Behavior::Delete);
    assert_eq!((s.ttl.as_str(), s.ttl_ms), ("30s", 30_000));
    assert_eq!(s.node_checks, vec!["serfHealth", "service:web"]);
}

#[test]
fn checks_and_node_checks_combine_as_consul_fixes_them_up() {
    let checks = |body: Value| ok(body).node_checks;
    // An explicit empty list (or null, which Go decodes to one) removes
    // serfHealth.
    assert!(checks(json!({"Checks": []})).is_empty());
    assert!(checks(json!({"Checks": null})).is_empty());
    assert!(checks(json!({"NodeChecks": []})).is_empty());
    assert!(checks(json!({"NodeChecks": null})).is_empty());
    // An empty Checks empties NodeChecks too, as Consul's fixup does.
    assert!(checks(json!({"Checks": [], "NodeChecks": ["a"]})).is_empty());
    // NodeChecks replace the default.
    assert_eq!(checks(json!({"NodeChecks": ["a", "b"]})), vec!["a", "b"]);
    // Checks come on top of the default NodeChecks (Consul checks both).
    assert_eq!(checks(json!({"Checks": ["a"]})), vec!["serfHealth", "a"]);
    assert_eq!(
        checks(json!({"Checks": ["serfHealth"]})),
        vec!["serfHealth"]
    );
    // Beside an empty NodeChecks, Checks are dropped.
    assert!(checks(json!({"Checks": ["a"], "NodeChecks": []})).is_empty());
    assert_eq!(
        checks(json!({"Checks": ["a", "b"], "NodeChecks": ["b", "c"]})),
        vec!["b", "c", "a"]
    );
    let s = ok(json!({"ServiceChecks": [{"ID": "web-check", "Namespace": "ns"}, {"id": "x"}]}));
    assert_eq!(
        s.service_checks,
        vec![
            ServiceCheck {
                id: "web-check".into(),
                namespace: "ns".into()
            },
            ServiceCheck {
                id: "x".into(),
                namespace: String::new()
            },
        ]
    );
}

#[test]
fn lock_delay_small_numbers_are_seconds_and_it_is_kept_as_given() {
    let delay = |v: Value| ok(json!({ "LockDelay": v })).lock_delay_ns;
    assert_eq!(delay(json!(5)), 5_000_000_000);
    assert_eq!(delay(json!(999)), 999_000_000_000);
    assert_eq!(delay(json!(15)), 15_000_000_000);
    assert_eq!(delay(json!(1000)), 1000);
    assert_eq!(delay(json!(2_500_000_000_u64)), 2_500_000_000);
    assert_eq!(delay(json!(15.7)), 15_000_000_000);
    assert_eq!(delay(json!("15000ms")), 15_000_000_000);
    assert_eq!(delay(json!("10ns")), 10_000_000_000);
    assert_eq!(delay(json!("0")), 0);
    assert_eq!(delay(json!(0)), 0);
    // Above Consul's 60 s cap it is kept as sent; the cap applies when
    // the delay is put on the keys.
    assert_eq!(delay(json!("2m")), 120_000_000_000);
    assert_eq!(delay(json!(null)), 15_000_000_000);
}

#[test]
fn bad_input_is_refused_with_consuls_status_naming_the_field() {
    let cases = [
        (json!({"LockDelay": "soon"}), 400, "LockDelay"),
        (json!({"LockDelay": "15"}), 400, "LockDelay"),
        (json!({"LockDelay": -5}), 400, "LockDelay"),
        (json!({"LockDelay": true}), 400, "LockDelay"),
        (json!({"Name": 7}), 400, "Name"),
        (json!({"TTL": 30}), 400, "TTL"),
        (json!({"Checks": "serfHealth"}), 400, "Checks"),
        (json!({"NodeChecks": [1]}), 400, "NodeChecks[0]"),
        (json!({"ServiceChecks": ["x"]}), 400, "ServiceChecks[0]"),
        (
            json!({"ServiceChecks": [{"ID": 1}]}),
            400,
            "ServiceChecks[0].ID",
        ),
        (json!({"Behavior": 1}), 400, "Behavior"),
        (
            json!({"Behavior": "keep"}),
            500,
            "Invalid Behavior setting 'keep'",
        ),
        (json!({"Behavior": "Release"}), 500, "'Release'"),
        (
            json!({"TTL": "soon"}),
            500,
            "Session TTL 'soon' invalid: time: invalid duration \"soon\"",
        ),
        (
            json!({"TTL": "5s"}),
            500,
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
        ),
        (
            json!({"TTL": "25h"}),
            500,
            "Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]",
        ),
        (json!({"Node": ""}), 500, "Must provide Node"),
    ];
    for (body, status, says) in cases {
        let (got, text) = decode(body.clone()).expect_err(&body.to_string());
        assert_eq!(got.as_u16(), status, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text:?} should name {says:?}");
    }
}

#[test]
fn ttls_within_bounds_or_zero_are_taken() {
    let ttl = |v: &str| {
        let s = ok(json!({ "TTL": v }));
        (s.ttl, s.ttl_ms)
    };
    assert_eq!(ttl("10s"), ("10s".into(), 10_000));
    assert_eq!(ttl("24h"), ("24h".into(), 86_400_000));
    assert_eq!(ttl("1m30s"), ("1m30s".into(), 90_000));
    assert_eq!(ttl("0s"), ("0s".into(), 0));
    assert_eq!(ttl(""), (String::new(), 0));
    // The floor is the configured one.
    let s = decode_create(Some(&json!({"TTL": "2s"})), "me", Duration::from_secs(1)).unwrap();
    assert_eq!(s.ttl_ms, 2_000);
    let e = decode_create(
        Some(&json!({"TTL": "2s"})),
        "me",
        Duration::from_millis(2500),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "Invalid Session TTL '2000000000', must be between [2.5s=24h0m0s]"
    );
}

#[test]
fn durations_print_as_go_prints_them() {
    for (d, go) in [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(7), "7ns"),
        (Duration::from_micros(2), "2µs"),
        (Duration::from_micros(1500), "1.5ms"),
        (Duration::from_secs(10), "10s"),
        (Duration::from_millis(2500), "2.5s"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(3600), "1h0m0s"),
        (Duration::from_secs(24 * 3600), "24h0m0s"),
        (Duration::from_millis(3_723_500), "1h2m3.5s"),
    ] {
        assert_eq!(go_duration(d), go, "{d:?}");
    }
}

#[test]
fn session_json_has_consuls_fields_in_consuls_order() {
    let mut s = ok(json!({"Name": "n", "TTL": "15s", "LockDelay": "1s"}));
    s.id = "adf4238a-882b-9ddc-4a9d-5b6758e4159e".into();
    s.create_index = 7;
    s.modify_index = 7;
    let text = serde_json::to_string(&SessionJson::from(&s)).unwrap();
    assert_eq!(
        text,
        r#"{"ID":"adf4238a-882b-9ddc-4a9d-5b6758e4159e","Name":"n","Node":"me","LockDelay":1000000000,"Behavior":"release","TTL":"15s","NodeChecks":["serfHealth"],"ServiceChecks":null,"CreateIndex":7,"ModifyIndex":7}"#
    );
    s.service_checks = vec![ServiceCheck {
        id: "c".into(),
        namespace: String::new(),
    }];
    let v = serde_json::to_value(SessionJson::from(&s)).unwrap();
    assert_eq!(v["ServiceChecks"], json!([{"ID": "c", "Namespace": ""}]));
}
