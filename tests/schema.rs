//! Every command's `--json` output validates against its JSON Schema (generated from the
//! Rust types by schemars, printed by `coreheap schema COMMAND`); the generated schemas are
//! kept in tests/golden/schema-*.json so a change of the output's shape shows in review
//! (`COREHEAP_BLESS=1 cargo test schema` rewrites them).

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[String]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coreheap"))
        .args(args)
        .current_dir(manifest())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A validator for the part of JSON Schema 2020-12 that schemars writes: `$ref` into
/// `$defs`, `anyOf`/`oneOf`/`allOf`, `const`, `enum`, `type`, `properties`/`required`/
/// `additionalProperties`, `items`/`prefixItems`, `minimum`/`maximum`, and the address
/// pattern. Errors name the JSON path.
fn validate(root: &Value, node: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if errs.len() > 20 {
        return;
    }
    let Some(n) = node.as_object() else {
        if node == &Value::Bool(false) {
            errs.push(format!("{path}: no value allowed here"));
        }
        return;
    };
    if let Some(r) = n.get("$ref").and_then(|r| r.as_str()) {
        let name = r.trim_start_matches("#/$defs/");
        match root["$defs"].get(name) {
            Some(d) => validate(root, d, v, path, errs),
            None => errs.push(format!("{path}: unresolved {r}")),
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = n.get(key).and_then(|a| a.as_array()) {
            let mut best: Option<Vec<String>> = None;
            for a in alts {
                let mut e = Vec::new();
                validate(root, a, v, path, &mut e);
                if e.is_empty() {
                    best = Some(e);
                    break;
                }
                if best.as_ref().is_none_or(|b| e.len() < b.len()) {
                    best = Some(e);
                }
            }
            if let Some(b) = best.filter(|b| !b.is_empty()) {
                errs.push(format!(
                    "{path}: matches no {key} alternative, nearest: {}",
                    b.join("; ")
                ));
            }
        }
    }
    if let Some(all) = n.get("allOf").and_then(|a| a.as_array()) {
        for a in all {
            validate(root, a, v, path, errs);
        }
    }
    if let Some(c) = n.get("const") {
        if c != v {
            errs.push(format!("{path}: {v} is not {c}"));
        }
    }
    if let Some(e) = n.get("enum").and_then(|e| e.as_array()) {
        if !e.contains(v) {
            errs.push(format!("{path}: {v} not in {e:?}"));
        }
    }
    if let Some(t) = n.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
            _ => vec![],
        };
        let is = |t: &str| match t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            _ => true,
        };
        if !types.iter().any(|t| is(t)) {
            errs.push(format!("{path}: {} is not {types:?}", short(v)));
            return;
        }
    }
    if let (Some(min), Some(x)) = (n.get("minimum").and_then(|m| m.as_f64()), v.as_f64()) {
        if x < min {
            errs.push(format!("{path}: {x} < minimum {min}"));
        }
    }
    if n.get("pattern").and_then(|p| p.as_str()) == Some("^0x[0-9a-f]+$") {
        let ok = v.as_str().is_some_and(|s| {
            s.len() > 2
                && s.starts_with("0x")
                && s[2..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        if !ok {
            errs.push(format!("{path}: {v} is not an address"));
        }
    }
    if let Some(o) = v.as_object() {
        let props = n.get("properties").and_then(|p| p.as_object());
        if let Some(req) = n.get("required").and_then(|r| r.as_array()) {
            for r in req.iter().filter_map(|r| r.as_str()) {
                if !o.contains_key(r) {
                    errs.push(format!("{path}: required field {r:?} missing"));
                }
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(root, s, x, &format!("{path}.{k}"), errs),
                None => match n.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errs.push(format!("{path}: unexpected field {k:?}"))
                    }
                    Some(s @ Value::Object(_)) => {
                        validate(root, s, x, &format!("{path}.{k}"), errs)
                    }
                    _ => {}
                },
            }
        }
    }
    if let Some(a) = v.as_array() {
        let prefix = n.get("prefixItems").and_then(|p| p.as_array());
        for (i, x) in a.iter().enumerate() {
            let s = prefix.and_then(|p| p.get(i)).or_else(|| n.get("items"));
            if let Some(s) = s {
                validate(root, s, x, &format!("{path}[{i}]"), errs);
            }
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..60])
    } else {
        s
    }
}

