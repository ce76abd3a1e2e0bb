//! PostgreSQL's own programs (`initdb`, `pg_ctl`, `pg_basebackup`), found and run as the
//! right operating-system user.
//!
//! `initdb` and `postgres` refuse to run as root, so when Umbra runs as root it runs them
//! through `runuser -u <os_user> --`, and the directories they write to are owned by that
//! user. The default user is `postgres`, which Debian's packages create.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use tracing::debug;

use crate::postgres::error::PgError;

/// Operating-system user that runs the server when Umbra runs as root.
pub const DEFAULT_OS_USER: &str = "postgres";

/// Directories where Debian's packages install the server programs, newest version first.
const DEBIAN_BIN_DIRS: &[&str] = &[
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
];

/// The server programs and the user that runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    bin_dir: Option<PathBuf>,
    os_user: Option<String>,
}

impl Programs {
    /// Locates the programs in `bin_dir`, or else on `PATH`, or else in Debian's
    /// directories. `os_user` runs them; `None` picks [`DEFAULT_OS_USER`] when Umbra runs
    /// as root and the current user otherwise.
    pub fn locate(bin_dir: Option<PathBuf>, os_user: Option<String>) -> Programs {
        let bin_dir = bin_dir.or_else(|| {
            if find_on_path("pg_ctl").is_some() {
                return None;
            }
            DEBIAN_BIN_DIRS
                .iter()
                .map(PathBuf::from)
                .find(|dir| dir.join("pg_ctl").is_file())
        });
        let os_user = os_user.or_else(|| {
            rustix::process::geteuid()
                .is_root()
                .then(|| DEFAULT_OS_USER.to_owned())
        });
        Programs { bin_dir, os_user }
    }

    /// User that runs the programs, or `None` for the current user.
    pub fn os_user(&self) -> Option<&str> {
        self.os_user.as_deref()
    }

    /// Path of `program`, or an error that names where it was looked for.
    pub fn program(&self, program: &str) -> Result<PathBuf, PgError> {
        let found = match &self.bin_dir {
            Some(dir) => Some(dir.join(program)).filter(|path| path.is_file()),
            None => find_on_path(program),
        };
        found.ok_or_else(|| PgError::MissingProgram {
            program: program.to_owned(),
            searched: match &self.bin_dir {
                Some(dir) => format!("`{}`", dir.display()),
                None => "`PATH` and Debian's /usr/lib/postgresql/<version>/bin".to_owned(),
            },
            fix: match &self.bin_dir {
                Some(_) => {
                    "set `bin_dir` to the directory that holds the server's programs, such as `/usr/lib/postgresql/15/bin`"
                }
                None => "install the `postgresql-15` package or set `bin_dir`",
            },
        })
    }

    /// Runs `program` with `args` as the server user and returns its standard output.
    /// `env` adds environment variables, such as `PGPASSWORD`.
    pub async fn run(
        &self,
        program: &str,
        args: &[OsString],
        env: &[(&str, &str)],
    ) -> Result<String, PgError> {
        let path = self.program(program)?;
        let mut command = match &self.os_user {
            Some(user) if must_switch_to(user) => {
                let mut command = Command::new("runuser");
                command.arg("-u").arg(user).arg("--").arg(&path);
                command
            }
            _ => Command::new(&path),
        };
        command.args(args).envs(env.iter().copied());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Start in a directory that the server user can read, or `pg_ctl` warns.
        command.current_dir("/");
        command.kill_on_drop(true);

        debug!(program, ?args, "running PostgreSQL program");
        let output = command.output().await.map_err(|source| PgError::Spawn {
            program: program.to_owned(),
            source,
        })?;
        if !output.status.success() {
            return Err(PgError::ProgramFailed {
                program: program.to_owned(),
                status: output.status,
                output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Creates `dir` (and missing parents) with mode 0700, owned by the server user, so
    /// that `initdb`, `pg_basebackup` and the server can write there.
    pub async fn prepare_dir(&self, dir: &Path) -> Result<(), PgError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| PgError::io("create directory", dir, source))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| PgError::io("set permissions of", dir, source))?;
        if let Some(user) = self.os_user.as_deref().filter(|user| must_switch_to(user)) {
            let (uid, gid) = user_ids(user).await?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|source| PgError::io("change owner of", dir, source))?;
        }
        Ok(())
    }

