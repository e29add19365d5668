//! Unique names, subnets and scratch directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number unique within this test process.
pub fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// `weft-t<pid>-`: the prefix every name created by this test process
/// starts with.
pub fn name_prefix() -> String {
    format!("weft-t{}-", std::process::id())
}

/// `weft-t<pid>-<counter>-<tag>`.
pub fn unique_name(tag: &str) -> String {
    format!("{}{}-{}", name_prefix(), next_id(), tag)
}

/// `10.<index>.<k>.0/24`.
pub fn subnet(index: u8, k: u8) -> String {
    format!("10.{index}.{k}.0/24")
}

/// `10.<index>.<k>.<host>`.
pub fn addr(index: u8, k: u8, host: u8) -> String {
    format!("10.{index}.{k}.{host}")
}

/// A fresh, empty directory `<tmp>/weft-t<pid>-<counter>-<tag>/`, removed
/// with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(tag));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
