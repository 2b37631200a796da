//! Raising the open-file limit to what the system allows, as Go programs
//! (Consul among them) do at start: every HTTP client, parked blocking
//! query, DNS TCP client and RPC peer is a descriptor, and the usual soft
//! limit of 1,024 would turn load into `EMFILE` long before any of the
//! agent's own bounds (`http::MAX_BLOCKING`, `http::MAX_IN_FLIGHT`) apply.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit in
/// force afterwards. A failure leaves the limit as it was and is logged.
pub(super) fn raise() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            soft = limit.rlim_cur,
            hard = limit.rlim_max,
            "cannot raise the open-file limit"
        );
    }
    limit.rlim_cur
}
