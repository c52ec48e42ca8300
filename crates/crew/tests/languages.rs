//! The built-in buildpacks as a user meets them: real apps of each language
//! pushed to a real server, built (sandboxed, when the tests run as root) with
//! nothing but the stack and the pushed tree, and answering through the router.

mod common;
mod platform;

use std::path::Path;
use std::process::Command;

use common::{App, poll_until};
use platform::{DEPLOY, Server, TestServer, commit_all, have_git, http_get, repo};

/// Pushes the app's `main` as app `name` (created first); whether git
/// succeeded, and everything it printed.
fn push(server: &Server, app: &App, name: &str) -> (bool, String) {
    server.ok(app.path(), &["apps:create", name]);
    server.git(app.path(), &["push", "crew", "main"])
}

/// Pushes a new (empty) commit of an app that exists already.
fn push_again(server: &Server, app: &App, message: &str) -> (bool, String) {
    let (ok, text) = server.git(
        app.path(),
        &["commit", "-q", "--allow-empty", "-m", message],
    );
    assert!(ok, "git commit: {text}");
    server.git(app.path(), &["push", "crew", "main"])
}

/// Waits until the router answers `GET /` for `app` with a 200 and returns the body.
fn answer(server: &Server, dir: &Path, app: &str) -> String {
    let host = format!("{app}.localhost");
    let mut last = (0, String::new());
    let answered = poll_until(DEPLOY, || {
        last = http_get(server.router, &host, "/", &[]);
        last.0 == 200
    });
    assert!(
        answered,
        "{app} never answered through the router: {last:?}\n{}",
        server.ok(dir, &["logs", "-a", app, "--source", "app", "-n", "40"])
    );
    last.1
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The stack's ruby and Bundler, the ones the ruby buildpack uses.
fn have_ruby() -> bool {
    let found = Path::new("/usr/bin/ruby").exists() && Path::new("/usr/bin/bundle").exists();
    if !found {
        eprintln!(
            "skipped: /usr/bin/ruby and /usr/bin/bundle are needed (.ci/run installs ruby ruby-bundler)"
        );
    }
    found
}

/// A gem with a `rackup` executable that serves `config.ru` with the standard
/// library alone: no gem server is reachable from the tests, so the app's
/// gems are built here and vendored, as `bundle cache` would.
const TEST_RACK_GEMSPEC: &str = r##"Gem::Specification.new do |s|
  s.name = "crew-test-rack"
  s.version = "1.0.0"
  s.summary = "A tiny Rack server for crew's tests"
  s.authors = ["crew"]
  s.files = ["lib/crew_test_rack.rb", "exe/rackup"]
  s.bindir = "exe"
  s.executables = ["rackup"]
end
"##;

const TEST_RACK_LIB: &str = r##"require "socket"
module CrewTestRack
  class Builder
    attr_reader :app
    def run(app) = @app = app
  end

  def self.serve(config, port)
    builder = Builder.new
    builder.instance_eval(File.read(config), config)
    server = TCPServer.new("0.0.0.0", port)
    loop do
      client = server.accept
      begin
        method, path = client.gets.to_s.split(" ")
        next unless path
        while (header = client.gets) && header != "\r\n"; end
        status, headers, body = builder.app.call("REQUEST_METHOD" => method, "PATH_INFO" => path)
        text = body.join
        client.write "HTTP/1.1 #{status} OK\r\n"
        headers.each { |name, value| client.write "#{name}: #{value}\r\n" }
        client.write "Content-Length: #{text.bytesize}\r\nConnection: close\r\n\r\n#{text}"
      rescue SystemCallError, IOError
        # A client that went away (the platform's port probe) ends only its request.
      ensure
        client.close
      end
    end
  end
end
"##;

const TEST_RACK_EXE: &str = r##"#!/usr/bin/env ruby
require "crew_test_rack"
port = ARGV[ARGV.index("-p") + 1]
config = ARGV.find { |arg| arg.end_with?(".ru") } || "config.ru"
CrewTestRack.serve(config, Integer(port))
"##;

/// Builds the test Rack gem and the stack's own rake (Debian installs it
/// without its .gem) into `cache`.
fn vendor_gems(cache: &Path) {
    let work = App::new();
    work.write("crew-test-rack.gemspec", TEST_RACK_GEMSPEC);
    work.write("lib/crew_test_rack.rb", TEST_RACK_LIB);
    work.write("exe/rackup", TEST_RACK_EXE);
    run(work.path(), "gem", &["build", "crew-test-rack.gemspec"]);
    run(
        work.path(),
        "ruby",
        &[
            "-rfileutils",
            "-rrubygems/package",
            "-e",
            "spec = Gem::Specification.find_by_name('rake')
             Dir.mkdir('rake'); Dir.chdir('rake')
             FileUtils.cp_r(spec.gem_dir + '/.', '.')
             spec.files = Dir['{lib,exe}/**/*']
             Gem::Package.build(spec)",
        ],
    );
    std::fs::create_dir_all(cache).expect("mkdir vendor/cache");
    for gem in ["crew-test-rack-1.0.0.gem", "rake/rake-13.0.6.gem"] {
        let name = gem.rsplit('/').next().unwrap_or(gem);
        std::fs::copy(work.join(gem), cache.join(name)).expect("copy a gem");
    }
}

/// The lockfile `bundle lock` writes for the Gemfile below; written by hand
/// because Bundler would ask a gem server. The development gem exists nowhere:
/// the build must skip it.
const RUBY_GEMFILE: &str = r##"source "https://rubygems.org"
gem "crew-test-rack"
gem "rake"
group :development, :test do
  gem "crew-test-development-only"
end
"##;

const RUBY_GEMFILE_LOCK: &str = "GEM
  remote: https://rubygems.org/
  specs:
    crew-test-development-only (0.1.0)
    crew-test-rack (1.0.0)
    rake (13.0.6)

PLATFORMS
  ruby

DEPENDENCIES
  crew-test-development-only
  crew-test-rack
  rake

BUNDLED WITH
   2.3.15
";

#[test]
fn a_rack_app_with_vendored_gems_serves_runs_a_worker_and_rake_and_caches_its_gems() {
    if !have_git() || !have_ruby() {
        return;
    }
    let server = Server::start();
    // Only the worker is declared: `web` is the ruby buildpack's default.
    let app = repo(
        &server,
        "worker: bundle exec ruby -e 'require \"crew_test_rack\"; puts \"ruby worker has #{CrewTestRack}\"; $stdout.flush; sleep'\n",
    );
    vendor_gems(&app.join("vendor/cache"));
    app.write("Gemfile", RUBY_GEMFILE);
    app.write("Gemfile.lock", RUBY_GEMFILE_LOCK);
    app.write(
        "config.ru",
        "run ->(env) { [200, {\"Content-Type\" => \"text/plain\"}, [\"rack says hi from #{ENV['RACK_ENV']}\\n\"]] }\n",
    );
    app.write(
        "Rakefile",
        "desc \"Say hello\"\ntask :hello do\n  puts \"hello\"\nend\n",
    );
    commit_all(&server, app.path(), "a rack app");

    let (ok, text) = push(&server, &app, "rubyapp");
    assert!(ok, "{text}");
    for said in [
        "-----> Ruby app detected",
        "-----> Using Ruby version: ruby-",
        "-----> Installing dependencies using bundler ",
        "Installing crew-test-rack 1.0.0",
        "Default types for buildpack -> console, rake, web",
    ] {
        assert!(text.contains(said), "no {said:?} in:\n{text}");
    }

    server.ok(app.path(), &["scale", "web=1", "worker=1"]);
    assert_eq!(
        answer(&server, app.path(), "rubyapp"),
        "rack says hi from production\n"
    );
    let seen = poll_until(DEPLOY, || {
        server
            .ok(app.path(), &["logs", "-n", "50"])
            .contains("ruby worker has CrewTestRack")
    });
    assert!(seen, "{}", server.ok(app.path(), &["logs", "-n", "50"]));

    let (ok, out, err) = server.cli(app.path(), &["run", "-a", "rubyapp", "bundle exec rake -T"]);
    assert!(ok && out.contains("rake hello"), "{out}\n{err}");

    // An unchanged Gemfile.lock installs nothing: the gems come from the cache.
    let (ok, text) = push_again(&server, &app, "again");
    assert!(ok, "{text}");
    assert!(
        text.contains("Restoring installed gems from the cache"),
        "{text}"
    );
    assert!(text.contains("Using crew-test-rack 1.0.0"), "{text}");
    assert!(!text.contains("Installing crew-test-rack"), "{text}");
}

#[test]
fn a_ruby_app_without_a_lockfile_is_refused_with_the_reason() {
    if !have_git() || !have_ruby() {
        return;
    }
    let server = Server::start();
    let app = repo(&server, "web: bundle exec rackup -p $PORT\n");
    app.write("Gemfile", RUBY_GEMFILE);
    commit_all(&server, app.path(), "no lockfile");
    let (ok, text) = push(&server, &app, "nolock");
    assert!(!ok, "{text}");
    assert!(text.contains("Gemfile.lock required"), "{text}");
}

/// The stack's python3 with venv, the one the python buildpack uses.
fn have_python() -> bool {
    let found = Command::new("/usr/bin/python3")
        .args(["-c", "import ensurepip, venv"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: /usr/bin/python3 with venv is needed (.ci/run installs python3-venv)");
    }
    found
}

/// Writes a pure-Python wheel of package `tinypkg` into `dir`: pip installs it
/// from there with no index, since no package index is reachable.
fn write_wheel(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir wheels");
    let script = r#"import zipfile
with zipfile.ZipFile("tinypkg-1.0-py3-none-any.whl", "w") as z:
    z.writestr("tinypkg/__init__.py", "GREETING = 'tinypkg says hi'\n")
    z.writestr("tinypkg/__main__.py", "import http.server, os, tinypkg\n"
        "class Hi(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "        self.wfile.write((tinypkg.GREETING + '\\n').encode())\n"
        "http.server.HTTPServer(('', int(os.environ['PORT'])), Hi).serve_forever()\n")
    z.writestr("tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
    z.writestr("tinypkg-1.0.dist-info/WHEEL",
        "Wheel-Version: 1.0\nGenerator: crew-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr("tinypkg-1.0.dist-info/RECORD", "")
"#;
    run(dir, "/usr/bin/python3", &["-c", script]);
}

#[test]
fn a_python_app_with_unchanged_requirements_gets_its_virtualenv_back_from_the_cache() {
    if !have_git() || !have_python() {
        return;
    }
    let server = Server::start();
    let app = repo(&server, "web: python -m tinypkg\n");
    write_wheel(&app.join("wheels"));
    app.write(
        "requirements.txt",
        "--no-index\n--find-links ./wheels\n-r base.txt\n",
    );
    app.write("base.txt", "tinypkg==1.0\n");
    commit_all(&server, app.path(), "a python app");
    let (ok, text) = push(&server, &app, "pycache");
    assert!(ok, "{text}");
    assert!(
        text.contains("Successfully installed tinypkg-1.0"),
        "{text}"
    );
    assert!(text.contains("Caching the virtualenv"), "{text}");
    server.ok(app.path(), &["scale", "web=1"]);
    assert_eq!(answer(&server, app.path(), "pycache"), "tinypkg says hi\n");

    // The second push installs nothing, and what it restored still runs.
    let (ok, text) = push_again(&server, &app, "again");
    assert!(ok, "{text}");
    assert!(
        text.contains("requirements.txt unchanged: restoring the virtualenv from the cache"),
        "{text}"
    );
    assert!(!text.contains("Installing requirements"), "{text}");
    assert!(!text.contains("Installing pip"), "{text}");
    let seen = poll_until(DEPLOY, || {
        server.ok(app.path(), &["releases"]).contains("v3")
    });
    assert!(seen, "{}", server.ok(app.path(), &["releases"]));
    assert_eq!(answer(&server, app.path(), "pycache"), "tinypkg says hi\n");
    // pip builds the venv from outside it: the slug holds none.
    let (ok, out, err) = server.cli(
        app.path(),
        &[
            "run",
            "-a",
            "pycache",
            "python -c 'import tinypkg; print(tinypkg.GREETING)'; python -c 'import pip' 2>/dev/null && echo pip-in-slug || echo no-pip",
        ],
    );
    assert!(
        ok && out.contains("tinypkg says hi") && out.contains("no-pip"),
        "{out}\n{err}"
    );

    // A venv built by another Python (the stack's was upgraded) is not used,
    // even with unchanged requirements.
    let built_with = server.data().join("apps/pycache/cache/python/venv.python");
    assert!(built_with.is_file(), "no {}", built_with.display());
    std::fs::write(&built_with, "/usr/bin/python3 3.0.1 (an older build)\n")
        .expect("write the cached venv's python");
    let (ok, text) = push_again(&server, &app, "a new stack python");
    assert!(ok, "{text}");
    assert!(
        text.contains("The stack's Python is not the one the cached virtualenv was built with"),
        "{text}"
    );
    assert!(
        text.contains("Successfully installed tinypkg-1.0"),
        "{text}"
    );

    // A changed file that requirements.txt includes is a changed key: pip
    // runs again.
    app.write("base.txt", "tinypkg>=1.0\n");
    commit_all(&server, app.path(), "changed requirements");
    let text = server.push(app.path());
    assert!(text.contains("Installing requirements with pip"), "{text}");
}

#[test]
fn a_python_version_the_stack_lacks_fails_the_build_naming_both() {
    if !have_git() || !have_python() {
        return;
    }
    let server = Server::start();
    let app = repo(&server, "web: python -m http.server $PORT\n");
    app.write("requirements.txt", "");
    app.write("runtime.txt", "python-3.4.0\n");
    commit_all(&server, app.path(), "an old python");
    let (ok, text) = push(&server, &app, "oldpy");
    assert!(!ok, "{text}");
    assert!(
        text.contains("runtime.txt asks for Python 3.4.0, but this stack has Python 3."),
        "{text}"
    );

    // The stack's own minor version in .python-version is used, and said.
    let output = Command::new("/usr/bin/python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .expect("python3 --version");
    let minor = String::from_utf8_lossy(&output.stdout).trim().to_string();
    std::fs::remove_file(app.join("runtime.txt")).expect("rm runtime.txt");
    app.write(".python-version", format!("{minor}\n"));
    commit_all(&server, app.path(), "the stack's python");
    let text = server.push(app.path());
    assert!(
        text.contains(&format!("Using Python {minor}."))
            && text.contains("specified in .python-version"),
        "{text}"
    );
}

#[test]
fn languages_crew_cannot_build_are_refused_not_deployed_as_procfile_apps() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let app = repo(&server, "web: target/release/app\n");
    app.write(
        "Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\n",
    );
    commit_all(&server, app.path(), "a rust app");
    let (ok, text) = push(&server, &app, "rustapp");
    assert!(!ok, "{text}");
    assert!(text.contains("-----> Rust app detected"), "{text}");
    assert!(
        text.contains(
            "Rust app detected (Cargo.toml), but crew has no buildpack that builds Rust apps."
        ),
        "{text}"
    );

    if Path::new("/usr/bin/go").exists() || Path::new("/usr/local/go/bin/go").exists() {
        eprintln!("skipped the Go refusal: this stack has a Go toolchain");
        return;
    }
    let app = repo(&server, "web: bin/goapp\n");
    app.write("go.mod", "module example.com/goapp\n\ngo 1.19\n");
    app.write("main.go", "package main\n\nfunc main() {}\n");
    commit_all(&server, app.path(), "a go app");
    let (ok, text) = push(&server, &app, "goapp");
    assert!(!ok, "{text}");
    assert!(
        text.contains("Go app detected, but this stack has no Go toolchain."),
        "{text}"
    );
}

/// A stand-in for `tsc`, packed as a tarball the app depends on with
/// `file:` (no registry is reachable): it writes dist/index.js from a
/// TypeScript file whose only types are `: string`.
fn pack_fake_tsc(into: &Path) {
    let tool = App::new();
    tool.write(
        "package.json",
        r#"{"name": "crew-test-tsc", "version": "1.0.0", "bin": {"crew-test-tsc": "tsc.js"}}"#,
    );
    tool.write(
        "tsc.js",
        "#!/usr/bin/env node\n\
         const fs = require('fs'), path = require('path');\n\
         const [src, out] = process.argv.slice(2);\n\
         fs.mkdirSync(path.dirname(out), {recursive: true});\n\
         fs.writeFileSync(out, fs.readFileSync(src, 'utf8').replace(/: string/g, ''));\n",
    );
    std::fs::create_dir_all(into).expect("mkdir tools");
    let into = into.to_string_lossy().into_owned();
    run(tool.path(), "npm", &["pack", "--pack-destination", &into]);
}

fn have_npm() -> bool {
    let found = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: npm is not installed (.ci/run installs nodejs and npm)");
    }
    found
}

#[test]
fn a_typescript_app_is_built_with_its_dev_dependencies_which_are_then_pruned() {
    if !have_git() || !have_npm() {
        return;
    }
    let server = Server::start();
    // No Procfile: `web: npm start` is the buildpack's default.
    let app = repo(&server, "");
    std::fs::remove_file(app.join("Procfile")).expect("rm Procfile");
    pack_fake_tsc(&app.join("tools"));
    app.write(
        "package.json",
        r#"{"name": "tsapp", "version": "1.0.0", "private": true,
 "engines": {"node": ">=99"},
 "scripts": {
   "heroku-prebuild": "echo prebuild ran",
   "build": "crew-test-tsc src/index.ts dist/index.js",
   "start": "node dist/index.js"
 },
 "devDependencies": {"crew-test-tsc": "file:tools/crew-test-tsc-1.0.0.tgz"}}
"#,
    );
    app.write(
        "src/index.ts",
        "const greeting: string = 'typescript says hi';\n\
         require('http').createServer((q, r) => r.end(greeting + '\\n')).listen(process.env.PORT);\n",
    );
    commit_all(&server, app.path(), "a typescript app");
    let (ok, text) = push(&server, &app, "tsapp");
    assert!(ok, "{text}");
    for said in [
        "-----> Node.js app detected",
        "package.json asks for node \">=99\" (engines.node), but this stack has node v",
        "prebuild ran",
        "Including devDependencies for the build",
        "> crew-test-tsc src/index.ts dist/index.js",
        "-----> Pruning devDependencies",
    ] {
        assert!(text.contains(said), "no {said:?} in:\n{text}");
    }
    server.ok(app.path(), &["scale", "web=1"]);
    assert_eq!(answer(&server, app.path(), "tsapp"), "typescript says hi\n");
    let (ok, out, err) = server.cli(
        app.path(),
        &[
            "run",
            "-a",
            "tsapp",
            "test -e node_modules/crew-test-tsc && echo dev-kept || echo dev-pruned",
        ],
    );
    assert!(ok && out.contains("dev-pruned"), "{out}\n{err}");
}

/// The stack's Go toolchain, the one the go buildpack uses.
fn have_go() -> bool {
    let found = Path::new("/usr/bin/go").exists();
    if !found {
        eprintln!("skipped: /usr/bin/go is needed (.ci/run installs golang-go)");
    }
    found
}

const GO_MAIN: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"

	"example.org/greet"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, greet.Greeting)
	})
	if err := http.ListenAndServe(":"+os.Getenv("PORT"), nil); err != nil {
		panic(err)
	}
}
"#;

