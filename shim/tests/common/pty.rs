//! A client on a real terminal: a program (ctr, crictl) started with a
//! new pseudo-terminal as its controlling terminal and stdio, as a user's
//! shell starts it; the test types into the terminal and reads its screen.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Far beyond what a terminal session of these tests takes.
const LIMIT: Duration = Duration::from_secs(120);

pub struct PtyClient {
    master: File,
    child: Child,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
    what: String,
}

impl PtyClient {
    /// Starts `command` on a new terminal of `rows` × `cols`.
    pub fn spawn(mut command: Command, rows: u16, cols: u16, what: &str) -> PtyClient {
        let size = winsize(rows, cols);
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = File::from(pty.slave);
        command
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn a client on a terminal");
        // The command's copies of the slave are closed with `command`.
        drop(command);
        let master = File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), screen.clone());
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends with EIO once the client and its children are gone.
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        PtyClient {
            master,
            child,
            screen,
            reader,
            what: what.to_string(),
        }
    }

    /// Everything the terminal has shown so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Types `text` and Enter, as a keyboard does (a carriage return).
    pub fn type_line(&mut self, text: &str) {
        self.master
            .write_all(format!("{text}\r").as_bytes())
            .expect("type into the terminal");
    }

    /// Waits until the screen shows `wanted` after byte `from`; returns the
    /// screen's length then, for the next wait to start from.
    pub fn expect_after(&self, from: usize, wanted: &str) -> usize {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if let Some(at) = screen.get(from..).and_then(|rest| rest.find(wanted)) {
                return from + at + wanted.len();
            }
            assert!(
                start.elapsed() < LIMIT,
                "{}: the terminal never showed {wanted:?}; it shows:\n{screen}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sets the terminal's size; the kernel tells the client (SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads one winsize.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &raw const size) };
        assert_eq!(rc, 0, "resize the terminal");
    }

    /// Waits for the client to exit; returns its status and all it showed
    /// (read up to the terminal's end, when no process holds it any more).
    pub fn wait(mut self) -> (i32, String) {
        let what = self.what.clone();
        let code = super::exit_status_within(&mut self.child, &what, LIMIT);
        let screen = self.screen.clone();
        self.reader.join().expect("the terminal's reader");
        let screen = String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
        (code, screen)
    }
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}
