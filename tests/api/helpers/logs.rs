//! Log capture: what the apps logged, for tests that check what was (not) logged.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Logs of every app in this test process, captured at debug level so that tests can
/// check what was (not) logged. Printed too when `TEST_LOG` is set.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn init_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = CaptureWriter(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    });
}

/// Everything logged so far by every app in this test process.
pub fn captured_logs() -> String {
    let logs = LOGS.get().expect("logs initialised by spawn_app");
    String::from_utf8_lossy(&logs.lock().expect("log buffer")).into_owned()
}
