//! A minimal W3C WebDriver client for driving headless Chromium through chromedriver: plain
//! HTTP/1.1 over `TcpStream` and `serde_json`, just the commands the dashboard test needs.
//!
//! Every call is bounded in time (connect, read and write timeouts), so a stuck browser fails
//! the test instead of hanging it.

use crate::{free_port, wait_until, Proc};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one WebDriver command may take (a session start or a page load included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// `NAME` as an executable file: its usual Debian path first, then each directory of `PATH`.
fn find_executable(usual: &str, names: &[&str]) -> Option<PathBuf> {
    let usual = PathBuf::from(usual);
    if usual.is_file() {
        return Some(usual);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// The Chromium (or Chrome) browser binary, if one is installed.
pub fn chromium() -> Option<PathBuf> {
    find_executable(
        "/usr/bin/chromium",
        &["chromium", "chromium-browser", "google-chrome"],
    )
}

/// The chromedriver binary, or None when it or the browser it drives is missing.
pub fn chromedriver() -> Option<PathBuf> {
    chromium()?;
    find_executable("/usr/bin/chromedriver", &["chromedriver"])
}

/// A chromedriver process on a free loopback port; killed on drop.
pub struct Driver {
    pub port: u16,
    pub proc: Proc,
}

impl Driver {
    /// Starts `binary` logging to `log_dir/chromedriver.log`, and waits (up to 20 s) until its
    /// `GET /status` says it is ready.
    pub fn start(binary: &Path, log_dir: &Path) -> Result<Driver, String> {
        let port = free_port();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--port={port}")).arg("--log-level=INFO");
        let mut proc = Proc::spawn(&mut cmd, log_dir.join("chromedriver.log"));
        let mut exited = None;
        let ready = wait_until(Duration::from_secs(20), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                exited = Some(status);
                return true;
            }
            matches!(
                request(port, "GET", "/status", None),
                Ok(v) if v["ready"] == json!(true)
            )
        });
        match (ready, exited) {
            (true, None) => Ok(Driver { port, proc }),
            (_, Some(status)) => Err(format!(
                "chromedriver exited ({status}):\n{}",
                proc.log_text()
            )),
            (false, None) => Err(format!(
                "chromedriver not ready on port {port} after 20 s:\n{}",
                proc.log_text()
            )),
        }
    }
}

/// A browser session (headless Chromium with a throwaway profile); deleted on drop, which
/// closes the browser.
pub struct Session {
    port: u16,
    pub id: String,
    // Removed after the browser is gone (fields drop after `Drop::drop`).
    _profile: tempfile::TempDir,
}

impl Session {
    /// Starts a browser through the chromedriver on `port`.
    pub fn new(port: u16) -> Result<Session, String> {
        let binary = chromium().ok_or("no chromium binary")?;
        let profile = tempfile::tempdir().map_err(|e| format!("profile dir: {e}"))?;
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": binary.to_string_lossy(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1300,1000",
                            format!("--user-data-dir={}", profile.path().display()),
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                        ]
                    }
                }
            }
        });
        let value = request(port, "POST", "/session", Some(&caps))?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {value}"))?
            .to_string();
        Ok(Session {
            port,
            id,
            _profile: profile,
        })
    }

    fn command(&self, method: &str, what: &str, body: Option<&Value>) -> Result<Value, String> {
        request(
            self.port,
            method,
            &format!("/session/{}/{what}", self.id),
            body,
        )
    }

    /// Loads `url` and waits for its load event.
    pub fn navigate(&self, url: &str) -> Result<(), String> {
        self.command("POST", "url", Some(&json!({ "url": url })))
            .map(|_| ())
    }

    /// Runs `script` (a function body: `return ...` gives the value) in the page.
    pub fn execute(&self, script: &str) -> Result<Value, String> {
        self.command(
            "POST",
            "execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let value = self.command("GET", "screenshot", None)?;
        let text = value
            .as_str()
            .ok_or_else(|| format!("screenshot is not a string: {value}"))?;
        base64_decode(text)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = request(self.port, "DELETE", &format!("/session/{}", self.id), None);
    }
}

/// One WebDriver command: its `value` on success, or `error: message` from the driver.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let (status, text) = http(port, method, path, body.map(Value::to_string))
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let json: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .map_err(|e| format!("{method} {path}: HTTP {status}, not JSON ({e}): {text}"))?
    };
    let value = json.get("value").cloned().unwrap_or(Value::Null);
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        let message = value["message"].as_str().unwrap_or("");
        return Err(format!("{method} {path}: {error}: {message}"));
    }
    if status != 200 {
        return Err(format!("{method} {path}: HTTP {status}: {text}"));
    }
    Ok(value)
}

/// A bare HTTP/1.1 exchange with 127.0.0.1:`port` (one request, `Connection: close`):
/// the status and the body as text.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(COMMAND_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json; charset=utf-8\r\n"
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         {content_type}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body.as_bytes()))
        .map_err(|e| format!("write: {e}"))?;
    // chromedriver keeps the connection open despite `Connection: close`: read the head,
    // then exactly the body it announces, instead of waiting for the end of the stream.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "no HTTP header in {:?}",
                String::from_utf8_lossy(&raw)
            ));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    loop {
        let body_len = raw.len() - (split + 4);
        let complete = match length {
            Some(n) if !chunked => body_len >= n,
            _ if chunked => raw.ends_with(b"0\r\n\r\n"),
            _ => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let mut rest = &raw[split + 4..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)?
    } else {
        if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            rest = &rest[..n.min(rest.len())];
        }
        rest.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line without CRLF")?;
        let line = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size {
            return Err(format!("chunk of {size} bytes cut short at {}", raw.len()));
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw[size..].strip_prefix(b"\r\n").unwrap_or(&raw[size..]);
    }
}

/// Standard base64 (with or without `=` padding, whitespace ignored).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = sextet(c).ok_or_else(|| format!("not base64: {:?}", c as char))?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
