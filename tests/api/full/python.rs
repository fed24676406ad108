//! The pinned Python tools (edX's client, Schemathesis) in a virtual environment under
//! `target/`, made once per requirements file and reused by later runs.

use std::path::{Path, PathBuf};

use tokio::process::Command;
use tokio::sync::OnceCell;

const REQUIREMENTS: &str = include_str!("../../python/requirements.txt");

static ENV: OnceCell<PathBuf> = OnceCell::const_new();

/// The directory of this crate's Python test scripts.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The virtual environment's `bin` directory, created and filled on first use (needs
/// `python3` with `venv`, and PyPI through pip's usual configuration).
pub async fn bin_dir() -> &'static Path {
    ENV.get_or_init(|| async {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-env");
        let bin = venv.join("bin");
        let marker = venv.join("installed-requirements.txt");
        if std::fs::read_to_string(&marker).ok().as_deref() == Some(REQUIREMENTS) {
            return bin;
        }
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).await;
        run(Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(scripts_dir().join("requirements.txt")))
        .await;
        std::fs::write(&marker, REQUIREMENTS).expect("write the venv marker");
        bin
    })
    .await
}

async fn run(command: &mut Command) {
    let output = command.output().await.expect("run a Python set-up step");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
