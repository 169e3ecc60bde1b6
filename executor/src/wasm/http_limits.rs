//! The limits of a served `wasi:http` component, each with a default and
//! a variable of the container's environment to change it. They keep a
//! client from holding the server (a slow or idle connection, one
//! connection too many) and a request from holding its instance (a guest
//! that loops or waits forever, or grows its memory without bound).

use std::time::Duration;

/// Seconds a client has to send a request's headers; also how long a
/// kept-alive connection may stay idle before its next request.
pub const HEADER_TIMEOUT_VAR: &str = "WASI_HTTP_HEADER_TIMEOUT";
/// Connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS_VAR: &str = "WASI_HTTP_MAX_CONNECTIONS";
/// Seconds one request's guest may run before it is stopped (503).
pub const REQUEST_TIMEOUT_VAR: &str = "WASI_HTTP_REQUEST_TIMEOUT";
/// Bytes of linear memory one request's instance may grow to.
pub const REQUEST_MEMORY_VAR: &str = "WASI_HTTP_REQUEST_MEMORY";

const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_REQUEST_MEMORY: u64 = 512 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub request_timeout: Duration,
    pub request_memory: u64,
}

/// The limits from the container's environment; a value that is not a
/// positive number is an error that names its variable.
pub fn from_env(env: &[(String, String)]) -> Result<HttpLimits, String> {
    let get = |var: &str| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.as_str());
    let number = |var: &str, what: &str| -> Result<Option<u64>, String> {
        let Some(value) = get(var) else {
            return Ok(None);
        };
        match value.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!(
                "{var} {value:?} is not a positive number of {what}"
            )),
        }
    };
    let seconds = |var: &str, default: Duration| -> Result<Duration, String> {
        Ok(number(var, "seconds")?.map_or(default, Duration::from_secs))
    };
    Ok(HttpLimits {
        header_timeout: seconds(HEADER_TIMEOUT_VAR, DEFAULT_HEADER_TIMEOUT)?,
        max_connections: number(MAX_CONNECTIONS_VAR, "connections")?
            .map_or(DEFAULT_MAX_CONNECTIONS, |n| n.min(1 << 20) as usize),
        request_timeout: seconds(REQUEST_TIMEOUT_VAR, DEFAULT_REQUEST_TIMEOUT)?,
        request_memory: number(REQUEST_MEMORY_VAR, "bytes")?.unwrap_or(DEFAULT_REQUEST_MEMORY),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let limits = from_env(&env(&[])).unwrap();
        assert_eq!(limits.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(limits.max_connections, DEFAULT_MAX_CONNECTIONS);
        let limits = from_env(&env(&[
            (HEADER_TIMEOUT_VAR, "2"),
            (MAX_CONNECTIONS_VAR, "3"),
            (REQUEST_TIMEOUT_VAR, "4"),
            (REQUEST_MEMORY_VAR, "5000000"),
        ]))
        .unwrap();
        assert_eq!(
            limits,
            HttpLimits {
                header_timeout: Duration::from_secs(2),
                max_connections: 3,
                request_timeout: Duration::from_secs(4),
                request_memory: 5_000_000,
            }
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for bad in ["0", "-1", "soon", ""] {
            let error = from_env(&env(&[(REQUEST_TIMEOUT_VAR, bad)])).unwrap_err();
            assert!(error.contains(REQUEST_TIMEOUT_VAR), "{error}");
        }
    }
}
