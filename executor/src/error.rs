use std::path::PathBuf;

/// Everything that can go wrong while preparing or running a container's
/// child. Messages name the thing at fault and do not repeat their source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read OCI spec {path}")]
    Spec {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("invalid OCI spec: {0}")]
    InvalidSpec(String),
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("module {path}: {reason}")]
    Module { path: String, reason: String },
    /// The shim's compiled-code cache said something the protocol does not
    /// allow, or refused a request; the message names the key or line.
    #[error("compiled-code cache: {0}")]
    Cache(String),
    /// An OCI image document the shim cannot use; the message says why.
    #[error("{0}")]
    Image(String),
}

impl Error {
    /// Wraps a failed system call with a sentence that names its object.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }

    /// Wraps a failed I/O operation with a sentence that names its object.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// The message with every source appended, on one line, the form that
    /// crosses the status pipe and reaches the ctr user.
    pub fn chain(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        message
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
