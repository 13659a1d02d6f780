//! The crate's one error type.

use std::path::PathBuf;

use chipcard_ipc::ParseError;

/// Everything that can stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is not a valid group-format document.
    #[error("{path}:{source}")]
    ConfigSyntax {
        /// The file (or `<embedded default>`).
        path: PathBuf,
        /// Where and what (`LINE:COL: message`).
        #[source]
        source: ParseError,
    },
    /// A configuration value is missing or wrong; `key` names it (`server/socketMode`), and
    /// `position` says where it stands (or the group that lacks it), when it can be found.
    #[error("{}{}: {key}: {message}", path.display(), at(position))]
    Config {
        /// The file (or `<embedded default>`).
        path: PathBuf,
        /// The 1-based line and column of the key.
        position: Option<(usize, usize)>,
        /// The key, as a path from the top of the file.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The card definitions could not be loaded.
    #[error("card definitions in {path}: {message}")]
    CardTypes {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The client socket could not be set up.
    #[error("socket {path}: {message}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A driver process could not be started.
    #[error("cannot start driver {program}: {source}")]
    SpawnDriver {
        /// The driver program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `:LINE:COL` for a known position, nothing otherwise.
fn at(position: &Option<(usize, usize)>) -> String {
    position.map_or_else(String::new, |(line, column)| format!(":{line}:{column}"))
}