    /// Writes `contents` to `path` and gives the file to the server user, so that the
    /// server can read it and `ALTER SYSTEM` can replace it.
    pub async fn write_file(&self, path: &Path, contents: &str) -> Result<(), PgError> {
        std::fs::write(path, contents).map_err(|source| PgError::io("write", path, source))?;
        if let Some(user) = self.os_user.as_deref().filter(|user| must_switch_to(user)) {
            let (uid, gid) = user_ids(user).await?;
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|source| PgError::io("change owner of", path, source))?;
        }
        Ok(())
    }

    /// Stops the server of `data_dir` immediately, blocking the calling thread. Meant for
    /// `Drop` guards, which cannot wait for a future. Errors are ignored because the
    /// server may already be gone.
    pub fn stop_blocking(&self, data_dir: &Path) {
        let Ok(pg_ctl) = self.program("pg_ctl") else {
            return;
        };
        let mut command = match self.os_user.as_deref().filter(|user| must_switch_to(user)) {
            Some(user) => {
                let mut command = std::process::Command::new("runuser");
                command.arg("-u").arg(user).arg("--").arg(&pg_ctl);
                command
            }
            None => std::process::Command::new(&pg_ctl),
        };
        command
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(data_dir)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = command.status();
    }

    /// Creates a cluster in `data_dir` with trust authentication for local connections.
    pub async fn initdb(&self, data_dir: &Path, superuser: &str) -> Result<(), PgError> {
        self.prepare_dir(data_dir).await?;
        let args: Vec<OsString> = vec![
            "-D".into(),
            data_dir.into(),
            "-U".into(),
            superuser.into(),
            "--auth=trust".into(),
            "--no-sync".into(),
            "--encoding=UTF8".into(),
            "--locale=C".into(),
        ];
        self.run("initdb", &args, &[]).await.map(drop)
    }

    /// Starts the server of `data_dir` and waits until it accepts connections. `options`
    /// are `-c name=value` overrides, which outrank every configuration file.
    pub async fn start(
        &self,
        data_dir: &Path,
        log_file: &Path,
        options: &[(String, String)],
    ) -> Result<(), PgError> {
        let mut server_options = String::new();
        for (name, value) in options {
            server_options.push_str(&format!(" -c {name}={}", quote_option(value)));
        }
        let args: Vec<OsString> = vec![
            "start".into(),
            "-w".into(),
            "-t".into(),
            "60".into(),
            "-D".into(),
            data_dir.into(),
            "-l".into(),
            log_file.into(),
            "-o".into(),
            server_options.into(),
        ];
        self.run("pg_ctl", &args, &[]).await.map(drop)
    }

    /// Restarts the server of `data_dir` with the options it was started with, and waits
    /// until it accepts connections again. The new server writes its output to
    /// `log_file`, which must be given: without it the server would inherit this
    /// command's output pipes and `pg_ctl` would never appear to finish.
    pub async fn restart(&self, data_dir: &Path, log_file: &Path) -> Result<(), PgError> {
        let args: Vec<OsString> = vec![
            "restart".into(),
            "-w".into(),
            "-t".into(),
            "60".into(),
            "-m".into(),
            "fast".into(),
            "-D".into(),
            data_dir.into(),
            "-l".into(),
            log_file.into(),
        ];
        self.run("pg_ctl", &args, &[]).await.map(drop)
    }

    /// Stops the server of `data_dir`. `immediate` skips the shutdown checkpoint, which
    /// is right for a shadow that is about to be removed.
    pub async fn stop(&self, data_dir: &Path, immediate: bool) -> Result<(), PgError> {
        let mode = if immediate { "immediate" } else { "fast" };
        let args: Vec<OsString> = vec![
            "stop".into(),
            "-w".into(),
            "-m".into(),
            mode.into(),
            "-D".into(),
            data_dir.into(),
        ];
        self.run("pg_ctl", &args, &[]).await.map(drop)
    }
}

/// Returns the process id of the postmaster of `data_dir`, read from `postmaster.pid`,
/// or `None` when no server runs there.
pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Quotes a `-c` value for the postmaster's option parser, which splits on spaces and
/// honours backslash escapes.
fn quote_option(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len());
    for character in value.chars() {
        if character == ' ' || character == '\\' || character == '\'' || character == '"' {
            quoted.push('\\');
        }
        quoted.push(character);
    }
    if quoted.is_empty() {
        "''".to_owned()
    } else {
        quoted
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Returns whether programs must switch to `user`: only root can, and only root needs to.
fn must_switch_to(user: &str) -> bool {
    rustix::process::geteuid().is_root() && user != "root"
}

/// User and group ids of `user`, from `id`.
async fn user_ids(user: &str) -> Result<(u32, u32), PgError> {
    let uid = id_field(user, "-u").await?;
    let gid = id_field(user, "-g").await?;
    Ok((uid, gid))
}

async fn id_field(user: &str, flag: &str) -> Result<u32, PgError> {
    let output = Command::new("id")
        .arg(flag)
        .arg(user)
        .output()
        .await
        .map_err(|source| PgError::Spawn {
            program: "id".to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(PgError::UnknownOsUser(user.to_owned()));
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| PgError::UnknownOsUser(user.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_quoting_escapes_spaces() {
        assert_eq!(quote_option("/tmp/a b"), "/tmp/a\\ b");
        assert_eq!(quote_option(""), "''");
        assert_eq!(quote_option("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn missing_program_error_names_it() {
        let programs = Programs::locate(Some(PathBuf::from("/nonexistent/bin")), None);

        let error = programs
            .program("pg_basebackup")
            .expect_err("missing program");

        let message = error.to_string();
        assert!(message.contains("`pg_basebackup`"), "{message}");
        assert!(message.contains("/nonexistent/bin"), "{message}");
    }
}
