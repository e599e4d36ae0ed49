//! The configuration file and its profiles, and how the URL and key are chosen: flag, then
//! environment variable (clap merges those two), then profile, then the default URL.
//!
//! ```toml
//! default_profile = "local"
//!
//! [profiles.local]
//! url = "http://127.0.0.1:8080"
//! key = "…"
//!
//! [profiles.prod]
//! url = "https://audit.example.com"
//! key_file = "~/.config/auditlog/prod.key"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::args::ConnectionArgs;
use crate::error::CliError;

/// What `make run` serves.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The configuration file. Unknown fields are refused: a misspelt `kye` would otherwise
/// fall through to another key without a word.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub url: Option<String>,
    pub key: Option<String>,
    /// A file holding the key (its surrounding whitespace ignored), so that the
    /// configuration file itself can be shared; relative to the configuration file.
    pub key_file: Option<PathBuf>,
}

/// Where to connect, and with which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub url: String,
    pub key: String,
}

/// The environment the resolution reads, passed in so tests do not depend on the real one.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub xdg_config_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Env {
    pub fn from_process() -> Self {
        let non_empty = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Env {
            xdg_config_home: non_empty("XDG_CONFIG_HOME"),
            home: non_empty("HOME"),
        }
    }

    /// `$XDG_CONFIG_HOME/auditlog/config.toml`, else `~/.config/auditlog/config.toml`.
    pub fn default_config_path(&self) -> Option<PathBuf> {
        self.xdg_config_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")))
            .map(|dir| dir.join("auditlog").join("config.toml"))
    }

    /// `~/rest` → `$HOME/rest`; other paths unchanged.
    fn expand_home(&self, path: &Path) -> PathBuf {
        match (path.strip_prefix("~"), &self.home) {
            (Ok(rest), Some(home)) => home.join(rest),
            _ => path.to_path_buf(),
        }
    }
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<ConfigFile, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Config(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))
    })?;
    parse(&text).map_err(|e| CliError::Config(format!("{}: {e}", path.display())))
}

/// Parses a configuration file's text; the error is one line.
pub fn parse(text: &str) -> Result<ConfigFile, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        // toml's Display draws the offending line over several; keep the message and where.
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            })
            .unwrap_or_default();
        format!("{at}{}", e.message().trim())
    })
}

