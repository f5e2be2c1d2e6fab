//! What tests leave behind: directory listings, an instance's pins and cgroup.

use std::{fs, path::Path};

use super::{cgroup::cgroup2_root, PIN_ROOT};

/// Entries of a directory (names), empty when it does not exist.
pub fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Subdirectories of a directory (names), empty when it does not exist.
pub fn subdirs(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What an instance left behind: its pin directory and/or its `run` cgroup.
pub fn leftovers(instance: &str) -> Vec<String> {
    let mut left = Vec::new();
    let pins = Path::new(PIN_ROOT).join(instance);
    if pins.exists() {
        left.push(format!("pins {}", pins.display()));
    }
    if instance.starts_with("run-") {
        if let Ok(root) = cgroup2_root() {
            let cg = root.join("interceptor").join(instance);
            if cg.exists() {
                left.push(format!("cgroup {}", cg.display()));
            }
        }
    }
    left
}
