//! `crew export kubernetes|swarm|image`, black box: from a local Procfile with
//! no server at all, and from a real `crew server`'s current release.

mod common;
mod platform;

use common::App;
use platform::{TestServer, repo};
use serde_json::Value;

const PROCFILE: &str = "web: python3 -m http.server $PORT\nworker: python3 worker.py\n";

fn shop() -> App {
    let app = App::with_procfile(PROCFILE);
    app.write(".env", "SECRET='s3 cr$t'\nexport GREETING=\"hi\\nthere\"\n");
    app
}

fn json(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(stdout)))
}

fn item<'a>(list: &'a Value, kind: &str, name: &str) -> &'a Value {
    list["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in {list:#}"))
}

#[test]
fn a_procfile_exports_to_kubernetes_without_a_server() {
    let app = shop();
    let out = app.run(&[
        "export",
        "kubernetes",
        "--procfile",
        "Procfile",
        "--app",
        "shop",
        "--format",
        "json",
    ]);
    out.assert_code(0);
    let list = json(&out.stdout);
    assert_eq!(list["kind"], "List");
    let names: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["kind"].as_str().unwrap_or("?"),
                i["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "Namespace/crew-shop",
            "Secret/shop-config-v1",
            "Deployment/shop-web",
            "Deployment/shop-worker",
            "Service/shop-web",
        ]
    );
    // Config vars come from .env, read in crew's dialect.
    let secret = item(&list, "Secret", "shop-config-v1");
    assert_eq!(secret["stringData"]["SECRET"], "s3 cr$t");
    assert_eq!(secret["stringData"]["GREETING"], "hi\nthere");
    // A first deploy's formation: web=1, the rest 0.
    assert_eq!(item(&list, "Deployment", "shop-web")["spec"]["replicas"], 1);
    assert_eq!(
        item(&list, "Deployment", "shop-worker")["spec"]["replicas"],
        0
    );
    let container =
        &item(&list, "Deployment", "shop-web")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "crew/shop:v1");
    let line = container["command"][2].as_str().expect("a command line");
    assert!(
        line.ends_with("exec python3 -m http.server $PORT"),
        "{line}"
    );
}

#[test]
fn formation_release_and_image_can_be_given() {
    let app = shop();
    let out = app.run(&[
        "export",
        "kubernetes",
        "-f",
        "Procfile",
        "--app",
        "shop",
        "-m",
        "web=3,worker=2",
        "--release",
        "v7",
        "--image",
        "registry.local:5000/shop:v7",
        "--format",
        "json",
    ]);
    out.assert_code(0);
    let list = json(&out.stdout);
    assert_eq!(item(&list, "Deployment", "shop-web")["spec"]["replicas"], 3);
    let worker = item(&list, "Deployment", "shop-worker");
    assert_eq!(worker["spec"]["replicas"], 2);
    assert_eq!(
        worker["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local:5000/shop:v7"
    );
    assert_eq!(
        worker["spec"]["template"]["metadata"]["labels"]["crew/release"],
        "v7"
    );
    item(&list, "Secret", "shop-config-v7");
}

#[test]
fn an_output_directory_gets_one_file_per_object_in_apply_order() {
    let app = shop();
    let out = app.run(&[
        "export",
        "kubernetes",
        "-f",
        "Procfile",
        "--app",
        "shop",
        "-o",
        "k8s",
    ]);
    out.assert_code(0);
    let mut files: Vec<String> = std::fs::read_dir(app.join("k8s"))
        .expect("the directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "00-namespace-crew-shop.yaml",
            "01-secret-shop-config-v1.yaml",
            "02-deployment-shop-web.yaml",
            "03-deployment-shop-worker.yaml",
            "04-service-shop-web.yaml",
        ]
    );
    let text = std::fs::read_to_string(app.join("k8s/02-deployment-shop-web.yaml"))
        .expect("the deployment");
    assert!(
        text.starts_with("apiVersion: \"apps/v1\"\nkind: \"Deployment\"\n"),
        "{text}"
    );
    assert!(out.stdout().contains("k8s/00-namespace-crew-shop.yaml"));
}

