//! The files tokenvend keeps on disk: the data directory (0700), the generated key files
//! and the SQLite database with its `-wal` and `-shm` files (0600), whatever the umask
//! and whatever mode an older version or an operator left them in.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::SecretString;
use sqlx::sqlite::SqliteConnectOptions;

/// Creates the data directory if needed and makes it private to this user.
pub fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    restrict(dir, 0o700)
}

/// Sets `path` to exactly `mode` unless it already is: a mode given at creation is
/// narrowed by the umask, and a file left by an older version may be wider.
#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if current == mode {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot make {} mode {mode:o}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), from = format!("{current:o}"), to = format!("{mode:o}"), "narrowed file mode");
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> Result<(), String> {
    Ok(())
}

/// Before sqlx opens a SQLite database: creates its file (0600) if it is missing, and
/// narrows the database, `-wal` and `-shm` files that exist to 0600. SQLite gives the
/// `-wal` and `-shm` files it creates later the database file's mode. In-memory
/// databases and URLs sqlx cannot read are left to sqlx.
pub fn prepare_sqlite_files(url: &str) -> Result<(), String> {
    let Ok(options) = SqliteConnectOptions::from_str(url) else {
        return Ok(());
    };
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let path = options.get_filename();
    if path.to_string_lossy().starts_with("file:") || query.contains("mode=memory") {
        return Ok(());
    }
    if !path.exists() && !query.contains("mode=ro") {
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        match open.open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // A missing directory and the like: sqlx says it better.
            Err(_) => return Ok(()),
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = PathBuf::from(file);
        if file.exists() {
            restrict(&file, 0o600)?;
        }
    }
    Ok(())
}

/// Reads a one-line secret file, or creates it (mode 0600) with a generated value. The
/// path is logged; the value never is.
pub fn read_or_create_secret(
    path: &Path,
    generate: impl FnOnce() -> String,
) -> Result<SecretString, String> {
    match std::fs::read_to_string(path) {
        Ok(content) => {
            let value = content.trim();
            if value.is_empty() {
                return Err(format!("{} is empty", path.display()));
            }
            restrict(path, 0o600)?;
            return Ok(SecretString::from(value.to_owned()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let value = generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    writeln!(file, "{value}")
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    restrict(path, 0o600)?;
    tracing::warn!(path = %path.display(), "generated a new secret file; keep it safe and back it up");
    Ok(SecretString::from(value))
}