#[test]
fn a_go_app_with_vendored_modules_is_built_serves_and_reuses_its_build_cache() {
    if !have_git() || !have_go() {
        return;
    }
    let server = Server::start();
    let app = repo(&server, "web: bin/goweb\nworker: bin/worker\n");
    // One dependency, vendored: no module proxy is reachable from the tests.
    app.write(
        "go.mod",
        "module example.com/goweb\n\ngo 1.19\n\nrequire example.org/greet v1.0.0\n",
    );
    app.write(
        "vendor/modules.txt",
        "# example.org/greet v1.0.0\n## explicit; go 1.19\nexample.org/greet\n",
    );
    app.write(
        "vendor/example.org/greet/greet.go",
        "package greet\n\nconst Greeting = \"go says hi\"\n",
    );
    app.write("main.go", GO_MAIN);
    // A second command, named after its directory.
    app.write(
        "cmd/worker/main.go",
        "package main\n\nimport (\n\t\"fmt\"\n\t\"time\"\n)\n\nfunc main() {\n\tfmt.Println(\"go worker up\")\n\ttime.Sleep(time.Hour)\n}\n",
    );
    commit_all(&server, app.path(), "a go app");
    let (ok, text) = push(&server, &app, "goweb");
    assert!(ok, "{text}");
    for said in [
        "-----> Go app detected",
        "-----> Using the vendored modules (vendor/)",
        "First build of this app",
        "-----> Building example.com/goweb into bin/goweb",
        "-----> Building example.com/goweb/cmd/worker into bin/worker",
        "       example.org/greet",
        "       net/http",
    ] {
        assert!(text.contains(said), "no {said:?} in:\n{text}");
    }
    server.ok(app.path(), &["scale", "web=1", "worker=1"]);
    assert_eq!(answer(&server, app.path(), "goweb"), "go says hi\n");
    let seen = poll_until(DEPLOY, || {
        server
            .ok(app.path(), &["logs", "-n", "50"])
            .contains("go worker up")
    });
    assert!(seen, "{}", server.ok(app.path(), &["logs", "-n", "50"]));

    // The second push compiles nothing: every package comes from the cache.
    let (ok, text) = push_again(&server, &app, "again");
    assert!(ok, "{text}");
    assert!(text.contains("Reusing the build cache"), "{text}");
    assert!(!text.contains("       net/http"), "{text}");
    assert!(!text.contains("       example.org/greet"), "{text}");
    let seen = poll_until(DEPLOY, || {
        server.ok(app.path(), &["releases"]).contains("v3")
    });
    assert!(seen, "{}", server.ok(app.path(), &["releases"]));
    assert_eq!(answer(&server, app.path(), "goweb"), "go says hi\n");
}