#[test]
fn the_yaml_stream_has_one_document_per_object() {
    let app = shop();
    let out = app.run(&["export", "kubernetes", "-f", "Procfile", "--app", "shop"]);
    out.assert_code(0);
    let text = out.stdout();
    assert_eq!(text.matches("---\n").count(), 5, "{text}");
    assert!(text.contains("  name: \"shop-config-v1\"\n"), "{text}");
}

#[test]
fn a_one_off_is_a_job_for_kubectl_create() {
    let app = shop();
    let out = app.run(&[
        "export",
        "kubernetes",
        "-f",
        "Procfile",
        "--app",
        "shop",
        "--run",
        "python3 manage.py migrate",
        "--format",
        "json",
    ]);
    out.assert_code(0);
    let job = json(&out.stdout);
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["generateName"], "shop-run-");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
}

#[test]
fn a_procfile_exports_to_a_swarm_stack() {
    let app = shop();
    let out = app.run(&[
        "export", "swarm", "-f", "Procfile", "--app", "shop", "-m", "worker=2", "--format", "json",
    ]);
    out.assert_code(0);
    let stack = json(&out.stdout);
    let web = &stack["services"]["shop-web"];
    assert_eq!(web["deploy"]["replicas"], 1);
    assert_eq!(web["environment"]["DYNO"], "web.{{.Task.Slot}}");
    // `$` is doubled so that `docker stack deploy` leaves it alone.
    assert_eq!(web["environment"]["SECRET"], "s3 cr$$t");
    assert_eq!(stack["services"]["shop-worker"]["deploy"]["replicas"], 2);

    let out = app.run(&[
        "export", "swarm", "-f", "Procfile", "--app", "shop", "-o", "out",
    ]);
    out.assert_code(0);
    let text = std::fs::read_to_string(app.join("out/stack.yml")).expect("stack.yml");
    assert!(text.contains("\n  shop-web:\n"), "{text}");
    assert!(text.contains("version: \"3.8\"\n"), "{text}");
}

#[test]
fn a_slug_becomes_an_image_archive() {
    let app = shop();
    // A crew-style slug: paths relative to the app's root.
    let status = app
        .shell("tar -czf slug.tgz Procfile .env")
        .status()
        .expect("running tar");
    assert!(status.success());
    let out = app.run(&[
        "export",
        "image",
        "-a",
        "shop",
        "--release",
        "v2",
        "--slug",
        "slug.tgz",
        "-o",
        "shop.tar",
    ]);
    out.assert_code(0);
    assert!(
        out.stdout().contains("Wrote crew/shop:v2"),
        "{}",
        out.report()
    );
    let file = std::fs::File::open(app.join("shop.tar")).expect("the archive");
    let mut archive = tar::Archive::new(file);
    let mut manifest = None;
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        if entry.path().expect("a path").to_str() == Some("manifest.json") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).expect("reading");
            manifest = Some(text);
        }
    }
    let manifest: Value = serde_json::from_str(&manifest.expect("a manifest.json")).expect("JSON");
    assert_eq!(manifest[0]["RepoTags"][0], "crew/shop:v2");

    app.run(&["export", "image", "-a", "shop", "-o", "x.tar"])
        .assert_clean_error(&["--slug"]);
    app.run(&[
        "export", "image", "-a", "shop", "--slug", "nope.tgz", "-o", "x.tar",
    ])
    .assert_clean_error(&["nope.tgz"]);
    assert!(!app.exists("x.tar"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let app = shop();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["export", "kubernetes", "-f", "Procfile", "--app", "Shop"],
            &["`Shop` is not a valid app name"],
        ),
        (
            &["export", "kubernetes", "-f", "Procfile", "--app", "shop-"],
            &["not a valid app name"],
        ),
        (
            &["export", "kubernetes", "-f", "Nope", "--app", "shop"],
            &["no Procfile", "Nope"],
        ),
        (
            &[
                "export",
                "kubernetes",
                "-f",
                "Procfile",
                "--app",
                "shop",
                "-m",
                "clock=1",
            ],
            &["clock"],
        ),
        (
            &[
                "export",
                "kubernetes",
                "-f",
                "Procfile",
                "--app",
                "shop",
                "--release",
                "v0",
            ],
            &["v0"],
        ),
        (
            &[
                "export", "swarm", "-f", "Procfile", "--app", "shop", "--run", "x",
            ],
            &["--run"],
        ),
        (
            &["export", "kubernetes", "-a", "Bad_Name"],
            &["`Bad_Name` is not a valid app name"],
        ),
        (&["export", "helm", "-f", "Procfile"], &["helm"]),
    ];
    for (args, needles) in cases {
        app.run(args).assert_clean_error(needles);
    }
    // A Procfile whose directory is no app name needs --app.
    app.write("My_App/Procfile", PROCFILE);
    app.run(&["export", "kubernetes", "-f", "My_App/Procfile"])
        .assert_clean_error(&["My_App", "--app"]);
    // A type the clusters cannot name is refused, naming it.
    app.write("odd/Procfile", "web: x\nrun: y\n");
    app.run(&["export", "kubernetes", "-f", "odd/Procfile", "--app", "odd"])
        .assert_clean_error(&["`run`"]);
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let app = shop();
    let mut command = app.command(&["export", "kubernetes", "-a", "shop"]);
    command
        .env("HOME", app.path())
        .env(
            "CREW_API_URL",
            format!("http://127.0.0.1:{}", platform::free_port()),
        )
        .env("CREW_API_KEY", "x");
    let output = command.output().expect("running crew");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("could not reach crew"), "{stderr}");
    common::assert_no_panic(&stderr);
}

