//! Paths as messages show them: joined and cleaned of `x/..` pairs; the directory of a config file.

use std::path::{Component, Path, PathBuf};

/// Joins `rel` to `base` and removes `x/..` pairs, for paths that read well in messages.
pub fn join_clean(base: &Path, rel: &str) -> PathBuf {
    let joined = base.join(rel);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                match out.components().next_back() {
                    Some(Component::Normal(_)) => {
                        out.pop();
                    }
                    // `/..` is `/`.
                    Some(Component::RootDir | Component::Prefix(_)) => {}
                    _ => out.push(".."),
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// The directory of a config file, `.` for a bare file name.
pub(super) fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_joins() {
        assert_eq!(join_clean(Path::new("a/b"), "../c"), PathBuf::from("a/c"));
        assert_eq!(join_clean(Path::new("."), "k/./x"), PathBuf::from("k/x"));
        assert_eq!(
            join_clean(Path::new(".."), "../x"),
            PathBuf::from("../../x")
        );
        assert_eq!(join_clean(Path::new("a"), ".."), PathBuf::from("."));
        assert_eq!(join_clean(Path::new("/a"), "../../x"), PathBuf::from("/x"));
    }
}
