//! Naming one buildpack: [`BuildpackSource`], read from BUILDPACK_URL, a
//! `.buildpacks` line, or an app's choice through the API (where Heroku's
//! names for the built-in languages become crew's own).
//!
//! Apart from selection and the settings because both hold sources: they
//! import this module, and it imports neither.

use std::fmt;
use std::path::PathBuf;

use crate::builtin::BUILTIN_NAMES;
use crate::error::BuildError;

/// One buildpack, as named by BUILDPACK_URL, a `.buildpacks` line, or the
/// built-in list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildpackSource {
    /// One of [`BUILTIN_NAMES`].
    Builtin(String),
    /// A buildpack directory on this machine.
    Path(PathBuf),
    /// A git URL, optionally `#ref` (a branch or tag: it is passed to
    /// `git clone --branch`).
    Git(String),
}

impl BuildpackSource {
    /// Reads one BUILDPACK_URL value or `.buildpacks` line: a built-in name, a
    /// URL with a scheme (`https://`, `file://`, ...) or `git@host:path`, or an
    /// absolute path. Anything else (a relative path, `org/name` shorthand) is
    /// refused rather than guessed at.
    pub fn parse(text: &str) -> Result<BuildpackSource, BuildError> {
        let text = text.trim();
        if BUILTIN_NAMES.contains(&text) {
            Ok(BuildpackSource::Builtin(text.to_owned()))
        } else if text.contains("://") || text.starts_with("git@") {
            Ok(BuildpackSource::Git(text.to_owned()))
        } else if text.starts_with('/') {
            Ok(BuildpackSource::Path(PathBuf::from(text)))
        } else {
            Err(BuildError::InvalidBuildpackUrl(text.to_owned()))
        }
    }
}

impl BuildpackSource {
    /// Reads a buildpack as an app chooses it through the API: what
    /// [`BuildpackSource::parse`] reads, and also Heroku's names for the
    /// languages crew has built in (`heroku/python`, and the registry's and
    /// codon's `.tgz` URLs of them), which become crew's own buildpack.
    pub fn parse_choice(text: &str) -> Result<BuildpackSource, BuildError> {
        let text = text.trim();
        let text = text.strip_prefix("urn:buildpack:").unwrap_or(text);
        let heroku_name = text.strip_prefix("heroku/").or_else(|| {
            [
                "https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku/",
                "https://codon-buildpacks.s3.amazonaws.com/buildpacks/heroku/",
            ]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix)?.strip_suffix(".tgz"))
        });
        match heroku_name {
            Some(name) if BUILTIN_NAMES.contains(&name) && name != "unsupported" => {
                Ok(BuildpackSource::Builtin(name.to_owned()))
            }
            Some(_) if !text.contains("://") => {
                Err(BuildError::InvalidBuildpackUrl(text.to_owned()))
            }
            _ => BuildpackSource::parse(text),
        }
    }
}

impl fmt::Display for BuildpackSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildpackSource::Builtin(name) => write!(f, "{name}"),
            BuildpackSource::Path(path) => write!(f, "{}", path.display()),
            BuildpackSource::Git(url) => write!(f, "{url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildpack_sources_parse() {
        let cases = [
            ("python", BuildpackSource::Builtin("python".into())),
            (
                " https://github.com/a/b.git#v2 ",
                BuildpackSource::Git("https://github.com/a/b.git#v2".into()),
            ),
            (
                "git@github.com:a/b.git",
                BuildpackSource::Git("git@github.com:a/b.git".into()),
            ),
            (
                "file:///srv/bp",
                BuildpackSource::Git("file:///srv/bp".into()),
            ),
            ("/srv/bp", BuildpackSource::Path("/srv/bp".into())),
        ];
        for (text, want) in cases {
            assert_eq!(BuildpackSource::parse(text).ok(), Some(want), "{text}");
        }
        for bad in ["heroku/python", "./bp", "bp", ""] {
            assert!(
                matches!(
                    BuildpackSource::parse(bad),
                    Err(BuildError::InvalidBuildpackUrl(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn herokus_names_for_the_built_in_languages_are_crews_own() {
        for (text, want) in [
            ("heroku/python", "python"),
            ("heroku/nodejs", "nodejs"),
            ("urn:buildpack:heroku/ruby", "ruby"),
            (
                "https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku/go.tgz",
                "go",
            ),
            (
                "https://codon-buildpacks.s3.amazonaws.com/buildpacks/heroku/nodejs.tgz",
                "nodejs",
            ),
            ("procfile", "procfile"),
        ] {
            assert_eq!(
                BuildpackSource::parse_choice(text).ok(),
                Some(BuildpackSource::Builtin(want.into())),
                "{text}"
            );
        }
        assert_eq!(
            BuildpackSource::parse_choice("https://github.com/heroku/heroku-buildpack-php").ok(),
            Some(BuildpackSource::Git(
                "https://github.com/heroku/heroku-buildpack-php".into()
            ))
        );
        for bad in ["heroku/php", "heroku/unsupported", "heroku/../x", "x/y", ""] {
            assert!(BuildpackSource::parse_choice(bad).is_err(), "{bad}");
        }
    }
}
