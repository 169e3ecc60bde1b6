//! The main function of a container's child (`__child <id> <bundle>`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::exit::{FAILURE, outcome};
use crate::protocol::{CONTROL_FD, GO_START, STATUS_FD, encode_error, encode_ready};
use crate::signals;
use crate::spec::{ChildConfig, child_config, load};
use crate::wasm::{GuestEnv, Prepared, engine, prepare, run, split_entry};

/// Runs the child: prepare, report, wait for Start, run, exit with the
/// guest's status. Never returns: the child must end with the module's code.
pub fn main(args: &[String]) -> ! {
    // Before any thread exists, so every thread inherits the mask.
    if let Err(e) = signals::block() {
        eprintln!("block termination signals: {e}");
        std::process::exit(FAILURE);
    }
    // SAFETY: the shim hands the child these two descriptors (protocol.rs)
    // and nothing else in this process owns them.
    let (mut status, mut control) =
        unsafe { (File::from_raw_fd(STATUS_FD), File::from_raw_fd(CONTROL_FD)) };
    let prepared = match parse_args(args).and_then(|(_, bundle)| prepare_child(&bundle)) {
        Ok(prepared) => prepared,
        Err(e) => {
            let _ = status.write_all(&encode_error(&e.chain()));
            std::process::exit(FAILURE);
        }
    };
    let _ = status.write_all(&encode_ready());
    drop(status);

    let mut byte = [0u8];
    if control.read_exact(&mut byte).is_err() || byte[0] != GO_START {
        // Deleted before Start, or the shim is gone: run nothing.
        std::process::exit(FAILURE);
    }
    drop(control);
    let (config, prepared) = prepared;
    let guest = GuestEnv {
        args: &config.args,
        env: &config.env,
        cwd: &config.cwd,
    };
    let result = outcome(run(&prepared, &guest), signals::received());
    if let Some(message) = result.message {
        eprintln!("{message}");
    }
    std::process::exit(result.status)
}

fn parse_args(args: &[String]) -> Result<(String, PathBuf)> {
    match args {
        [id, bundle] => Ok((id.clone(), PathBuf::from(bundle))),
        _ => Err(Error::InvalidSpec(format!(
            "child expects <id> <bundle>, got {args:?}"
        ))),
    }
}

fn prepare_child(bundle: &Path) -> Result<(ChildConfig, Prepared)> {
    let spec = load(bundle)?;
    let config = child_config(&spec, bundle)?;
    crate::sandbox::enter(&config)?;
    signals::spawn_watcher().map_err(Error::io("start the signal thread"))?;
    let (path, _) = split_entry(&config.args[0]);
    let resolved = config.cwd.join(path);
    let bytes = std::fs::read(&resolved).map_err(|e| Error::Module {
        path: path.to_string(),
        reason: format!("cannot read it in the container's rootfs: {e}"),
    })?;
    let engine = engine()?;
    signals::watch_engine(&engine);
    let prepared = prepare(&engine, &config.args[0], &bytes)?;
    Ok((config, prepared))
}
