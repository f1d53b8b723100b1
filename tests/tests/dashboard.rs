//! The coordinator's dashboard in a real browser (headless Chromium through chromedriver):
//! a sweep page opened before any worker runs shows the trials' epochs rise as they train,
//! by polling and updating in place, without reloading the page; a TPE search's page draws
//! its best so far.
//!
//! Skipped when Chromium or chromedriver is missing, unless `REQUIRE_BROWSER` is set.

use integration_tests::webdriver::{self, Driver, Session};
use integration_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const EPOCHS: u32 = 6;

/// Two slow trials of six epochs each (a few seconds an epoch on 2 cores).
const BODY: &str = "[defaults]\nmodel = \"seed-cnn\"\ntrain_images = 400\ntest_images = 50\nepochs = 6\nbatch_size = 50\n\
                    [grid]\nseed = [1, 2]\n";

/// (trial id, epoch cell text) of every trial row on the page.
fn rows(session: &Session) -> Result<Vec<(String, String)>, String> {
    let value = session.execute(
        "return Array.from(document.querySelectorAll('tr[data-trial]')).map(r => {\n\
           const cell = r.querySelector('td.epoch');\n\
           return [r.getAttribute('data-trial'), cell ? cell.textContent : ''];\n\
         });",
    )?;
    let rows = value
        .as_array()
        .ok_or_else(|| format!("not an array: {value}"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let text = |i: usize| r[i].as_str().unwrap_or_default().to_string();
            (text(0), text(1))
        })
        .collect())
}

/// Epochs reached per trial, for the cells that read exactly `E/6`.
fn reached(rows: &[(String, String)]) -> BTreeMap<String, u32> {
    rows.iter()
        .filter_map(|(id, cell)| {
            let (e, n) = cell.trim().split_once('/')?;
            let (e, n) = (e.parse::<u32>().ok()?, n.parse::<u32>().ok()?);
            (n == EPOCHS && e <= n).then(|| (id.clone(), e))
        })
        .collect()
}

/// The last lines of every log in `dir` (server, worker, chromedriver), for failure messages.
fn logs(dir: &Path) -> String {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e == "log"));
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            format!("--- {} (last 40 lines)\n{tail}\n", p.display())
        })
        .collect()
}

/// chromedriver, or `None` (the test is skipped) when Chromium or chromedriver is missing,
/// unless `REQUIRE_BROWSER` is set.
fn browser() -> Option<std::path::PathBuf> {
    let found = webdriver::chromedriver();
    if found.is_none() {
        let required = std::env::var_os("REQUIRE_BROWSER").is_some_and(|v| !v.is_empty());
        let how = "Chromium and chromedriver are needed: apt-get install chromium chromium-driver \
                   (expected /usr/bin/chromium and /usr/bin/chromedriver)";
        assert!(!required, "REQUIRE_BROWSER is set but no browser: {how}");
        eprintln!("skipped: {how}");
    }
    found
}

/// The cluster's dashboard port, once it serves the page.
fn served(c: &Cluster) -> u16 {
    let ui = c.health_port;
    assert!(
        wait_until(Duration::from_secs(30), || http_status(ui, "/")
            == Some(200)),
        "the dashboard is not served at GET /\n{}",
        logs(c.dir.path())
    );
    ui
}

