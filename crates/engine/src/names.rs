//! Checks of the names a spec gives that become parts of object paths: resource names (backup
//! names, restore names) and snapshot ids. Shared by every operation, so each refuses the same
//! names with the same message.

use kafka_backup_format::RESERVED_NAMES;

use crate::error::{Error, Result};

/// Checks a resource name (`metadata.name`): it becomes a path component and, for a backup,
/// part of every backup id.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "metadata.name",
            format!(
                "'{name}' is not a valid name: use lower-case letters, digits, '-' and '.', starting with a letter or digit"
            ),
        ))
    }
}

/// Checks a backup name: as [`check_name`], and not one of the repository's own top-level
/// folders ([`RESERVED_NAMES`]), whose objects its backups would otherwise mix with.
pub fn check_backup_name(name: &str) -> Result<()> {
    check_name(name)?;
    if RESERVED_NAMES.contains(&name) {
        return Err(invalid(
            "metadata.name",
            format!(
                "'{name}' is reserved: the repository keeps its own objects under {name}/; choose another name"
            ),
        ));
    }
    Ok(())
}

/// Checks a snapshot id: it becomes an object name.
pub fn check_snapshot_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("'{id}' is not a valid snapshot id: use letters, digits, '-', '_' and '.'"),
        ))
    }
}

/// An [`Error::InvalidSpec`] for `field`.
pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        field: field.to_string(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_refused_as_backup_names_only() {
        assert!(check_backup_name("orders-backup").is_ok());
        let e = check_backup_name("offset-snapshots")
            .expect_err("reserved")
            .to_string();
        assert!(
            e.starts_with("metadata.name: 'offset-snapshots' is reserved"),
            "{e}"
        );
        // A restore or offset reset of that name writes nothing at the top level.
        assert!(check_name("offset-snapshots").is_ok());
        assert!(check_name("Orders").is_err());
        assert!(check_snapshot_id("spec.snapshotId", "a.b_c-1").is_ok());
        assert!(check_snapshot_id("spec.snapshotId", ".hidden").is_err());
    }
}
