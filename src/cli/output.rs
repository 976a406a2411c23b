//! What a command prints: tables for people, JSON for scripts.

use comfy_table::{presets, ContentArrangement, Table};
use serde_json::Value;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// A column: its heading and the JSON pointer of its cell in each row.
pub type Column<'a> = (&'a str, &'a str);

/// Prints `value` as indented JSON.
pub fn json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{value}"),
    }
}

/// One row per element of `rows` (an array), one column per `columns`.
pub fn rows(rows: &Value, columns: &[Column]) {
    let empty = Vec::new();
    let rows = rows.as_array().unwrap_or(&empty);
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    let mut table = table();
    table.set_header(columns.iter().map(|(heading, _)| *heading));
    for row in rows {
        table.add_row(
            columns
                .iter()
                .map(|(_, pointer)| cell(row.pointer(pointer))),
        );
    }
    print(&table);
}

/// One line per field of `value`: heading, then the cell.
pub fn fields(value: &Value, fields: &[Column]) {
    let mut table = table();
    for (heading, pointer) in fields {
        table.add_row([heading.to_string(), cell(value.pointer(pointer))]);
    }
    print(&table);
}

/// Columns two spaces apart, no padding at the ends of a line.
fn print(table: &Table) {
    for line in table.lines() {
        let line = line.strip_prefix(' ').unwrap_or(&line);
        println!("{}", line.trim_end());
    }
}

fn table() -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    table
}

/// A JSON value as one cell: strings bare, `-` for nothing, lists joined,
/// objects as compact JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(text)) if text.is_empty() => "-".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) if items.is_empty() => "-".to_owned(),
        Some(Value::Array(items)) if items.iter().all(|i| !i.is_object() && !i.is_array()) => items
            .iter()
            .map(|item| cell(Some(item)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(Value::Object(map)) if map.is_empty() => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_read_as_people_expect() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&json!(null))), "-");
        assert_eq!(cell(Some(&json!("x"))), "x");
        assert_eq!(cell(Some(&json!(3))), "3");
        assert_eq!(cell(Some(&json!(["a", "b"]))), "a, b");
        assert_eq!(cell(Some(&json!({"a": 1}))), r#"{"a":1}"#);
        assert_eq!(cell(Some(&json!({}))), "-");
    }
}