fn schema_of(command: &str) -> Value {
    let (code, stdout, stderr) = run(&["schema".into(), command.into()]);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Validate the output of `args` (a `--json` run) against `command`'s schema.
fn check(command: &str, args: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![command.into(), "--json".into(), "--quiet".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    let (code, stdout, stderr) = run(&a);
    if code != 0 {
        return vec![format!("{command} {args:?}: exit {code}: {stderr}")];
    }
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let s = schema_of(command);
    let mut errs = Vec::new();
    validate(&s, &s, &v, "$", &mut errs);
    errs.into_iter()
        .map(|e| format!("{command} {args:?}: {e}"))
        .collect()
}

const SYSROOT: &str = "corpora/reference/bookworm/sysroot";
const PY: &str = "corpora/reference/bookworm/py_heap-gcore-0x33/core.zst";
const C: &str = "corpora/reference/bookworm/c_heap-kernel-0x33/core.zst";
const A: &str = "corpora/reference/bookworm/py_leak-gcore-0x33/core_A.zst";
const B: &str = "corpora/reference/bookworm/py_leak-gcore-0x33/core_B.zst";

#[test]
fn every_command_validates_against_its_schema() {
    let s = ["--sysroot", SYSROOT];
    let runs: Vec<(&str, Vec<&str>)> = vec![
        ("info", vec![s[0], s[1], PY]),
        ("info", vec![s[0], s[1], C]),
        ("stacks", vec![s[0], s[1], "--native", "--locals", PY]),
        ("stacks", vec![s[0], s[1], C]),
        ("summary", vec![s[0], s[1], PY]),
        ("summary", vec![s[0], s[1], "--by", "size", C]),
        (
            "objects",
            vec![s[0], s[1], "--type", "pyapp.models.Point", PY],
        ),
        ("diff", vec![s[0], s[1], A, B]),
        ("frag", vec![s[0], s[1], PY]),
        ("frag", vec![s[0], s[1], C]),
        ("summary", vec![s[0], s[1], "--by", "owner", PY]),
        ("summary", vec![s[0], s[1], "--retained", PY]),
        ("diff", vec![s[0], s[1], "--by", "owner", A, B]),
        (
            "why",
            vec![s[0], s[1], "--type", "pyapp.models.LeakedResponse", B],
        ),
        ("leaks", vec![s[0], s[1], PY]),
    ];
    let mut bad = Vec::new();
    for (cmd, args) in &runs {
        bad.extend(check(cmd, args));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The validator itself: it rejects what the schema does not allow.
#[test]
fn the_validator_catches_wrong_documents() {
    let s = schema_of("objects");
    let mut ok = Vec::new();
    let good = serde_json::json!({"schema": "coreheap/objects/1", "name": "x", "count": 1, "bytes": 2,
        "objects": [{"address": "0x10", "type": "x", "bytes": 2, "preview": ""}], "diagnostics": []});
    validate(&s, &s, &good, "$", &mut ok);
    assert!(ok.is_empty(), "{ok:?}");
    for bad in [
        serde_json::json!({"schema": "coreheap/objects/2", "name": "x", "count": 1, "bytes": 2, "objects": [], "diagnostics": []}),
        serde_json::json!({"schema": "coreheap/objects/1", "name": "x", "count": "1", "bytes": 2, "objects": [], "diagnostics": []}),
        serde_json::json!({"schema": "coreheap/objects/1", "name": "x", "bytes": 2, "objects": [], "diagnostics": []}),
        serde_json::json!({"schema": "coreheap/objects/1", "name": "x", "count": 1, "bytes": 2,
            "objects": [{"address": "16", "type": "x", "bytes": 2, "preview": ""}], "diagnostics": []}),
    ] {
        let mut e = Vec::new();
        validate(&s, &s, &bad, "$", &mut e);
        assert!(!e.is_empty(), "accepted {bad}");
    }
}

/// The generated schemas, as committed: a shape change shows in review.
#[test]
fn schemas_are_committed() {
    let bless = std::env::var_os("COREHEAP_BLESS").is_some();
    let dir = manifest().join("tests/golden");
    let mut bad = Vec::new();
    for cmd in [
        "info", "stacks", "summary", "objects", "diff", "frag", "why", "leaks",
    ] {
        let text = serde_json::to_string_pretty(&schema_of(cmd)).unwrap() + "\n";
        let path = dir.join(format!("schema-{cmd}.json"));
        if bless {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).unwrap_or_default() != text {
            bad.push(format!(
                "{} differs from `coreheap schema {cmd}` (COREHEAP_BLESS=1 to accept)",
                path.display()
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The tracemalloc shapes of `summary` and `diff` (needs a core of a tracing process).
#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn trace_views_validate_against_their_schema() {
    let c = crate::traces::cases()
        .into_iter()
        .find(|c| c.scenario == "py_trace")
        .expect("a py_trace case");
    let core = c.core.display().to_string();
    let mut args: Vec<String> = Vec::new();
    if let Some(s) = &c.sysroot {
        args.push("--sysroot".into());
        args.push(s.display().to_string());
    }
    let with = |extra: &[&str]| -> Vec<String> {
        let mut a = args.clone();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut bad = Vec::new();
    for (cmd, a) in [
        ("summary", with(&["--by", "lineno", &core])),
        ("summary", with(&["--by", "traceback", &core])),
        (
            "summary",
            with(&["--by", "filename", "--cumulative", &core]),
        ),
        ("diff", with(&["--by", "lineno", &core, &core])),
    ] {
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        bad.extend(check(cmd, &a));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
