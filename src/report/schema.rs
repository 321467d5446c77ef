//! JSON Schemas of every command's `--json` document, generated from the Rust types that
//! are serialised (schemars), never written by hand: `coreheap schema COMMAND` prints one,
//! and the tests validate every command's output against it.

use crate::analysis;
use schemars::{generate::SchemaSettings, JsonSchema};
use serde_json::{json, Value};

/// The commands that write JSON.
pub const COMMANDS: &[&str] = &[
    "info", "stacks", "summary", "objects", "diff", "frag", "why", "leaks",
];

fn of<T: JsonSchema>() -> Value {
    let g = SchemaSettings::draft2020_12().into_generator();
    g.into_root_schema_for::<T>().to_value()
}

/// `body` with the `"schema": "coreheap/<command>/N"` field every document carries.
fn with_schema_field(command: &str, mut body: Value) -> Value {
    let name = format!("coreheap/{command}/{}", super::SCHEMA_VERSION);
    if let Some(o) = body.as_object_mut() {
        if let Some(p) = o.get_mut("properties").and_then(|p| p.as_object_mut()) {
            p.insert("schema".into(), json!({"const": name}));
        }
        if let Some(r) = o.get_mut("required").and_then(|r| r.as_array_mut()) {
            r.insert(0, json!("schema"));
        }
    }
    body
}

/// Several document shapes under one command (`summary --by type|size`, `--by owner`,
/// `--by lineno`): one schema with them as alternatives, their definitions merged.
fn either(command: &str, shapes: Vec<Value>) -> Value {
    let mut defs = serde_json::Map::new();
    let mut alt = Vec::new();
    for mut v in shapes {
        if let Some(d) = v.as_object_mut().and_then(|o| o.remove("$defs")) {
            if let Some(d) = d.as_object() {
                defs.extend(d.clone());
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("$schema");
        }
        alt.push(with_schema_field(command, v));
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("coreheap {command} --json"),
        "anyOf": alt,
        "$defs": defs,
    })
}

/// The schema of `command`'s JSON document, or None for a command without JSON.
pub fn for_command(command: &str) -> Option<Value> {
    let one = |v: Value| {
        let mut v = with_schema_field(command, v);
        if let Some(o) = v.as_object_mut() {
            o.insert("title".into(), json!(format!("coreheap {command} --json")));
        }
        v
    };
    Some(match command {
        "info" => one(of::<analysis::info::Info>()),
        "stacks" => one(of::<analysis::threads::Stacks>()),
        "summary" => either(
            command,
            vec![
                of::<analysis::summary::Summary>(),
                of::<analysis::owners::Owners>(),
                of::<analysis::traces::TraceSummary>(),
            ],
        ),
        "objects" => one(of::<analysis::objects::ObjectList>()),
        "diff" => either(
            command,
            vec![
                of::<analysis::diff::Diff>(),
                of::<analysis::owner_diff::OwnerDiff>(),
                of::<analysis::traces::TraceDiff>(),
            ],
        ),
        "frag" => one(of::<analysis::frag::Frag<'static>>()),
        "why" => one(of::<analysis::why::Why>()),
        "leaks" => one(of::<analysis::leaks::Leaks>()),
        _ => return None,
    })
}
