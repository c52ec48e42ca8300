//! The engine against a fake runtime, on paused time: restart backoff, scale
//! order and formation diffs, checked exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crew_engine::{AppSpec, DynoState, EngineConfig, EngineHandle, ProcessTypeSpec, TypeSettings};
use crew_logs::LogEvent;
use crew_procfile::{Formation, parse_changes};
use crew_runtime::{
    DynoProcess, DynoSpec, ExitStatus, Output, ProcessGroup, Runtime, RuntimeError, Signal,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// One spawn: when, which dyno, its pid and its environment.
type Spawn = (Instant, String, u32, Vec<(String, String)>);

/// What the fake saw: every spawn and every signal, with the paused clock's time.
#[derive(Default)]
struct Record {
    spawns: Vec<Spawn>,
    signals: Vec<(String, Signal)>,
}

#[derive(Clone, Default)]
struct FakeRuntime {
    record: Arc<Mutex<Record>>,
}

impl FakeRuntime {
    fn spawns_of(&self, name: &str) -> Vec<Instant> {
        let r = self.record.lock().expect("record");
        r.spawns
            .iter()
            .filter(|s| s.1 == name)
            .map(|s| s.0)
            .collect()
    }

    fn spawned_names(&self) -> Vec<String> {
        let r = self.record.lock().expect("record");
        r.spawns.iter().map(|s| s.1.clone()).collect()
    }

    fn env_of(&self, name: &str, key: &str) -> Option<String> {
        let r = self.record.lock().expect("record");
        r.spawns
            .iter()
            .rev()
            .find(|s| s.1 == name)
            .and_then(|s| s.3.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    fn signals(&self) -> Vec<(String, Signal)> {
        self.record.lock().expect("record").signals.clone()
    }
}

/// A fake dyno: `run` lives until signalled, `exit N` exits at once,
/// `live SECS exit N` exits after a while, `stubborn` ignores SIGTERM.
struct FakeProcess {
    pid: u32,
    group: FakeGroup,
    exit: watch::Receiver<Option<ExitStatus>>,
}

#[derive(Clone)]
struct FakeGroup {
    name: String,
    stubborn: bool,
    exit: Arc<watch::Sender<Option<ExitStatus>>>,
    record: Arc<Mutex<Record>>,
}

impl ProcessGroup for FakeGroup {
    fn signal(&self, signal: Signal) {
        self.record
            .lock()
            .expect("record")
            .signals
            .push((self.name.clone(), signal));
        let dies = signal == Signal::Kill || !(self.stubborn && signal == Signal::Term);
        if dies && self.exit.borrow().is_none() {
            let _ = self.exit.send(Some(ExitStatus::Signaled(signal.number())));
        }
    }

    fn alive(&self) -> bool {
        self.exit.borrow().is_none()
    }
}

impl DynoProcess for FakeProcess {
    type Group = FakeGroup;

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn take_output(&mut self) -> Option<Output> {
        Some(Box::new(tokio::io::empty()))
    }

    fn group(&self) -> FakeGroup {
        self.group.clone()
    }

    async fn wait(&mut self) -> Result<ExitStatus, RuntimeError> {
        loop {
            if let Some(status) = *self.exit.borrow_and_update() {
                return Ok(status);
            }
            if self.exit.changed().await.is_err() {
                return Ok(ExitStatus::Code(-1));
            }
        }
    }
}

impl Runtime for FakeRuntime {
    type Process = FakeProcess;

    fn spawn(&self, spec: &DynoSpec) -> Result<FakeProcess, RuntimeError> {
        let pid = {
            let mut r = self.record.lock().expect("record");
            let pid = 1000 + u32::try_from(r.spawns.len()).expect("few spawns");
            r.spawns
                .push((Instant::now(), spec.name.clone(), pid, spec.env.clone()));
            pid
        };
        // The engine hands simple commands to the shell as `exec CMD`.
        let command = spec.command.strip_prefix("exec ").unwrap_or(&spec.command);
        let words: Vec<&str> = command.split_whitespace().collect();
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        match words.as_slice() {
            ["exit", code] => {
                let _ = tx.send(Some(ExitStatus::Code(code.parse().expect("a code"))));
            }
            ["live", secs, "exit", code] => {
                let tx = tx.clone();
                let secs: u64 = secs.parse().expect("seconds");
                let code: i32 = code.parse().expect("a code");
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    if tx.borrow().is_none() {
                        let _ = tx.send(Some(ExitStatus::Code(code)));
                    }
                });
            }
            _ => {}
        }
        Ok(FakeProcess {
            pid,
            group: FakeGroup {
                name: spec.name.clone(),
                stubborn: command == "stubborn",
                exit: tx,
                record: self.record.clone(),
            },
            exit: rx,
        })
    }
}

struct Harness {
    runtime: FakeRuntime,
    engine: EngineHandle,
    outcome: tokio::task::JoinHandle<crew_engine::Outcome>,
    _logs: tokio::task::JoinHandle<()>,
}

fn app(types: &[(&str, &str)]) -> AppSpec {
    AppSpec {
        release: None,
        types: types
            .iter()
            .map(|(name, command)| ProcessTypeSpec {
                name: (*name).into(),
                command: (*command).into(),
                settings: TypeSettings::default(),
                size: None,
            })
            .collect(),
        env: vec![("FOO".into(), "bar".into())],
        cwd: std::env::temp_dir(),
        ports: crew_engine::Ports::Formula { base: 5000 },
        command_prefix: None,
    }
}

fn start(app: AppSpec, formation: &str, keep_alive: bool) -> Harness {
    let runtime = FakeRuntime::default();
    let mut f = Formation::new(app.types.iter().map(|t| t.name.clone()), 0);
    f.apply(&parse_changes([formation]).expect("a formation"))
        .expect("valid");
    let (logs, mut rx) = mpsc::channel::<LogEvent>(1024);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (engine, outcome) = crew_engine::start(
        runtime.clone(),
        app,
        f,
        EngineConfig {
            stop_timeout: Duration::from_secs(5),
            keep_alive,
            boot_timeout: Duration::from_secs(60),
            drain_requests: false,
            output_limits: None,
        },
        logs,
    );
    Harness {
        runtime,
        engine,
        outcome,
        _logs: drain,
    }
}

/// Lets the paused clock run until `check` holds, up to `limit` of fake time.
async fn until(limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn gaps(times: &[Instant]) -> Vec<u64> {
    times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64().round() as u64)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_exponentially_up_to_five_minutes() {
    let h = start(app(&[("worker", "exit 1")]), "worker=1", true);
    until(Duration::from_secs(3600), || {
        h.runtime.spawns_of("worker.1").len() >= 13
    })
    .await;
    let spawns = h.runtime.spawns_of("worker.1");
    assert_eq!(
        gaps(&spawns[..13]),
        [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    );
}

#[tokio::test(start_paused = true)]
async fn ps_shows_the_wait_and_the_restart_count() {
    let h = start(app(&[("worker", "exit 1")]), "worker=1", true);
    until(Duration::from_secs(60), || {
        h.runtime.spawns_of("worker.1").len() >= 5
    })
    .await;
    // After the fifth crash the wait is 8 s.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ps = h.engine.ps().await;
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].state, DynoState::Crashed);
    assert_eq!(ps[0].restarts, 4);
    let wait = ps[0].restart_in.expect("a wait");
    assert!(
        wait <= Duration::from_secs(8) && wait > Duration::from_secs(7),
        "{wait:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_minute_up_resets_the_backoff() {
    let h = start(app(&[("worker", "live 61 exit 1")]), "worker=1", true);
    until(Duration::from_secs(400), || {
        h.runtime.spawns_of("worker.1").len() >= 4
    })
    .await;
    // Each run lived 61 s, so every crash counts as a first one: restarted at once.
    assert_eq!(gaps(&h.runtime.spawns_of("worker.1")[..4]), [61, 61, 61]);
}

#[tokio::test(start_paused = true)]
async fn restart_resets_the_backoff() {
    let h = start(app(&[("worker", "exit 1")]), "worker=1", true);
    until(Duration::from_secs(60), || {
        h.runtime.spawns_of("worker.1").len() >= 5
    })
    .await;
    let before = h.runtime.spawns_of("worker.1").len();
    h.engine
        .restart(Some("worker".into()))
        .await
        .expect("restart");
    until(Duration::from_secs(5), || {
        h.runtime.spawns_of("worker.1").len() >= before + 2
    })
    .await;
    // The restart itself, then the immediate first-crash restart.
    let spawns = h.runtime.spawns_of("worker.1");
    assert_eq!(gaps(&spawns[before - 1..before + 2]), [0, 0]);
}

#[tokio::test(start_paused = true)]
async fn scaling_to_zero_forgets_the_crash_history() {
    let h = start(app(&[("worker", "exit 1")]), "worker=1", true);
    until(Duration::from_secs(60), || {
        h.runtime.spawns_of("worker.1").len() >= 5
    })
    .await;
    h.engine
        .scale(parse_changes(["worker=0"]).expect("changes"))
        .await
        .expect("scale");
    until_ps(&h.engine, Duration::from_secs(5), |ps| ps.is_empty()).await;
    let before = h.runtime.spawns_of("worker.1").len();
    h.engine
        .scale(parse_changes(["worker=1"]).expect("changes"))
        .await
        .expect("scale");
    until(Duration::from_secs(5), || {
        h.runtime.spawns_of("worker.1").len() >= before + 2
    })
    .await;
    let spawns = h.runtime.spawns_of("worker.1");
    assert_eq!(gaps(&spawns[before..before + 2]), [0]);
}

/// Polls `ps` on the paused clock until `check` holds.
async fn until_ps(
    engine: &EngineHandle,
    limit: Duration,
    check: impl Fn(&[crew_engine::DynoInfo]) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        if check(&engine.ps().await) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ps did not match within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn scale_up_starts_the_lowest_free_numbers_with_formula_ports() {
    let h = start(
        app(&[("web2", "run"), ("worker", "run")]),
        "web2=1,worker=1",
        true,
    );
    until(Duration::from_secs(5), || {
        h.runtime.spawned_names().len() == 2
    })
    .await;
    let formation = h
        .engine
        .scale(parse_changes(["web2+2"]).expect("changes"))
        .await
        .expect("scale");
    assert_eq!(formation.to_string(), "web2=3 worker=1");
    until(Duration::from_secs(5), || {
        h.runtime.spawned_names().len() == 4
    })
    .await;
    let names = h.runtime.spawned_names();
    assert_eq!(names[2..], ["web2.2".to_string(), "web2.3".to_string()]);
    assert_eq!(h.runtime.env_of("web2.2", "PORT").as_deref(), Some("5001"));
    assert_eq!(h.runtime.env_of("web2.3", "PORT").as_deref(), Some("5002"));
    assert_eq!(
        h.runtime.env_of("worker.1", "PORT").as_deref(),
        Some("5100")
    );
    assert_eq!(
        h.runtime.env_of("web2.3", "DYNO").as_deref(),
        Some("web2.3")
    );
    assert_eq!(h.runtime.env_of("web2.3", "PS").as_deref(), Some("web2.3"));
    assert_eq!(h.runtime.env_of("web2.3", "FOO").as_deref(), Some("bar"));
    // Nobody else was signalled or restarted.
    assert!(h.runtime.signals().is_empty());
}

#[tokio::test(start_paused = true)]
async fn scale_down_stops_the_highest_numbers_first_and_touches_nothing_else() {
    let h = start(
        app(&[("web2", "run"), ("worker", "run")]),
        "web2=4,worker=1",
        true,
    );
    until(Duration::from_secs(5), || {
        h.runtime.spawned_names().len() == 5
    })
    .await;
    h.engine
        .scale(parse_changes(["web2=1"]).expect("changes"))
        .await
        .expect("scale");
    until(Duration::from_secs(5), || h.runtime.signals().len() == 3).await;
    let signals = h.runtime.signals();
    assert_eq!(
        signals,
        [
            ("web2.4".to_string(), Signal::Term),
            ("web2.3".to_string(), Signal::Term),
            ("web2.2".to_string(), Signal::Term),
        ]
    );
    until_ps(&h.engine, Duration::from_secs(5), |ps| ps.len() == 2).await;
    let ps = h.engine.ps().await;
    let names: Vec<&str> = ps.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["web2.1", "worker.1"]);
    assert_eq!(ps[0].pid, Some(1000));
    assert_eq!(h.runtime.spawned_names().len(), 5, "nothing was restarted");
}

#[tokio::test(start_paused = true)]
async fn a_bad_scale_changes_nothing() {
    let h = start(
        app(&[("web2", "run"), ("worker", "run")]),
        "web2=1,worker=1",
        true,
    );
    until(Duration::from_secs(5), || {
        h.runtime.spawned_names().len() == 2
    })
    .await;
    for bad in ["web2=3,nope=1", "worker-2", "all+1"] {
        let changes = parse_changes([bad]).expect("parses");
        assert!(h.engine.scale(changes).await.is_err(), "{bad}");
    }
    assert_eq!(
        h.engine.formation().await.expect("formation").to_string(),
        "web2=1 worker=1"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.runtime.spawned_names().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn stop_keeps_a_dyno_down_until_restarted() {
    let h = start(app(&[("worker", "run")]), "worker=2", true);
    until(Duration::from_secs(5), || {
        h.runtime.spawned_names().len() == 2
    })
    .await;
    h.engine.stop("worker.2".into()).await.expect("stop");
    until_ps(&h.engine, Duration::from_secs(5), |ps| {
        ps.iter().any(|d| d.state == DynoState::Down)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        h.runtime.spawned_names().len(),
        2,
        "a stopped dyno stays down"
    );
    assert_eq!(
        h.engine.formation().await.expect("formation").to_string(),
        "worker=2"
    );
    h.engine
        .restart(Some("worker.2".into()))
        .await
        .expect("restart");
    until(Duration::from_secs(5), || {
        h.runtime.spawned_names().len() == 3
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stubborn_dyno_is_killed_after_the_stop_timeout() {
    let h = start(app(&[("worker", "stubborn")]), "worker=1", true);
    until(Duration::from_secs(5), || {
        h.runtime.spawned_names().len() == 1
    })
    .await;
    let asked = Instant::now();
    h.engine
        .shutdown(crew_engine::ShutdownReason::Signal(Signal::Int));
    let outcome = h.outcome.await.expect("the engine ends");
    assert_eq!(outcome.exit_code, 130);
    assert_eq!(
        h.runtime.signals(),
        [
            ("worker.1".to_string(), Signal::Term),
            ("worker.1".to_string(), Signal::Kill)
        ]
    );
    let took = Instant::now() - asked;
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn foremans_rule_the_first_exit_ends_the_run_with_its_code() {
    let h = start(
        app(&[("a", "live 2 exit 42"), ("b", "run")]),
        "a=1,b=1",
        false,
    );
    let outcome = h.outcome.await.expect("the engine ends");
    assert_eq!(outcome.exit_code, 42);
    assert_eq!(
        h.runtime.signals()[..1],
        [("b.1".to_string(), Signal::Term)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_may_exit_type_finishing_cleanly_leaves_the_run_alone() {
    let mut spec = app(&[("release", "exit 0"), ("worker", "run")]);
    spec.types[0].settings.may_exit = true;
    let h = start(spec, "release=1,worker=1", false);
    until_ps(&h.engine, Duration::from_secs(5), |ps| {
        ps.iter().any(|d| d.state == DynoState::Complete)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!h.outcome.is_finished());
    assert!(h.runtime.signals().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_deploy_starts_the_new_release_and_stops_the_old_one() {
    let h = start(
        app(&[("worker", "run"), ("clock", "run")]),
        "worker=2,clock=1",
        true,
    );
    until(Duration::from_secs(5), || {
        h.runtime.spawned_names().len() == 3
    })
    .await;
    let mut next = app(&[("worker", "run v2"), ("mailer", "run")]);
    next.env = vec![("FOO".into(), "v2".into())];
    let mut formation = Formation::new(next.types.iter().map(|t| t.name.clone()), 0);
    formation
        .apply(&parse_changes(["worker=2,mailer=1"]).expect("changes"))
        .expect("valid");
    h.engine.deploy(next, formation);
    until_ps(&h.engine, Duration::from_secs(10), |ps| {
        ps.len() == 3 && ps.iter().all(|d| d.state == DynoState::Up)
    })
    .await;
    let ps = h.engine.ps().await;
    let names: Vec<&str> = ps.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["worker.1", "worker.2", "mailer.1"]);
    assert!(
        ps.iter().all(|d| d.pid >= Some(1003)),
        "all from the new release"
    );
    assert_eq!(h.runtime.env_of("worker.1", "FOO").as_deref(), Some("v2"));
    let mut stopped: Vec<String> = h.runtime.signals().into_iter().map(|(n, _)| n).collect();
    stopped.sort();
    assert_eq!(stopped, ["clock.1", "worker.1", "worker.2"]);
}

/// `heroku ps:wait` waits until every dyno is on the current release, so a
/// dyno says which release it started on, not which one is current now.
#[tokio::test(start_paused = true)]
async fn each_dyno_names_the_release_it_started_on_through_a_rollout() {
    let mut v1 = app(&[("worker", "stubborn")]);
    v1.release = Some(1);
    let h = start(v1, "worker=1", true);
    until_ps(&h.engine, Duration::from_secs(5), |ps| {
        ps.len() == 1 && ps[0].state == DynoState::Up
    })
    .await;
    assert_eq!(h.engine.ps().await[0].release, Some(1));

    let mut v2 = app(&[("worker", "run")]);
    v2.release = Some(2);
    let mut formation = Formation::new(v2.types.iter().map(|t| t.name.clone()), 0);
    formation
        .apply(&parse_changes(["worker=1"]).expect("changes"))
        .expect("valid");
    h.engine.deploy(v2, formation);
    // The old dyno ignores SIGTERM, so for the stop timeout both are there.
    until_ps(&h.engine, Duration::from_secs(4), |ps| ps.len() == 2).await;
    let mut releases: Vec<Option<u32>> = h.engine.ps().await.iter().map(|d| d.release).collect();
    releases.sort();
    assert_eq!(releases, [Some(1), Some(2)], "old and new side by side");

    until_ps(&h.engine, Duration::from_secs(10), |ps| {
        ps.len() == 1 && ps[0].state == DynoState::Up
    })
    .await;
    assert_eq!(h.engine.ps().await[0].release, Some(2));
}