#[test]
fn a_servers_current_release_and_formation_are_exported() {
    let Some(server) = TestServer::new().start() else {
        return;
    };
    let dir = server.home.path();
    let (ok, _, err) = server.cli(dir, &["export", "kubernetes", "-a", "ghost"]);
    assert!(!ok && err.contains("no app named `ghost`"), "{err}");

    let app = repo(
        &server,
        "web: python3 -m http.server $PORT\nworker: sleep 1000\n",
    );
    server.ok(app.path(), &["apps:create", "shop"]);
    let (ok, _, err) = server.cli(app.path(), &["export", "kubernetes", "-a", "shop"]);
    assert!(
        !ok && err.contains("shop has no deployed release yet"),
        "{err}"
    );

    server.push(app.path());
    server.ok(app.path(), &["config:set", "SECRET=x"]);
    server.ok(app.path(), &["scale", "worker=2"]);
    // Inside the repository the `crew` remote names the app.
    let out = server.ok(app.path(), &["export", "kubernetes", "--format", "json"]);
    let list = json(out.as_bytes());
    let secret = item(&list, "Secret", "shop-config-v3");
    assert_eq!(secret["stringData"]["SECRET"], "x");
    let worker = item(&list, "Deployment", "shop-worker");
    assert_eq!(worker["spec"]["replicas"], 2);
    assert_eq!(
        worker["spec"]["template"]["spec"]["containers"][0]["image"],
        "crew/shop:v3"
    );
    assert_eq!(item(&list, "Deployment", "shop-web")["spec"]["replicas"], 1);

    let out = server.ok(
        app.path(),
        &[
            "export",
            "swarm",
            "-a",
            "shop",
            "--image",
            "reg:5000/shop:v3",
            "--format",
            "json",
        ],
    );
    let stack = json(out.as_bytes());
    assert_eq!(stack["services"]["shop-worker"]["deploy"]["replicas"], 2);
    assert_eq!(stack["services"]["shop-web"]["image"], "reg:5000/shop:v3");

    let (ok, _, err) = server.cli(
        app.path(),
        &["export", "kubernetes", "-a", "shop", "-m", "web=2"],
    );
    assert!(!ok && err.contains("local app"), "{err}");
}
