//! End-to-end builds of fixture apps made in temp dirs, with the built-in
//! buildpacks and with small custom buildpacks written by the tests.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crew_buildpack::{
    BUILTIN_NAMES, BuildError, BuildOutput, BuildRequest, BuildpackSource, Buildpacks,
};
use tempfile::TempDir;

struct Fixture {
    root: TempDir,
    buildpacks: Buildpacks,
}

struct Built {
    result: Result<BuildOutput, BuildError>,
    lines: Vec<String>,
    slug: PathBuf,
}

impl Built {
    fn output(&self) -> &BuildOutput {
        match &self.result {
            Ok(output) => output,
            Err(e) => panic!(
                "build failed: {e}\n{}\n{}",
                self.lines.join("\n"),
                e.pusher_lines().join("\n")
            ),
        }
    }

    fn error(&self) -> &BuildError {
        match &self.result {
            Ok(output) => panic!("build succeeded: {output:?}\n{}", self.lines.join("\n")),
            Err(e) => e,
        }
    }

    fn has_line(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().expect("tempdir");
    let buildpacks =
        Buildpacks::install_builtin(&root.path().join("buildpacks")).expect("install built-ins");
    Fixture { root, buildpacks }
}

impl Fixture {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Writes `files` (path, contents) under `rel`; a path ending in `*` is made
    /// executable (without the `*`).
    fn app(&self, rel: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path(rel);
        fs::create_dir_all(&dir).expect("mkdir app");
        for (name, text) in files {
            write(&dir, name, text);
        }
        dir
    }

    /// A buildpack directory whose scripts are `#!/bin/sh` plus the given bodies.
    fn buildpack(&self, rel: &str, detect: Option<&str>, compile: &str, release: &str) -> PathBuf {
        let dir = self.path(rel);
        let mut scripts = vec![("bin/compile*", compile), ("bin/release*", release)];
        if let Some(detect) = detect {
            scripts.push(("bin/detect*", detect));
        }
        for (name, body) in scripts {
            write(&dir, name, &format!("#!/bin/sh\n{body}\n"));
        }
        dir
    }

