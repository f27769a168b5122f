//! `--state-file`: the store as JSON, loaded at start and rewritten atomically (temp file + rename) shortly after
//! changes, so a restarted server has the same objects and a resourceVersion that keeps growing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::http::AppState;
use crate::store::Store;
use crate::{Config, Error, Result};

/// The store from `path`, or a new one if the file does not exist yet.
pub fn load(path: &Path, config: &Config, now: jiff::Timestamp) -> Result<Store> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Store::new(config.watch_history, config.watch_buffer, now));
        }
        Err(source) => {
            return Err(Error::ReadState {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let format_error = |reason: String| Error::StateFormat {
        path: path.to_path_buf(),
        reason,
    };
    let snapshot = serde_json::from_str(&text).map_err(|e| format_error(e.to_string()))?;
    Store::restore(&snapshot, config.watch_history, config.watch_buffer).map_err(format_error)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

async fn write(state: &AppState, path: &Path) {
    let snapshot = state.store.lock().unwrap_or_else(|p| p.into_inner()).snapshot();
    let temp = temp_path(path);
    let result = async {
        tokio::fs::write(&temp, snapshot.to_string()).await?;
        tokio::fs::rename(&temp, path).await
    }
    .await;
    match result {
        Ok(()) => tracing::debug!(path = %path.display(), "state file written"),
        Err(error) => tracing::error!(path = %path.display(), %error, "cannot write state file"),
    }
}

/// Writes the state file after each burst of changes, and once more at shutdown.
pub async fn run(
    state: Arc<AppState>,
    changed: Arc<Notify>,
    path: PathBuf,
    delay: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = changed.notified() => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => {}
                }
                write(&state, &path).await;
            }
            () = shutdown.cancelled() => {
                write(&state, &path).await;
                return;
            }
        }
    }
}
