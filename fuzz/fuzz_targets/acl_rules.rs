//! Arbitrary text as ACL rules, as the policy endpoints will take it from a
//! client: parsing must never panic, a policy that parses must read back to
//! itself from the HCL and the JSON it writes, and its authorizer must
//! answer any name without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis::acl::{Authorizer, DefaultPolicy, Policy, parse};

/// The rules sorted by keyword, stably: JSON objects keep the order within
/// one keyword, not between keywords.
fn by_keyword(policy: &Policy) -> Policy {
    let mut p = policy.clone();
    p.rules.sort_by_key(|r| r.resource.keyword(r.matching));
    p
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = parse(text) else {
        return;
    };
    let hcl = policy.to_hcl();
    assert_eq!(parse(&hcl).as_ref(), Ok(&policy), "HCL reads back: {hcl}");
    let json = policy.to_json();
    assert_eq!(
        parse(&json).map(|p| by_keyword(&p)),
        Ok(by_keyword(&policy)),
        "JSON reads back: {json}"
    );
    let authz = Authorizer::new(std::slice::from_ref(&policy), DefaultPolicy::Deny);
    for name in policy.rules.iter().map(|r| r.name.as_str()).chain([text, ""]) {
        let _ = authz.service_read(name)
            && authz.key_list(name)
            && authz.key_write_prefix(name)
            && authz.session_write(name);
    }
    let _ = authz.service_read_all() && authz.service_write_any() && authz.node_read_all();
});
