//! Small files the agent keeps in its data dir (TTL check states, the
//! services registered over the API), replaced atomically so a crash leaves
//! the old file or the new one, never half of either.

use std::path::Path;

/// Replaces the file at `path` with `bytes`: write a temporary file beside
/// it, sync it, rename it over. Creates the parent directory if needed.
pub(crate) async fn write_atomic(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}
