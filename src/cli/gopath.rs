//! Go's `path.Join` and `path.Clean`, which Consul's commands and its Go
//! client use to build keys (`kv import -prefix`, the lock's
//! `<prefix>/.lock`): the same inputs must give the same keys here.

/// Joins the non-empty parts with `/` and cleans the result; "" if all
/// are empty.
pub(crate) fn join(parts: &[&str]) -> String {
    let parts: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return String::new();
    }
    clean(&parts.join("/"))
}

/// The shortest equivalent path: no `//`, no `.`, `..` resolved, no
/// trailing `/`; "." for an empty result.
pub(crate) fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_and_clean_as_gos() {
        assert_eq!(join(&["app/leader", ".lock"]), "app/leader/.lock");
        assert_eq!(join(&["app/leader/", ".lock"]), "app/leader/.lock");
        assert_eq!(join(&["", "a//b/"]), "a/b");
        assert_eq!(join(&["new/", "/a/./c/../b"]), "new/a/b");
        assert_eq!(join(&["", ""]), "");
        assert_eq!(clean("../x/.."), "..");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(clean(""), ".");
    }
}
