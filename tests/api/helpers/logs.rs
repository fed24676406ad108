//! Log capture per test: what a test's apps logged, for tests that check what was (not)
//! logged, without the lines of the tests running beside it.
//!
//! One subscriber serves the process (tracing has one global default), but its writer
//! files each line under the tokio runtime it was logged from. Every `#[tokio::test]`
//! has a runtime of its own, and everything its apps do runs there (their tasks, and
//! `spawn_blocking`, whose threads enter the same runtime), so a test reads exactly the
//! lines of its own apps and issuer. Lines logged outside any runtime are not kept.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::runtime::{Handle, Id};

type Buffer = Arc<Mutex<Vec<u8>>>;

/// The captured lines of each test's runtime. Printed too when `TEST_LOG` is set.
static LOGS: OnceLock<Mutex<HashMap<Id, Buffer>>> = OnceLock::new();

fn buffers() -> &'static Mutex<HashMap<Id, Buffer>> {
    LOGS.get_or_init(Default::default)
}

/// The buffer of the runtime the calling thread runs in, if any.
fn current_buffer() -> Option<Buffer> {
    let id = Handle::try_current().ok()?.id();
    let mut buffers = buffers().lock().expect("log buffers");
    Some(buffers.entry(id).or_default().clone())
}

/// Writes one formatted line (the fmt layer writes each event at once) into the buffer
/// of the runtime that logged it.
struct CaptureWriter(Option<Buffer>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        if let Some(buffer) = &self.0 {
            buffer.lock().expect("log buffer").extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per process), at debug level.
pub(super) fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(|| CaptureWriter(current_buffer()))
            .try_init();
    });
}

/// Everything logged so far by the apps of the calling test (its tokio runtime).
pub fn captured_logs() -> String {
    assert!(LOGS.get().is_some(), "logs are initialised by spawn_app");
    current_buffer()
        .map(|buffer| String::from_utf8_lossy(&buffer.lock().expect("log buffer")).into_owned())
        .expect("captured_logs is called inside a tokio test")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tests logging at the same time each see their own line and never the other's.
    #[test]
    fn each_test_sees_only_the_lines_logged_in_its_own_runtime() {
        init_logs();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let run = |name: &'static str| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    barrier.wait();
                    tracing::info!(test = name, "a line from a task");
                    tokio::spawn(async move { tracing::info!(test = name, "a spawned task") })
                        .await
                        .unwrap();
                    tokio::task::spawn_blocking(move || tracing::info!(test = name, "blocking"))
                        .await
                        .unwrap();
                    barrier.wait();
                    captured_logs()
                })
            })
        };
        let (one, two) = (run("one"), run("two"));
        let (one, two) = (one.join().unwrap(), two.join().unwrap());
        for (logs, mine, other) in [(&one, "one", "two"), (&two, "two", "one")] {
            for line in ["a line from a task", "a spawned task", "blocking"] {
                assert!(logs.contains(&format!("{line} test=\"{mine}\"")), "{logs}");
            }
            assert!(!logs.contains(&format!("test=\"{other}\"")), "{logs}");
        }
    }
}
