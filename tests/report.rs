//! `coreheap report`: the page of the committed leak pair, as a file (self-contained, small,
//! the leaked class at the top of the growth view) and in a real browser (headless
//! Chromium: no console message, the script ran, a screenshot).
//!
//! The browser test is `#[ignore]`d (it needs Debian's chromium, which tests/run-all
//! installs); it fails, never skips, when no browser can be run.

use std::path::{Path, PathBuf};
use std::process::Command;

const LEAKED: &str = "pyapp.models.LeakedResponse";

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Relative to the manifest directory (the page shows the paths as given).
const LEAK_DIR: &str = "corpora/reference/bookworm/py_leak-gcore-0x33";

fn leak_dir() -> PathBuf {
    manifest().join(LEAK_DIR)
}

/// `coreheap report [OLD] NEW -o FILE` of the reference leak pair; the page's text.
fn report(dir: &Path, two: bool) -> (PathBuf, String) {
    let out = dir.join(if two { "pair.html" } else { "one.html" });
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coreheap"));
    cmd.current_dir(manifest())
        .arg("report")
        .arg("--quiet")
        .arg("--sysroot")
        .arg("corpora/reference/bookworm/sysroot");
    if two {
        cmd.arg(Path::new(LEAK_DIR).join("core_A.zst"));
    }
    cmd.arg(Path::new(LEAK_DIR).join("core_B.zst"))
        .arg("-o")
        .arg(&out);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&out).unwrap();
    (out, html)
}

/// The rows of the table with this id, each as its cells' text (tags stripped).
fn table_rows(html: &str, id: &str) -> Vec<Vec<String>> {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table #{id}"));
    let t = &html[start..];
    let t = &t[..t.find("</table>").unwrap()];
    let body = &t[t.find("<tbody").unwrap()..];
    body.split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let cell = &cell[cell.find('>').unwrap() + 1..];
                    let cell = &cell[..cell.find("</td>").unwrap_or(cell.len())];
                    let mut text = String::new();
                    let mut in_tag = false;
                    for c in cell.chars() {
                        match c {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            c if !in_tag => text.push(c),
                            _ => {}
                        }
                    }
                    text.trim().to_string()
                })
                .collect()
        })
        .collect()
}

/// The page of one core and of the pair: one file with nothing to fetch, small, the
/// leaked class first among the growing classes with its growth from the truth files, in
/// the type table, and with samples.
#[test]
fn report_of_the_reference_leak_pair() {
    let d = tempfile::tempdir().unwrap();
    let (_, html) = report(d.path(), true);
    for bad in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "@import",
        "url(http",
    ] {
        assert!(!html.contains(bad), "the page fetches something: {bad}");
    }
    assert!(html.len() < 10 << 20, "{} bytes", html.len());
    let grew = table_rows(&html, "grew-classes");
    assert_eq!(grew[0][0], LEAKED, "{grew:?}");
    let truth = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(leak_dir().join(f)).unwrap()).unwrap()
    };
    let served = |v: &serde_json::Value| v["requests_served"].as_i64().unwrap();
    let leaked = served(&truth("truth_B.json")) - served(&truth("truth_A.json"));
    let count = |s: &str| s.replace(['+', '\u{2009}'], "").parse::<i64>().unwrap();
    assert_eq!(count(&grew[0][3]), leaked, "{:?}", grew[0]);
    let types = table_rows(&html, "type-table");
    let row = types
        .iter()
        .find(|r| r[0] == LEAKED)
        .unwrap_or_else(|| panic!("{LEAKED} not in the type table"));
    assert_eq!(
        count(&row[1]),
        truth("truth_B.json")["leaked"].as_i64().unwrap(),
        "{row:?}"
    );
    assert!(html.contains("request_no="), "no sample previews");
    assert!(html.contains(r#"<section id="frag">"#) && html.contains("\"occupancy\":[{"));

    let (_, one) = report(d.path(), false);
    assert!(!one.contains(r#"id="growth""#));
    assert!(table_rows(&one, "type-table")
        .iter()
        .any(|r| r[0] == LEAKED));
}

/// Debian's chromium, or the browser named by COREHEAP_CHROMIUM.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("COREHEAP_CHROMIUM") {
        return PathBuf::from(p);
    }
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("no chromium: install Debian's chromium (tests/run-all does) or set COREHEAP_CHROMIUM");
}

/// Headless Chromium with the flags a closed network needs, a fresh profile: (stdout, stderr).
fn headless(args: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running chromium: {e}"));
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The pair's page in headless Chromium: the script ran to its end (data-ready) with no
/// error, the browser logged no console message (the page logs none; errors, CSP
/// violations and failed fetches would), the DOM has the leaked class at the top of the
/// growth view and in the type table, and the occupancy maps were drawn. The screenshot
/// goes to the target directory (docs/report.png with COREHEAP_BLESS=1).
#[test]
#[ignore = "needs chromium (tests/run-all installs it)"]
fn report_in_headless_chromium() {
    let d = tempfile::tempdir().unwrap();
    let (page, _) = report(d.path(), true);
    let url = format!("file://{}", page.display());
    let (dom, log) = headless(&["--dump-dom".into(), url.clone()]);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "console messages:\n{}",
        console.join("\n")
    );
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the script did not finish:\n{log}"
    );
    assert!(!dom.contains("data-errors="), "script errors: {dom}");
    let grew = table_rows(&dom, "grew-classes");
    assert_eq!(grew[0][0], LEAKED, "{grew:?}");
    assert!(table_rows(&dom, "type-table")
        .iter()
        .any(|r| r[0] == LEAKED));
    assert!(
        dom.matches("<canvas").count() >= 2,
        "occupancy maps not drawn"
    );
    // Who holds the growth: the registry, first in the growth-by-owner table (drawn by the
    // script from the section's data), and the owner tree is there.
    let owners = table_rows(&dom, "owner-growth");
    assert_eq!(owners[0][0], "__main__.REGISTRY", "{owners:?}");
    assert!(dom.contains(r#"id="owners""#));

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let _ = std::fs::remove_file(&shot);
    headless(&[
        "--window-size=1280,1600".into(),
        format!("--screenshot={}", shot.display()),
        url,
    ]);
    let png =
        std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot {}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if std::env::var_os("COREHEAP_BLESS").is_some() {
        std::fs::copy(&shot, manifest().join("docs/report.png")).unwrap();
    }
}
