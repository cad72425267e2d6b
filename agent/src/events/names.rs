//! Names of numeric codes the kernel and libpam report.

/// The symbolic name of an errno (positive value), for the codes syscalls we
/// trace return.
pub fn errno_name(errno: i64) -> &'static str {
    match errno {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        7 => "E2BIG",
        8 => "ENOEXEC",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        26 => "ETXTBSY",
        36 => "ENAMETOOLONG",
        40 => "ELOOP",
        88 => "ENOTSOCK",
        91 => "EPROTOTYPE",
        93 => "EPROTONOSUPPORT",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        106 => "EISCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        115 => "EINPROGRESS",
        _ => "EUNKNOWN",
    }
}

/// `Some(name)` for a negative syscall result. The value comes from a
/// kernel record: i64::MIN (no errno) must not overflow the negation.
pub fn error_of(ret: i64) -> Option<&'static str> {
    (ret < 0).then(|| ret.checked_neg().map_or("EUNKNOWN", errno_name))
}

/// Linux-PAM return codes (security/_pam_types.h).
pub fn pam_code_name(code: i32) -> &'static str {
    match code {
        0 => "PAM_SUCCESS",
        1 => "PAM_OPEN_ERR",
        2 => "PAM_SYMBOL_ERR",
        3 => "PAM_SERVICE_ERR",
        4 => "PAM_SYSTEM_ERR",
        5 => "PAM_BUF_ERR",
        6 => "PAM_PERM_DENIED",
        7 => "PAM_AUTH_ERR",
        8 => "PAM_CRED_INSUFFICIENT",
        9 => "PAM_AUTHINFO_UNAVAIL",
        10 => "PAM_USER_UNKNOWN",
        11 => "PAM_MAXTRIES",
        12 => "PAM_NEW_AUTHTOK_REQD",
        13 => "PAM_ACCT_EXPIRED",
        14 => "PAM_SESSION_ERR",
        15 => "PAM_CRED_UNAVAIL",
        16 => "PAM_CRED_EXPIRED",
        17 => "PAM_CRED_ERR",
        18 => "PAM_NO_MODULE_DATA",
        19 => "PAM_CONV_ERR",
        20 => "PAM_AUTHTOK_ERR",
        21 => "PAM_AUTHTOK_RECOVERY_ERR",
        22 => "PAM_AUTHTOK_LOCK_BUSY",
        23 => "PAM_AUTHTOK_DISABLE_AGING",
        24 => "PAM_TRY_AGAIN",
        25 => "PAM_IGNORE",
        26 => "PAM_ABORT",
        27 => "PAM_AUTHTOK_EXPIRED",
        28 => "PAM_MODULE_UNKNOWN",
        29 => "PAM_BAD_ITEM",
        30 => "PAM_CONV_AGAIN",
        31 => "PAM_INCOMPLETE",
        _ => "PAM_UNKNOWN",
    }
}

pub fn pam_step_name(step: u32) -> &'static str {
    use shrike_common::pam_step::*;
    match step {
        AUTHENTICATE => "authenticate",
        ACCT_MGMT => "acct_mgmt",
        OPEN_SESSION => "open_session",
        CLOSE_SESSION => "close_session",
        SETCRED => "setcred",
        CHAUTHTOK => "chauthtok",
        _ => "unknown",
    }
}

pub fn priv_call_name(call: u32) -> &'static str {
    use shrike_common::priv_call::*;
    match call {
        SETUID => "setuid",
        SETGID => "setgid",
        SETREUID => "setreuid",
        SETREGID => "setregid",
        SETRESUID => "setresuid",
        SETRESGID => "setresgid",
        SETFSUID => "setfsuid",
        SETFSGID => "setfsgid",
        CAPSET => "capset",
        _ => "unknown",
    }
}

/// How many id arguments each set*id call takes.
pub fn priv_call_arity(call: u32) -> usize {
    use shrike_common::priv_call::*;
    match call {
        SETREUID | SETREGID => 2,
        SETRESUID | SETRESGID => 3,
        CAPSET => 0,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_names_of_any_result() {
        assert_eq!(super::error_of(-2), Some("ENOENT"));
        assert_eq!(super::error_of(0), None);
        assert_eq!(super::error_of(-100_000), Some("EUNKNOWN"));
        // A record's i64::MIN result overflowed the negation (found by the
        // kernel_record fuzz target; the input is in its corpus).
        assert_eq!(super::error_of(i64::MIN), Some("EUNKNOWN"));
    }
}