    fn build(&self, source: &Path, config: &[(&str, &str)], timeout: Duration) -> Built {
        let config: BTreeMap<String, String> = config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let slug = self.path("slugs/slug.tar.gz");
        let cache = self.path("cache");
        let req = BuildRequest {
            app: "demo",
            source,
            cache: &cache,
            config: &config,
            slug_path: &slug,
            timeout,
            source_version: Some("0123456789abcdef"),
        };
        let mut lines = Vec::new();
        let result = self
            .buildpacks
            .build(&req, &mut |line| lines.push(line.to_owned()));
        Built {
            result,
            lines,
            slug,
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let (name, executable) = match name.strip_suffix('*') {
        Some(name) => (name, true),
        None => (name, false),
    };
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(&path, text).expect("write");
    if executable {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq)]
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(PathBuf),
}

/// Every entry of a slug, by path, read with the tar crate.
fn slug_entries(slug: &Path) -> BTreeMap<String, Entry> {
    let file = fs::File::open(slug).expect("open slug");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut entries = BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mode = entry.header().mode().expect("mode") & 0o7777;
        let kind = entry.header().entry_type();
        let value = if kind.is_dir() {
            Entry::Dir(mode)
        } else if kind.is_symlink() {
            Entry::Link(
                entry
                    .link_name()
                    .expect("link")
                    .expect("target")
                    .into_owned(),
            )
        } else {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read entry");
            Entry::File(mode, bytes)
        };
        entries.insert(path, value);
    }
    entries
}

fn unpack(slug: &Path, into: &Path) {
    let file = fs::File::open(slug).expect("open slug");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive.set_preserve_permissions(true);
    archive.unpack(into).expect("unpack");
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn procfile_only_app_builds_with_the_procfile_buildpack() {
    let fx = fixture();
    let src = fx.app(
        "src",
        &[
            ("Procfile", "web: ./server.sh\nworker: ./work.sh\n"),
            ("server.sh*", "echo hi\n"),
        ],
    );
    let built = fx.build(&src, &[], MINUTE);
    let output = built.output();
    assert_eq!(output.buildpack, "Procfile");
    assert_eq!(
        output.process_types,
        BTreeMap::from([
            ("web".to_owned(), "./server.sh".to_owned()),
            ("worker".to_owned(), "./work.sh".to_owned()),
        ])
    );
    assert_eq!(output.release_command, None);
    let expected_start = [
        "-----> Determining which buildpack to use for this app",
        "-----> Procfile app detected",
        "       Nothing to build",
        "-----> Discovering process types",
        "       Procfile declares types -> web, worker",
        "-----> Compressing...",
    ];
    assert_eq!(built.lines[..expected_start.len()], expected_start);
    let done = &built.lines[expected_start.len()];
    assert!(
        done.starts_with("       Done: ") && done.ends_with('K'),
        "{done}"
    );
    assert_eq!(built.lines.len(), expected_start.len() + 1);
    assert_eq!(
        output.slug_size,
        fs::metadata(&built.slug).expect("slug").len()
    );
    let entries = slug_entries(&built.slug);
    assert!(matches!(
        entries.get("server.sh"),
        Some(Entry::File(0o755, _))
    ));
    assert!(entries.contains_key("Procfile"));
    // The build happened in a copy: the source is as it was.
    let mut names: Vec<_> = fs::read_dir(&src)
        .expect("read src")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["Procfile", "server.sh"]);
}

#[test]
fn slug_round_trips_files_modes_and_symlinks() {
    let fx = fixture();
    let src = fx.app(
        "src",
        &[
            ("Procfile", "web: bin/run\n"),
            ("bin/run*", "#!/bin/sh\necho run\n"),
            ("config/secret.txt", "s3cret"),
            ("a/b/c/deep.txt", "deep\n"),
            (".env.example", "A=1\n"),
            (".git/HEAD", "ref: refs/heads/main\n"),
        ],
    );
    fs::set_permissions(
        src.join("config/secret.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    symlink("bin/run", src.join("run-link")).expect("symlink");
    symlink("/nonexistent/outside", src.join("dangling")).expect("symlink");
    let long_dir = "d".repeat(80);
    write(
        &src,
        &format!("{long_dir}/{}.txt", "f".repeat(60)),
        "long path\n",
    );

    let built = fx.build(&src, &[], MINUTE);
    built.output();
    let entries = slug_entries(&built.slug);
    for path in entries.keys() {
        assert!(!path.starts_with("./") && !path.starts_with('/'), "{path}");
        assert!(!path.starts_with(".git/") && path != ".git", "{path}");
    }
    assert_eq!(
        entries.get("bin/run"),
        Some(&Entry::File(0o755, b"#!/bin/sh\necho run\n".to_vec()))
    );
    assert_eq!(
        entries.get("config/secret.txt"),
        Some(&Entry::File(0o600, b"s3cret".to_vec()))
    );
    assert_eq!(
        entries.get("run-link"),
        Some(&Entry::Link("bin/run".into()))
    );
    assert_eq!(
        entries.get("dangling"),
        Some(&Entry::Link("/nonexistent/outside".into()))
    );
    assert!(matches!(entries.get("a/b/c"), Some(Entry::Dir(_))));

    let out = fx.path("unpacked");
    unpack(&built.slug, &out);
    for rel in [
        "Procfile",
        "bin/run",
        "config/secret.txt",
        "a/b/c/deep.txt",
        ".env.example",
    ] {
        let a = fs::read(src.join(rel)).expect("source file");
        let b = fs::read(out.join(rel)).expect("unpacked file");
        assert_eq!(a, b, "{rel}");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode(&src.join(rel)), mode(&out.join(rel)), "{rel}");
    }
    let long = format!("{long_dir}/{}.txt", "f".repeat(60));
    assert_eq!(
        fs::read_to_string(out.join(&long)).expect("long path"),
        "long path\n"
    );
    assert_eq!(
        fs::read_link(out.join("run-link")).expect("link"),
        Path::new("bin/run")
    );
    assert!(!out.join(".git").exists());
}

#[test]
fn python_app_builds_a_relocatable_virtualenv() {
    if !on_path("python3") {
        eprintln!("SKIPPED python_app_builds_a_relocatable_virtualenv: no python3 on PATH");
        return;
    }
    let fx = fixture();
    // A wheel with a console script, installed with no index: the script's
    // #! line is the one that must survive the move.
    let src = fx.app(
        "src",
        &[
            (
                "requirements.txt",
                "--no-index\n--find-links ./wheels\ntinycli==1.0\n",
            ),
            ("Procfile", "web: python3 app.py\n"),
            ("app.py", "print('hello')\n"),
        ],
    );
    let wheel = r#"import os, zipfile
os.makedirs("wheels", exist_ok=True)
with zipfile.ZipFile("wheels/tinycli-1.0-py3-none-any.whl", "w") as z:
    z.writestr("tinycli.py", "def main():\n    print('tinycli ran')\n")
    z.writestr("tinycli-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinycli\nVersion: 1.0\n")
    z.writestr("tinycli-1.0.dist-info/WHEEL",
        "Wheel-Version: 1.0\nGenerator: crew-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr("tinycli-1.0.dist-info/entry_points.txt", "[console_scripts]\ntinycli = tinycli:main\n")
    z.writestr("tinycli-1.0.dist-info/RECORD", "")
"#;
    let made = Command::new("python3")
        .args(["-c", wheel])
        .current_dir(&src)
        .status()
        .expect("run python3");
    assert!(made.success(), "writing the test wheel failed");
    let built = fx.build(&src, &[], MINUTE);
    if built.result.is_err()
        && built
            .lines
            .iter()
            .any(|l| l.contains("python3 -m venv failed"))
    {
        eprintln!(
            "SKIPPED python_app_builds_a_relocatable_virtualenv: `python3 -m venv` does not \
             work here (Debian: apt-get install python3-venv)\n{}",
            built.lines.join("\n")
        );
        return;
    }
    let output = built.output();
    assert_eq!(output.buildpack, "Python");
    assert!(
        built.has_line("-----> Python app detected"),
        "{:?}",
        built.lines
    );
    assert!(built.has_line("-----> Installing requirements with pip"));
    assert!(built.has_line("       Procfile declares types -> web"));

    // Extract somewhere else and check the venv works from there, the way a
    // dyno will use it: HOME is the slug directory and .profile.d is sourced.
    let home = fx.path("dyno-home");
    unpack(&built.slug, &home);
    let script = ". \"$HOME/.profile.d/python.sh\" && python3 -c 'import sys; print(sys.prefix)' \
                  && head -n 1 \"$(command -v tinycli)\" && tinycli";
    let run = Command::new("sh")
        .args(["-c", script])
        .env("HOME", &home)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next().map(PathBuf::from),
        Some(home.join(".venv")),
        "{stdout}"
    );
    assert_eq!(lines.next(), Some("#!/usr/bin/env python3"), "{stdout}");
    assert_eq!(lines.next(), Some("tinycli ran"), "{stdout}");
}

#[test]
fn nodejs_app_without_dependencies_builds() {
    if !(on_path("npm") && on_path("node")) {
        eprintln!(
            "SKIPPED nodejs_app_without_dependencies_builds: no node/npm on PATH \
             (Debian: apt-get install nodejs npm)"
        );
        return;
    }
    let fx = fixture();
    let src = fx.app(
        "src",
        &[
            (
                "package.json",
                r#"{"name": "demo", "version": "1.0.0", "scripts": {"start": "node index.js"}}"#,
            ),
            ("index.js", "console.log('hi')\n"),
        ],
    );
    let built = fx.build(&src, &[], MINUTE);
    let output = built.output();
    assert_eq!(output.buildpack, "Node.js");
    assert_eq!(
        output.process_types,
        BTreeMap::from([("web".to_owned(), "npm start".to_owned())])
    );
    assert!(
        built.has_line("-----> Node.js app detected"),
        "{:?}",
        built.lines
    );
    assert!(built.has_line("-----> Installing dependencies with npm install"));
    assert!(built.has_line("       Procfile declares types     -> (none)"));
    assert!(built.has_line("       Default types for buildpack -> web"));
    let entries = slug_entries(&built.slug);
    assert!(
        entries.contains_key(".profile.d/nodejs.sh"),
        "{:?}",
        entries.keys()
    );
    assert!(fx.path("cache/npm").is_dir(), "npm cache kept in CACHE_DIR");
}

#[test]
fn nothing_detected_rejects_the_push() {
    let fx = fixture();
    let src = fx.app("src", &[("README.md", "no app here\n")]);
    let built = fx.build(&src, &[], MINUTE);
    let error = built.error();
    assert!(
        matches!(error, BuildError::NoBuildpackDetected),
        "{error:?}"
    );
    let lines = error.pusher_lines();
    assert_eq!(
        lines.first().map(String::as_str),
        Some(" !     No default language could be detected for this app.")
    );
    assert_eq!(lines.last().map(String::as_str), Some(" !     Push failed"));
    assert!(lines.iter().all(|l| l.starts_with(" !     ")));
    assert!(!built.slug.exists());
}

#[test]
fn failing_compile_rejects_the_push_and_writes_no_slug() {
    let fx = fixture();
    let bp = fx.buildpack(
        "bp-fail",
        Some("echo Custom"),
        "echo '-----> Trying'\necho '       stderr detail' >&2\nexit 1",
        "echo '--- {}'",
    );
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    let built = fx.build(&src, &[("BUILDPACK_URL", &bp.to_string_lossy())], MINUTE);
    let error = built.error();
    assert!(
        matches!(error, BuildError::CompileFailed { name, .. } if name == "Custom"),
        "{error:?}"
    );
    assert_eq!(
        error.pusher_lines(),
        [
            " !     Push rejected, failed to compile Custom app.",
            " !     Push failed"
        ]
    );
    assert!(built.has_line("-----> Trying"));
    assert!(
        built.has_line("       stderr detail"),
        "stderr is streamed too"
    );
    assert!(!built.slug.exists());
    // No half-written slug either.
    let leftovers = fs::read_dir(fx.path("slugs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0);
}

#[test]
fn buildpack_url_local_path_is_honoured() {
    let fx = fixture();
    let bp = fx.buildpack(
        "bp-custom",
        Some("echo Custom"),
        "echo '-----> Custom compile'\necho built > \"$1/built.txt\"\n\
         echo \"$STACK $CREW_APP\" > \"$1/stack.txt\"\n\
         cp \"$3/GREETING\" \"$1/greeting.txt\"\n\
         echo run >> \"$2/runs\"",
        "printf '%s\\n' '---' 'default_process_types:' '  web: ./custom-web'",
    );
    // A Python app: the built-in python buildpack would match, but BUILDPACK_URL wins.
    let src = fx.app("src", &[("requirements.txt", "")]);
    let bp_url = bp.to_string_lossy().into_owned();
    let config = [
        ("BUILDPACK_URL", bp_url.as_str()),
        ("GREETING", "hello\nworld"),
    ];
    let built = fx.build(&src, &config, MINUTE);
    let output = built.output();
    assert_eq!(output.buildpack, "Custom");
    assert_eq!(built.lines[0], format!("-----> Using buildpack: {bp_url}"));
    assert!(built.has_line("-----> Custom app detected"));
    assert!(built.has_line("-----> Custom compile"));
    assert_eq!(
        output.process_types,
        BTreeMap::from([("web".to_owned(), "./custom-web".to_owned())])
    );
    let entries = slug_entries(&built.slug);
    assert!(matches!(entries.get("built.txt"), Some(Entry::File(_, b)) if b == b"built\n"));
    assert!(matches!(entries.get("stack.txt"), Some(Entry::File(_, b)) if b == b"crew demo\n"));
    assert!(
        matches!(entries.get("greeting.txt"), Some(Entry::File(_, b)) if b == b"hello\nworld"),
        "ENV_DIR holds one file per config var, value verbatim"
    );
    assert!(
        !entries.contains_key(".venv"),
        "the python buildpack did not run"
    );

    // The cache dir is kept between builds.
    fx.build(&src, &config, MINUTE).output();
    assert_eq!(
        fs::read_to_string(fx.path("cache/runs")).expect("cache"),
        "run\nrun\n"
    );
}

#[test]
fn buildpack_url_git_is_cloned() {
    if !on_path("git") {
        eprintln!("SKIPPED buildpack_url_git_is_cloned: no git on PATH");
        return;
    }
    let fx = fixture();
    let repo = fx.buildpack(
        "bp-git",
        Some("echo Gitpack"),
        "echo '-----> From git'",
        "echo 'default_process_types: {}'",
    );
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("git");
        assert!(status.status.success(), "git {args:?}: {status:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "bp"]);
    git(&["tag", "v1"]);
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    let url = format!("file://{}#v1", repo.display());
    let built = fx.build(&src, &[("BUILDPACK_URL", &url)], MINUTE);
    assert_eq!(built.output().buildpack, "Gitpack");
    assert!(built.has_line(&format!("-----> Fetching buildpack {url}")));
    assert!(built.has_line("-----> From git"));

    let missing = format!("file://{}/nope.git", fx.root.path().display());
    let built = fx.build(&src, &[("BUILDPACK_URL", &missing)], MINUTE);
    let error = built.error();
    assert!(matches!(error, BuildError::GitClone { .. }), "{error:?}");
    assert!(error.pusher_lines()[0].starts_with(" !     Could not fetch buildpack"));
}

#[test]
fn dot_buildpacks_runs_every_listed_buildpack_in_order() {
    let fx = fixture();
    let first = fx.buildpack(
        "bp-one",
        Some("echo One"),
        "echo one >> \"$1/order.txt\"",
        "printf '%s\\n' 'default_process_types:' '  web: one-web' '  worker: one-worker' \
         'config_vars:' '  A: one' '  B: one'",
    );
    let second = fx.buildpack(
        "bp-two",
        None,
        "echo two >> \"$1/order.txt\"",
        "printf '%s\\n' 'default_process_types:' '  web: two-web' 'config_vars:' '  B: two'",
    );
    let listing = format!(
        "# build with both\n{}\n\n{}\n",
        first.display(),
        second.display()
    );
    let src = fx.app("src", &[(".buildpacks", &listing)]);
    assert_eq!(
        fx.buildpacks
            .select(&src, &BTreeMap::new())
            .expect("select"),
        [
            BuildpackSource::Path(first.clone()),
            BuildpackSource::Path(second.clone())
        ]
    );
    let built = fx.build(&src, &[], MINUTE);
    let output = built.output();
    assert_eq!(output.buildpack, "One, bp-two");
    assert_eq!(
        built.lines[..5],
        [
            "-----> Using buildpacks:".to_owned(),
            format!("       1. {}", first.display()),
            format!("       2. {}", second.display()),
            "-----> One app detected".to_owned(),
            "-----> bp-two app detected".to_owned(),
        ]
    );
    // Later buildpacks' defaults win; earlier ones' other types stay.
    assert_eq!(
        output.process_types,
        BTreeMap::from([
            ("web".to_owned(), "two-web".to_owned()),
            ("worker".to_owned(), "one-worker".to_owned()),
        ])
    );
    assert_eq!(
        output.config_vars,
        BTreeMap::from([
            ("A".to_owned(), "one".to_owned()),
            ("B".to_owned(), "two".to_owned()),
        ])
    );
    let entries = slug_entries(&built.slug);
    assert!(matches!(entries.get("order.txt"), Some(Entry::File(_, b)) if b == b"one\ntwo\n"));
}

#[test]
fn an_explicit_buildpack_that_does_not_detect_rejects_the_push() {
    let fx = fixture();
    let bp = fx.buildpack("bp-picky", Some("exit 1"), "true", "true");
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    let built = fx.build(&src, &[("BUILDPACK_URL", &bp.to_string_lossy())], MINUTE);
    let error = built.error();
    assert!(
        matches!(error, BuildError::Incompatible { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.pusher_lines()[0],
        format!(" !     App not compatible with buildpack: {}", bp.display())
    );

    let built = fx.build(&src, &[("BUILDPACK_URL", "heroku/python")], MINUTE);
    assert!(matches!(built.error(), BuildError::InvalidBuildpackUrl(_)));
}

#[test]
fn timeout_kills_the_whole_build_and_leaves_nothing_running() {
    let fx = fixture();
    let pids = fx.path("pids");
    let compile = format!(
        "echo '-----> Sleeping'\necho $$ > '{p}'\nsleep 30 &\necho $! >> '{p}'\n\
         sh -c 'sleep 31 & echo $! >> \"$0\"; wait' '{p}' &\nwait",
        p = pids.display()
    );
    let bp = fx.buildpack("bp-slow", Some("echo Slow"), &compile, "true");
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    let started = Instant::now();
    let built = fx.build(
        &src,
        &[("BUILDPACK_URL", &bp.to_string_lossy())],
        Duration::from_secs(1),
    );
    let elapsed = started.elapsed();
    let error = built.error();
    assert!(
        matches!(error, BuildError::TimedOut { seconds: 1 }),
        "{error:?}"
    );
    assert_eq!(
        error.pusher_lines()[0],
        " !     Build timed out after 1 second."
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        built.has_line("-----> Sleeping"),
        "output before the timeout arrived"
    );
    assert!(!built.slug.exists());

    let text = fs::read_to_string(&pids).expect("pid file");
    let pids: Vec<&str> = text.lines().collect();
    assert_eq!(pids.len(), 3, "{text}");
    let deadline = Instant::now() + Duration::from_secs(3);
    for pid in pids {
        // Gone, or a zombie waiting for whoever inherited it: either way not running.
        while running(pid) {
            assert!(Instant::now() < deadline, "process {pid} is still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn running(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn procfile_overrides_defaults_and_release_is_extracted() {
    let fx = fixture();
    let bp = fx.buildpack(
        "bp-defaults",
        Some("echo Defaults"),
        "true",
        "printf '%s\\n' '---' 'default_process_types:' '  web: default-web' \
         '  console: default-console'",
    );
    let src = fx.app(
        "src",
        &[(
            "Procfile",
            "web: my-web --port $PORT\nrelease: ./migrate\nbogus line\n",
        )],
    );
    let built = fx.build(&src, &[("BUILDPACK_URL", &bp.to_string_lossy())], MINUTE);
    let output = built.output();
    assert_eq!(
        output.process_types,
        BTreeMap::from([
            ("console".to_owned(), "default-console".to_owned()),
            ("web".to_owned(), "my-web --port $PORT".to_owned()),
        ])
    );
    assert_eq!(output.release_command.as_deref(), Some("./migrate"));
    let at = built
        .lines
        .iter()
        .position(|l| l == "-----> Discovering process types")
        .expect("discovering");
    assert_eq!(
        built.lines[at + 1..at + 4],
        [
            " !     Warning: Procfile line 3: ignored `bogus line` (not a `type: command` line)",
            "       Procfile declares types     -> release, web",
            "       Default types for buildpack -> console",
        ]
    );
}

#[test]
fn no_process_types_and_bad_procfiles_are_errors() {
    let fx = fixture();
    let bp = fx.buildpack("bp-bare", None, "true", "echo 'default_process_types: {}'");
    let url = bp.to_string_lossy().into_owned();
    let src = fx.app("src", &[("index.html", "<p>hi</p>\n")]);
    let built = fx.build(&src, &[("BUILDPACK_URL", &url)], MINUTE);
    let error = built.error();
    assert!(matches!(error, BuildError::NoProcessTypes), "{error:?}");
    assert_eq!(error.pusher_lines()[0], " !     No process types found.");

    let src = fx.app("dup", &[("Procfile", "web: a\nweb: b\n")]);
    let built = fx.build(&src, &[("BUILDPACK_URL", &url)], MINUTE);
    assert!(matches!(built.error(), BuildError::Procfile(_)));
    assert!(built.error().pusher_lines()[0].contains("duplicate process type `web`"));
}

#[test]
fn unreadable_release_yaml_fails_the_build() {
    let fx = fixture();
    let bp = fx.buildpack(
        "bp-yaml",
        Some("echo Yaml"),
        "true",
        "printf '%s\\n' 'default_process_types:' '  web: |' '    multi'",
    );
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    let built = fx.build(&src, &[("BUILDPACK_URL", &bp.to_string_lossy())], MINUTE);
    let error = built.error();
    assert!(
        matches!(error, BuildError::ReleaseYaml { error, .. } if error.line == 2),
        "{error:?}"
    );
}

#[test]
fn builtins_are_installed_executable_and_selected_procfile_last() {
    let fx = fixture();
    for name in BUILTIN_NAMES {
        for script in ["detect", "compile", "release"] {
            let path = fx.path(&format!("buildpacks/{name}/bin/{script}"));
            let mode = fs::metadata(&path).expect("script").permissions().mode();
            assert_eq!(mode & 0o777, 0o755, "{}", path.display());
        }
    }
    // Installing again over an existing install is fine.
    Buildpacks::install_builtin(&fx.path("buildpacks")).expect("reinstall");
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    assert_eq!(
        fx.buildpacks
            .select(&src, &BTreeMap::new())
            .expect("select"),
        BUILTIN_NAMES.map(|n| BuildpackSource::Builtin(n.to_owned()))
    );
    assert_eq!(BUILTIN_NAMES.last(), Some(&"procfile"));
}

/// A file of this machine that no build output may show.
fn host_secret(fx: &Fixture) -> PathBuf {
    let secret = fx.path("host-secret");
    fs::write(&secret, "web: echo host-secret-91c2\n").expect("write secret");
    secret
}

#[test]
fn a_procfile_that_compile_turns_into_a_link_is_refused_not_followed() {
    let fx = fixture();
    let secret = host_secret(&fx);
    let bp = fx.buildpack(
        "bp-link",
        Some("echo Linker"),
        &format!("ln -sf '{}' \"$1/Procfile\"", secret.display()),
        "true",
    );
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    let built = fx.build(&src, &[("BUILDPACK_URL", &bp.to_string_lossy())], MINUTE);
    let error = built.error();
    assert!(
        matches!(error, BuildError::NotARegularFile { name, what } if name == "Procfile" && *what == "a symbolic link"),
        "{error:?}"
    );
    let all = format!(
        "{}\n{}",
        built.lines.join("\n"),
        error.pusher_lines().join("\n")
    );
    assert!(!all.contains("host-secret-91c2"), "{all}");
    assert!(!built.slug.exists());
}

#[test]
fn a_procfile_that_is_a_fifo_fails_the_build_instead_of_hanging_it() {
    let fx = fixture();
    let bp = fx.buildpack(
        "bp-fifo",
        Some("echo Fifo"),
        "rm -f \"$1/Procfile\" && mkfifo \"$1/Procfile\"",
        "true",
    );
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    // A reader that opens the FIFO waits for a writer forever: the build runs
    // on a thread of its own, so that the test fails instead of hanging.
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let built = fx.build(&src, &[("BUILDPACK_URL", &bp.to_string_lossy())], MINUTE);
        let refused = matches!(
            &built.result,
            Err(BuildError::NotARegularFile { name, .. }) if name == "Procfile"
        );
        let _ = done.send((refused, format!("{:?}", built.result)));
    });
    let (refused, said) = result
        .recv_timeout(MINUTE)
        .expect("the build hung on a FIFO Procfile");
    assert!(refused, "{said}");
}

#[test]
fn a_linked_buildpacks_listing_is_refused_not_followed() {
    let fx = fixture();
    let secret = host_secret(&fx);
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    symlink(&secret, src.join(".buildpacks")).expect("symlink");
    let built = fx.build(&src, &[], MINUTE);
    let error = built.error();
    assert!(
        matches!(error, BuildError::NotARegularFile { name, .. } if name == ".buildpacks"),
        "{error:?}"
    );
    assert!(!error.pusher_lines().join("\n").contains("host-secret-91c2"));
}

#[test]
fn copying_and_packing_keep_links_as_links() {
    let fx = fixture();
    let secret = host_secret(&fx);
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    symlink(&secret, src.join("leak")).expect("symlink");
    let built = fx.build(&src, &[], MINUTE);
    built.output();
    let listing = Command::new("tar")
        .arg("-tvzf")
        .arg(&built.slug)
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('l') && l.contains("leak ->")),
        "{listing}"
    );
    let contents = Command::new("tar")
        .arg("-xzOf")
        .arg(&built.slug)
        .output()
        .expect("tar");
    assert!(!String::from_utf8_lossy(&contents.stdout).contains("host-secret-91c2"));
}

#[test]
fn path_buildpacks_are_only_taken_where_allowed() {
    use crew_buildpack::PathBuildpacks;
    let fx = fixture();
    let allowed = fx.path("allowed");
    let inside = fx.buildpack("allowed/bp", Some("echo Inside"), "true", "true");
    let outside = fx.buildpack("outside", Some("echo Outside"), "echo ran-outside", "true");
    fs::create_dir_all(allowed.join("sub")).expect("mkdir");
    symlink(&outside, allowed.join("sub/escape")).expect("symlink");
    let src = fx.app("src", &[("Procfile", "web: x\n")]);

    let nowhere = Fixture {
        buildpacks: fx
            .buildpacks
            .clone()
            .with_path_buildpacks(PathBuildpacks::Nowhere),
        root: tempfile::tempdir().expect("tempdir"),
    };
    let built = nowhere.build(
        &src,
        &[("BUILDPACK_URL", &inside.to_string_lossy())],
        MINUTE,
    );
    assert!(
        matches!(built.error(), BuildError::PathRefused { allowed: None, .. }),
        "{:?}",
        built.error()
    );

    let under = Fixture {
        buildpacks: fx
            .buildpacks
            .clone()
            .with_path_buildpacks(PathBuildpacks::Under(allowed.clone())),
        root: tempfile::tempdir().expect("tempdir"),
    };
    under
        .build(
            &src,
            &[("BUILDPACK_URL", &inside.to_string_lossy())],
            MINUTE,
        )
        .output();
    let dotdot = format!("{}/../outside", allowed.display());
    let escape = allowed.join("sub/escape").display().to_string();
    for url in [
        outside.display().to_string(),
        dotdot,
        escape,
        allowed.display().to_string(),
    ] {
        let built = under.build(&src, &[("BUILDPACK_URL", &url)], MINUTE);
        assert!(
            matches!(
                built.error(),
                BuildError::PathRefused {
                    allowed: Some(_),
                    ..
                }
            ),
            "{url}: {:?}",
            built.error()
        );
        assert!(
            !built.lines.iter().any(|l| l.contains("ran-outside")),
            "{url}"
        );
    }
}

#[test]
fn buildpacks_see_the_commit_as_source_version() {
    let fx = fixture();
    let bp = fx.buildpack(
        "bp-version",
        Some("echo Version"),
        "echo \"version=$SOURCE_VERSION\"",
        "true",
    );
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    let built = fx.build(&src, &[("BUILDPACK_URL", &bp.to_string_lossy())], MINUTE);
    built.output();
    assert!(
        built.has_line("version=0123456789abcdef"),
        "{:?}",
        built.lines
    );
}

#[test]
fn a_release_that_prints_without_end_is_cut_off_not_kept() {
    let fx = fixture();
    let bp = fx.buildpack(
        "bp-flood",
        Some("echo Flood"),
        "true",
        "head -c 3000000 /dev/zero | tr '\\0' 'a'",
    );
    let src = fx.app("src", &[("Procfile", "web: x\n")]);
    let built = fx.build(&src, &[("BUILDPACK_URL", &bp.to_string_lossy())], MINUTE);
    match built.error() {
        BuildError::ReleaseFailed { status, .. } => {
            assert!(status.contains("over 1.0M"), "{status}")
        }
        other => panic!("{other:?}"),
    }
}
