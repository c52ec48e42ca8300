//! A stand-in process for crew's tests and benchmarks: it listens on `$PORT`,
//! writes lines, sleeps and exits as told, and costs almost nothing to start, so
//! a benchmark measures crew rather than an interpreter's boot.
//!
//! ```text
//! fakeproc [--listen] [--lines N] [--width BYTES] [--sleep SECS] [--exit-code N]
//! ```
//!
//! Without `--sleep` or `--exit-code` it runs until killed. Signal behaviour comes
//! from the shell (`trap '' TERM; exec fakeproc …`), since ignored signals survive
//! `exec`.

use std::io::{BufWriter, Read, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

struct Options {
    listen: bool,
    lines: u64,
    width: usize,
    sleep: Option<f64>,
    exit_code: Option<u8>,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        listen: false,
        lines: 0,
        width: 80,
        sleep: None,
        exit_code: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => options.listen = true,
            "--lines" => options.lines = number(&value("--lines")?)?,
            "--width" => options.width = number(&value("--width")?)?,
            "--sleep" => options.sleep = Some(number(&value("--sleep")?)?),
            "--exit-code" => options.exit_code = Some(number(&value("--exit-code")?)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a number"))
}

fn listen() -> Result<(), String> {
    let port = std::env::var("PORT").map_err(|_| "--listen needs PORT".to_string())?;
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))
        .map_err(|e| format!("binding {port}: {e}"))?;
    let dyno = std::env::var("DYNO").unwrap_or_default();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let body = format!("ok {dyno}\n");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}

fn write_lines(count: u64, width: usize) -> std::io::Result<()> {
    let dyno = std::env::var("DYNO").unwrap_or_else(|_| "fake".into());
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut line = Vec::with_capacity(width + 1);
    for i in 0..count {
        line.clear();
        write!(line, "{dyno}-{i:08}-")?;
        line.resize(width.max(line.len()), b'x');
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.flush()
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fakeproc: {e}");
            return ExitCode::from(2);
        }
    };
    if options.listen
        && let Err(e) = listen()
    {
        eprintln!("fakeproc: {e}");
        return ExitCode::from(1);
    }
    if options.lines > 0
        && let Err(e) = write_lines(options.lines, options.width)
    {
        eprintln!("fakeproc: writing: {e}");
        return ExitCode::from(1);
    }
    match (options.sleep, options.exit_code) {
        (Some(secs), code) => {
            std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
            ExitCode::from(code.unwrap_or(0))
        }
        (None, Some(code)) => ExitCode::from(code),
        (None, None) => loop {
            std::thread::park();
        },
    }
}