#[test]
fn the_dashboard_shows_epochs_rise_without_reloading() {
    let _serial = serial();
    let Some(chromedriver) = browser() else {
        return;
    };

    let c = Cluster::start("dashboard", BODY, 100, 5.0);
    let (dir, ui) = (c.dir.path(), served(&c));

    // The browser; dropped (session deleted, browser closed) before chromedriver is killed.
    let driver = Driver::start(&chromedriver, dir).unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    let session =
        Session::new(driver.port).unwrap_or_else(|e| panic!("no session: {e}\n{}", logs(dir)));
    let url = format!("http://127.0.0.1:{ui}/#/sweep/{}", c.name);
    session
        .navigate(&url)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    // Survives only as long as this document does: a reload would lose it.
    session
        .execute("window.__sameDocument = 'yes'; return true;")
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));

    // Both trials are on the page before anything trains, so every epoch comes from a poll.
    let mut seen = Ok(Vec::new());
    assert!(
        wait_until(Duration::from_secs(30), || {
            seen = rows(&session);
            seen.as_ref().is_ok_and(|r| r.len() == 2)
        }),
        "the page does not show the sweep's 2 trials: {seen:?}\n{}",
        logs(dir)
    );
    let _worker = c.worker("w");

    // A first epoch shows up...
    let mut first = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(120), || {
            seen = rows(&session);
            first = reached(seen.as_deref().unwrap_or_default());
            first.values().any(|&e| e >= 1)
        }),
        "no cell reached 1/{EPOCHS}: {seen:?}\n{}",
        logs(dir)
    );
    // ...and then more: a trial's epochs rise past what the page showed (the same trial's
    // next epoch, or the next trial's first).
    let mut later = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(180), || {
            seen = rows(&session);
            later = reached(seen.as_deref().unwrap_or_default());
            later
                .iter()
                .any(|(id, &e)| e > first.get(id).copied().unwrap_or(0))
        }),
        "epochs did not rise past {first:?}: {seen:?}\n{}",
        logs(dir)
    );

    // The same document all along, updated by its own polls.
    let state = session
        .execute("return [window.__sameDocument === 'yes', window.dashboardPolls];")
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    assert_eq!(state[0], true, "the page reloaded: {state}");
    assert!(
        state[1].as_f64().is_some_and(|n| n >= 2.0),
        "window.dashboardPolls should count at least 2 polls: {state}"
    );

    let png = session
        .screenshot()
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {:?}",
        &png[..png.len().min(16)]
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &png).unwrap();
    println!(
        "dashboard screenshot ({first:?} -> {later:?}): {}",
        out.display()
    );
}

/// Three quick trials of a TPE search (one worker): the sweep page shows the search's
/// best-so-far chart, drawn from `/api/sweeps/NAME`'s `search` (the report's best-so-far
/// rule), once a trial has a result.
const SEARCH_BODY: &str = "search = \"tpe\"\ntrials = 3\nstartup_trials = 2\nsearch_seed = 1\n\
                           [defaults]\nmodel = \"dense\"\ntrain_images = 200\ntest_images = 50\nepochs = 1\nbatch_size = 50\n\
                           [grid]\nlr = { min = 1e-4, max = 1e-1, log = true }\n";

#[test]
fn the_dashboard_draws_a_searchs_best_so_far() {
    let _serial = serial();
    let Some(chromedriver) = browser() else {
        return;
    };
    let c = Cluster::start("search", SEARCH_BODY, 100, 5.0);
    let (dir, ui) = (c.dir.path(), served(&c));
    let _worker = c.worker("w");
    let driver = Driver::start(&chromedriver, dir).unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    let session =
        Session::new(driver.port).unwrap_or_else(|e| panic!("no session: {e}\n{}", logs(dir)));
    session
        .navigate(&format!("http://127.0.0.1:{ui}/#/sweep/{}", c.name))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    // (card shown, its text, points of the step line, dots)
    let probe = "const card = document.getElementById('search');\n\
                 const line = card && card.querySelector('polyline');\n\
                 return [!!card && !card.hidden, card ? card.textContent : '',\n\
                         line ? line.getAttribute('points').trim().split(/\\s+/).length : 0,\n\
                         card ? card.querySelectorAll('circle[data-trial]').length : 0];";
    let mut seen = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(240), || {
            seen = session.execute(probe).unwrap_or_default();
            seen[0] == true
                && seen[1]
                    .as_str()
                    .is_some_and(|t| t.contains("3 of 3 trials suggested"))
                && seen[2].as_u64().is_some_and(|n| n >= 2)
                && seen[3].as_u64().is_some_and(|n| n >= 1)
        }),
        "no best-so-far chart for the finished search: {seen}\n{}",
        logs(dir)
    );
    assert!(
        seen[1].as_str().is_some_and(|t| t.contains("best ")),
        "{seen}"
    );
}
