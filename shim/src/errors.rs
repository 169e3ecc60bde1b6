//! Every error the Task API returns, and its mapping to a ttrpc status:
//! the one place where that mapping happens.

use containerd_shim::protos::ttrpc::{self, Code};

/// A failed RPC: the status code containerd maps to its errdefs, and a
/// sentence that names the task, file or field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub code: Code,
    pub message: String,
}

impl Fail {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Fail {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NOT_FOUND, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Code::ALREADY_EXISTS, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FAILED_PRECONDITION, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::INVALID_ARGUMENT, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::UNIMPLEMENTED, message)
    }
    pub fn deadline(message: impl Into<String>) -> Self {
        Self::new(Code::DEADLINE_EXCEEDED, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::INTERNAL, message)
    }
}

impl From<anyhow::Error> for Fail {
    fn from(error: anyhow::Error) -> Self {
        Fail::internal(format!("{error:#}"))
    }
}

impl From<Fail> for ttrpc::Error {
    fn from(fail: Fail) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(fail.code, fail.message))
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
