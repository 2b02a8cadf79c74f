//! The endpoints of the test services, as printed by `scripts/testenv env`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The test services' environment. Read from the process environment when `scripts/test` exported
/// it; otherwise from `scripts/testenv env`, so `cargo test` works by hand after `scripts/testenv up`.
#[derive(Debug)]
pub struct TestEnv {
    vars: HashMap<String, String>,
}

impl TestEnv {
    /// The shared environment, loaded once per test process.
    pub fn get() -> &'static TestEnv {
        static ENV: OnceLock<TestEnv> = OnceLock::new();
        ENV.get_or_init(TestEnv::load)
    }

    fn load() -> TestEnv {
        let mut vars: HashMap<String, String> = HashMap::new();
        if std::env::var_os("KAFKA_BOOTSTRAP").is_none() {
            let script = repo_root().join("scripts/testenv");
            let out = Command::new(&script)
                .arg("env")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} env failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            vars.extend(parse_exports(&String::from_utf8_lossy(&out.stdout)));
        }
        // The process environment wins over the script's defaults.
        vars.extend(std::env::vars());
        TestEnv { vars }
    }

    /// A variable that must be set; panics with a hint when it is not.
    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or_else(|| {
            panic!(
                "{name} is not set: start the test services with `scripts/testenv up` (see README)"
            )
        })
    }

    /// A variable that holds a path.
    pub fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(self.var(name))
    }

    /// The contents of the file a variable points at (for password files), without a trailing newline.
    pub fn file_contents(&self, name: &str) -> String {
        let path = self.path(name);
        let s = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{name}: cannot read {}: {e}", path.display()));
        s.trim_end_matches(['\n', '\r']).to_string()
    }

    /// Secrets of the test services in the mounted-Secret layout `<dir>/<secret>/<key>`.
    pub fn secrets_dir(&self) -> PathBuf {
        self.path("TESTENV_SECRETS_DIR")
    }
}

/// The repository root (this crate lives in `crates/testkit`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Parses `export NAME='value'` lines as printed by `scripts/testenv env`.
pub fn parse_exports(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|rest| rest.split_once('='))
        .map(|(name, value)| {
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(value);
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_exports() {
        let vars = super::parse_exports(
            "export A='x y'\nexport B=\"z\"\nexport C=plain\n# comment\nnot an export\n",
        );
        assert_eq!(vars["A"], "x y");
        assert_eq!(vars["B"], "z");
        assert_eq!(vars["C"], "plain");
        assert_eq!(vars.len(), 3);
    }
}