#[test]
fn python_lockfiles_without_their_tool_on_the_stack_fail_naming_the_file_and_the_tool() {
    if !have_git() || !have_python() {
        return;
    }
    let server = Server::start();
    // A Pipfile alone pins nothing: refused whatever the stack has.
    let app = repo(&server, "web: python -m http.server $PORT\n");
    app.write("Pipfile", "[packages]\n");
    commit_all(&server, app.path(), "a Pipfile");
    let (ok, text) = push(&server, &app, "pipfileonly");
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "Pipfile found, but no Pipfile.lock: the versions to install are not pinned."
        ),
        "{text}"
    );

    let pyproject = "[project]\nname = \"locked\"\nversion = \"1.0\"\ndependencies = []\n";
    for (name, tool, files) in [
        (
            "pipenvapp",
            "pipenv",
            vec![("Pipfile", "[packages]\n"), ("Pipfile.lock", "{}\n")],
        ),
        (
            "poetryapp",
            "poetry",
            vec![("pyproject.toml", pyproject), ("poetry.lock", "# poetry\n")],
        ),
        (
            "uvapp",
            "uv",
            vec![("pyproject.toml", pyproject), ("uv.lock", "version = 1\n")],
        ),
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            eprintln!("skipped the {tool} refusal: this stack has {tool}");
            continue;
        }
        let app = repo(&server, "web: python -m http.server $PORT\n");
        let lockfile = files[1].0;
        for (file, text) in files {
            app.write(file, text);
        }
        commit_all(&server, app.path(), "a locked app");
        let (ok, text) = push(&server, &app, name);
        assert!(!ok, "{text}");
        assert!(text.contains("-----> Python app detected"), "{text}");
        assert!(
            text.contains(&format!(
                "{lockfile} found, but this stack has no {tool} to install it with."
            )),
            "{text}"
        );
        assert!(
            text.contains("commit a requirements.txt made from the lock"),
            "{text}"
        );
    }
}