/// The URL and key for this run, from the flags/environment and the configuration file.
pub fn resolve(args: &ConnectionArgs, env: &Env) -> Result<Connection, CliError> {
    let explicit_file = args.config.as_ref().map(|p| env.expand_home(p));
    let file_path = explicit_file.clone().or_else(|| env.default_config_path());
    // The file is read only when something needs it, so that `--url` and `--key` work even
    // next to a broken configuration file; a file named explicitly must exist.
    let needs_file = args.profile.is_some()
        || explicit_file.is_some()
        || args.url.is_none()
        || args.key.is_none();
    let (config, config_path) = match &file_path {
        Some(path) if needs_file && (explicit_file.is_some() || path.exists()) => {
            (load(path)?, Some(path.clone()))
        }
        _ => (ConfigFile::default(), None),
    };

    let profile_name = args
        .profile
        .clone()
        .or_else(|| config.default_profile.clone());
    let profile = match &profile_name {
        None => None,
        Some(name) => Some(config.profiles.get(name).ok_or_else(|| {
            let source = match (&config_path, &args.profile) {
                (None, _) => match &file_path {
                    Some(p) => format!(
                        "there is no configuration file ({} does not exist)",
                        p.display()
                    ),
                    None => {
                        "there is no configuration file (neither XDG_CONFIG_HOME nor HOME is set)"
                            .to_owned()
                    }
                },
                (Some(p), Some(_)) => format!("{} has {}", p.display(), list(&config)),
                (Some(p), None) => format!(
                    "it is the default_profile of {}, which has {}",
                    p.display(),
                    list(&config)
                ),
            };
            CliError::Config(format!("no profile {name:?}: {source}"))
        })?),
    };

    let url = args
        .url
        .clone()
        .or_else(|| profile.and_then(|p| p.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let key = match &args.key {
        Some(k) => k.clone(),
        None => match profile {
            Some(p) => profile_key(
                p,
                profile_name.as_deref().unwrap_or(""),
                config_path.as_deref(),
                env,
            )?,
            None => None,
        }
        .ok_or_else(|| {
            CliError::Config(
                "no API key: give --key, set AUDIT_API_KEY, or use a profile with a key \
                 (see docs/cli.md)"
                    .to_owned(),
            )
        })?,
    };
    if key.is_empty() {
        return Err(CliError::Config("the API key is empty".to_owned()));
    }
    Ok(Connection { url, key })
}

fn list(config: &ConfigFile) -> String {
    if config.profiles.is_empty() {
        "no profiles".to_owned()
    } else {
        let names: Vec<_> = config.profiles.keys().map(String::as_str).collect();
        format!("profiles {}", names.join(", "))
    }
}

/// The key of a profile: `key`, or the content of `key_file`; never both.
fn profile_key(
    profile: &Profile,
    name: &str,
    config_path: Option<&Path>,
    env: &Env,
) -> Result<Option<String>, CliError> {
    match (&profile.key, &profile.key_file) {
        (Some(_), Some(_)) => Err(CliError::Config(format!(
            "profile {name:?} has both key and key_file: keep one"
        ))),
        (Some(k), None) => Ok(Some(k.clone())),
        (None, Some(file)) => {
            let file = env.expand_home(file);
            let file = match config_path.and_then(Path::parent) {
                Some(dir) if file.is_relative() => dir.join(file),
                _ => file,
            };
            let text = std::fs::read_to_string(&file).map_err(|e| {
                CliError::Config(format!(
                    "profile {name:?}: cannot read its key_file {}: {e}",
                    file.display()
                ))
            })?;
            Ok(Some(text.trim().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(
        url: Option<&str>,
        key: Option<&str>,
        profile: Option<&str>,
        config: Option<&Path>,
    ) -> ConnectionArgs {
        ConnectionArgs {
            url: url.map(str::to_owned),
            key: key.map(str::to_owned),
            profile: profile.map(str::to_owned),
            config: config.map(Path::to_path_buf),
            timeout: Duration::from_secs(30),
        }
    }

    fn env_in(dir: &Path) -> Env {
        Env {
            xdg_config_home: Some(dir.join("xdg")),
            home: Some(dir.join("home")),
        }
    }

    fn write_default_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("xdg/auditlog/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    const CONFIG: &str = r#"
default_profile = "local"

[profiles.local]
url = "http://127.0.0.1:9999"
key = "local-key"

[profiles.prod]
url = "https://audit.example.com"
key_file = "prod.key"
"#;

    #[test]
    fn default_paths() {
        let env = Env {
            xdg_config_home: None,
            home: Some("/home/ann".into()),
        };
        assert_eq!(
            env.default_config_path(),
            Some(PathBuf::from("/home/ann/.config/auditlog/config.toml"))
        );
        let env = Env {
            xdg_config_home: Some("/x".into()),
            home: Some("/home/ann".into()),
        };
        assert_eq!(
            env.default_config_path(),
            Some(PathBuf::from("/x/auditlog/config.toml"))
        );
        assert_eq!(
            env.expand_home(Path::new("~/k")),
            PathBuf::from("/home/ann/k")
        );
    }

    #[test]
    fn flags_win_then_profile_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let path = write_default_config(dir.path(), CONFIG);
        std::fs::write(path.with_file_name("prod.key"), "prod-key\n").unwrap();

        // The default profile.
        let c = resolve(&args(None, None, None, None), &env).unwrap();
        assert_eq!(
            c,
            Connection {
                url: "http://127.0.0.1:9999".into(),
                key: "local-key".into()
            }
        );
        // Flags (or the environment, which clap merged into them) over the profile.
        let c = resolve(&args(Some("http://a:1"), None, None, None), &env).unwrap();
        assert_eq!(
            c,
            Connection {
                url: "http://a:1".into(),
                key: "local-key".into()
            }
        );
        // A named profile, its key from a file relative to the configuration file.
        let c = resolve(&args(None, None, Some("prod"), None), &env).unwrap();
        assert_eq!(
            c,
            Connection {
                url: "https://audit.example.com".into(),
                key: "prod-key".into()
            }
        );
        let c = resolve(&args(None, Some("k"), Some("prod"), None), &env).unwrap();
        assert_eq!(c.key, "k");
        // No file: the default URL, and a key is required.
        let empty = tempfile::tempdir().unwrap();
        let env = env_in(empty.path());
        let c = resolve(&args(None, Some("k"), None, None), &env).unwrap();
        assert_eq!(
            c,
            Connection {
                url: DEFAULT_URL.into(),
                key: "k".into()
            }
        );
        let e = resolve(&args(None, None, None, None), &env).unwrap_err();
        assert!(e.to_string().starts_with("no API key"), "{e}");
    }

    #[test]
    fn explicit_config_file_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let file = dir.path().join("other.toml");
        std::fs::write(&file, "[profiles.x]\nkey = \"xk\"\n").unwrap();
        let c = resolve(&args(None, None, Some("x"), Some(&file)), &env).unwrap();
        assert_eq!(
            c,
            Connection {
                url: DEFAULT_URL.into(),
                key: "xk".into()
            }
        );

        let e = resolve(&args(None, None, Some("nope"), Some(&file)), &env).unwrap_err();
        assert!(e.to_string().contains("no profile \"nope\""), "{e}");
        assert!(e.to_string().contains("profiles x"), "{e}");

        let missing = dir.path().join("missing.toml");
        let e = resolve(&args(None, Some("k"), None, Some(&missing)), &env).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the configuration file"),
            "{e}"
        );

        let e = resolve(&args(None, None, Some("prod"), None), &env).unwrap_err();
        assert!(
            e.to_string().contains("there is no configuration file"),
            "{e}"
        );

        std::fs::write(&file, "[profiles.x]\nkey = \"a\"\nkye = \"b\"\n").unwrap();
        let e = resolve(&args(None, None, Some("x"), Some(&file)), &env).unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(e.to_string().contains("kye"), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");

        std::fs::write(&file, "[profiles.x]\nkey = \"a\"\nkey_file = \"b\"\n").unwrap();
        let e = resolve(&args(None, None, Some("x"), Some(&file)), &env).unwrap_err();
        assert!(e.to_string().contains("both key and key_file"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn a_broken_default_file_does_not_matter_when_flags_say_everything() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        write_default_config(dir.path(), "this is not toml [");
        let c = resolve(&args(Some("http://a:1"), Some("k"), None, None), &env).unwrap();
        assert_eq!(c.key, "k");
        assert!(resolve(&args(None, Some("k"), None, None), &env).is_err());
    }
}