/// A PEP 517 build backend that packs `hello_app/*.py` into a wheel
/// depending on tinypkg.
const TEST_BUILD_BACKEND: &str = r#"import os, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "hello_app-1.0-py3-none-any.whl"
    info = "hello_app-1.0.dist-info/"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for f in sorted(os.listdir("hello_app")):
            if f.endswith(".py"):
                z.write(os.path.join("hello_app", f), "hello_app/" + f)
        z.writestr(info + "METADATA",
                   "Metadata-Version: 2.1\nName: hello-app\nVersion: 1.0\nRequires-Dist: tinypkg\n")
        z.writestr(info + "WHEEL",
                   "Wheel-Version: 1.0\nGenerator: crew-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(info + "RECORD", "")
    return name
"#;

#[test]
fn a_pyproject_app_without_a_lockfile_is_installed_with_pip_install_dot() {
    if !have_git() || !have_python() {
        return;
    }
    let server = Server::start();
    let app = repo(&server, "web: python -m hello_app\n");
    write_wheel(&app.join("wheels"));
    // A build backend of the app's own: setuptools would need `wheel` from
    // an index, and none is reachable.
    app.write("crew_test_backend.py", TEST_BUILD_BACKEND);
    app.write(
        "pyproject.toml",
        "[build-system]\nrequires = []\nbuild-backend = \"crew_test_backend\"\nbackend-path = [\".\"]\n\n\
         [project]\nname = \"hello-app\"\nversion = \"1.0\"\ndependencies = [\"tinypkg\"]\n",
    );
    app.write("hello_app/__init__.py", "");
    app.write(
        "hello_app/__main__.py",
        "import runpy, tinypkg\ntinypkg.GREETING = 'pyproject says hi'\nrunpy.run_module('tinypkg', run_name='__main__')\n",
    );
    commit_all(&server, app.path(), "a pyproject app");
    server.ok(app.path(), &["apps:create", "pyproj"]);
    // No index is reachable: tinypkg comes from the app's wheels.
    server.ok(
        app.path(),
        &["config:set", "PIP_NO_INDEX=1", "PIP_FIND_LINKS=./wheels"],
    );
    let text = server.push(app.path());
    assert!(
        text.contains("-----> Installing the app's package with pip (pip install .)"),
        "{text}"
    );
    assert!(
        text.contains("Successfully installed hello-app-1.0"),
        "{text}"
    );
    server.ok(app.path(), &["scale", "web=1"]);
    assert_eq!(answer(&server, app.path(), "pyproj"), "pyproject says hi\n");
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The tests reach no registry, so corepack cannot fetch yarn or pnpm here:
/// the build must fail saying which lockfile needs what, not fall back to npm
/// (which would ignore the lockfile) or to a "Procfile app".
#[test]
fn yarn_and_pnpm_lockfiles_the_stack_cannot_install_fail_naming_the_lockfile_and_the_lack() {
    if !have_git() || !have_npm() {
        return;
    }
    let server = Server::start();
    for (name, manager, lockfile, lock) in [
        (
            "yarnapp",
            "yarn",
            "yarn.lock",
            "# THIS IS AN AUTOGENERATED FILE. DO NOT EDIT THIS FILE DIRECTLY.\n# yarn lockfile v1\n\n\n",
        ),
        (
            "pnpmapp",
            "pnpm",
            "pnpm-lock.yaml",
            "lockfileVersion: '9.0'\n\nsettings:\n  autoInstallPeers: true\n  excludeLinksFromLockfile: false\n\nimporters:\n\n  .: {}\n",
        ),
    ] {
        if on_path(manager) {
            eprintln!("skipped the {manager} refusal: this stack has {manager} itself");
            continue;
        }
        let app = repo(&server, "web: node index.js\n");
        app.write(
            "package.json",
            format!(r#"{{"name": "{name}", "version": "1.0.0", "private": true}}"#),
        );
        app.write(lockfile, lock);
        app.write("index.js", "console.log('hi');\n");
        commit_all(&server, app.path(), "a locked node app");
        server.ok(app.path(), &["apps:create", name]);
        // Corepack's own switch, so the test never tries the registry.
        server.ok(app.path(), &["config:set", "COREPACK_ENABLE_NETWORK=0"]);
        let (ok, text) = server.git(app.path(), &["push", "crew", "main"]);
        assert!(!ok, "{text}");
        assert!(text.contains("-----> Node.js app detected"), "{text}");
        let said = if on_path("corepack") {
            format!("{lockfile} found, but corepack {manager} could not run {manager}.")
        } else {
            format!(
                "{lockfile} found, but this stack has neither {manager} nor corepack to install it with."
            )
        };
        assert!(text.contains(&said), "no {said:?} in:\n{text}");
        assert!(!text.contains("Installing dependencies with npm"), "{text}");
    }
}
