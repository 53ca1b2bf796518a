//! `text-normalize`: Unicode normalization, lowercasing, whitespace clean-up and regex
//! extraction of utf8 columns.
//!
//! Each non-null value goes through these steps, in this order (each one optional):
//! 1. `unicode`: normalization form NFC, NFKC (the default), NFD or NFKD (the tables of the
//!    `unicode-normalization` crate, pinned by Cargo.lock; see its `UNICODE_VERSION`), or
//!    `none`. NFKC turns compatibility characters into their plain equivalents: "ﬁ" → "fi",
//!    "Ⅻ" → "XII", full-width "Ａ" → "A", the ideographic space U+3000 → " ".
//! 2. `lowercase`: Unicode full lowercase mapping (Rust's `str::to_lowercase`, like Python's
//!    `str.lower`): "XII" → "xii", "ΣΑΣ" → "σας" (final sigma).
//! 3. `collapse-whitespace`: every run of Unicode white space (`char::is_whitespace`: spaces,
//!    tabs, newlines, U+00A0, U+3000, …) becomes one ASCII space.
//! 4. `trim`: Unicode white space is removed at both ends.
//! 5. `extract`: a regular expression (Rust `regex` syntax, Unicode-aware) searched in the
//!    result of 1–4: the value becomes the text of the first capture group of the leftmost
//!    match, or the whole match if the expression has no group. No match, or a first group
//!    that took no part in the match (as in `(a)|b` on "b"), gives null.
//!
//! Nulls stay null. The column stays utf8 (nullable if it was, or if `extract` is set).

use quiver_sdk::prelude::*;
use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// A Unicode normalization form, or none.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Form {
    None,
    Nfc,
    Nfkc,
    Nfd,
    Nfkd,
}

/// Compiled programs larger than this are refused: a pattern such as `\w{1000}{1000}` would
/// otherwise take the plugin's whole memory. 16 MiB fits any sensible extraction pattern.
const REGEX_SIZE_LIMIT: usize = 16 << 20;

/// The plugin: its parameters, checked, and the compiled expression.
struct TextNormalize {
    columns: Vec<String>,
    form: Form,
    lowercase: bool,
    collapse_whitespace: bool,
    trim: bool,
    extract: Option<Regex>,
}

impl TextNormalize {
    /// Steps 1–4 of the crate documentation.
    fn normalize(&self, value: &str) -> String {
        let mut s: String = match self.form {
            Form::None => value.to_string(),
            Form::Nfc => value.nfc().collect(),
            Form::Nfkc => value.nfkc().collect(),
            Form::Nfd => value.nfd().collect(),
            Form::Nfkd => value.nfkd().collect(),
        };
        if self.lowercase {
            s = s.to_lowercase();
        }
        if self.collapse_whitespace {
            let mut collapsed = String::with_capacity(s.len());
            let mut in_space = false;
            for c in s.chars() {
                if c.is_whitespace() {
                    if !in_space {
                        collapsed.push(' ');
                    }
                    in_space = true;
                } else {
                    collapsed.push(c);
                    in_space = false;
                }
            }
            s = collapsed;
        }
        if self.trim {
            let trimmed = s.trim();
            if trimmed.len() != s.len() {
                s = trimmed.to_string();
            }
        }
        s
    }

    /// Step 5: the extracted text, or `None` for null.
    fn extract<'a>(&self, text: &'a str) -> Option<&'a str> {
        let Some(re) = &self.extract else {
            return Some(text);
        };
        let caps = re.captures(text)?;
        // Group 0 is the whole match; the first explicit group, if the pattern has one, wins.
        let group = if re.captures_len() > 1 { 1 } else { 0 };
        caps.get(group).map(|m| m.as_str())
    }
}

impl Plugin for TextNormalize {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "text-normalize",
            env!("CARGO_PKG_VERSION"),
            "Unicode-normalize, lowercase, collapse and trim white space, then optionally \
             extract a regex match, on utf8 columns",
        )
        .param(ParamSpec::text_list("columns", "utf8 columns to normalize").required())
        .param(
            ParamSpec::text(
                "unicode",
                "normalization form: nfc, nfkc, nfd, nfkd or none",
            )
            .default(ParamValue::Text("nfkc".into())),
        )
        .param(
            ParamSpec::boolean("lowercase", "Unicode lowercase (after normalization)")
                .default(ParamValue::Boolean(true)),
        )
        .param(
            ParamSpec::boolean(
                "collapse-whitespace",
                "runs of white space become one space",
            )
            .default(ParamValue::Boolean(false)),
        )
        .param(
            ParamSpec::boolean("trim", "remove white space at both ends")
                .default(ParamValue::Boolean(true)),
        )
        .param(ParamSpec::text(
            "extract",
            "regex applied last: first capture group (or whole match); no match gives null",
        ))
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let columns = params.text_list("columns");
        if columns.is_empty() {
            return Err(Params::invalid("columns", "name at least one column"));
        }
        let form = match params.text("unicode").unwrap_or("nfkc") {
            "none" => Form::None,
            "nfc" => Form::Nfc,
            "nfkc" => Form::Nfkc,
            "nfd" => Form::Nfd,
            "nfkd" => Form::Nfkd,
            other => {
                return Err(Params::invalid(
                    "unicode",
                    format!(
                    "unknown normalization form {other:?}; expected nfc, nfkc, nfd, nfkd or none"
                ),
                ))
            }
        };
        let extract = match params.text("extract") {
            None => None,
            Some(pattern) => Some(
                regex::RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        Params::invalid("extract", format!("not a valid regular expression: {e}"))
                    })?,
            ),
        };
        Ok(TextNormalize {
            columns,
            form,
            lowercase: params.boolean("lowercase").unwrap_or(true),
            collapse_whitespace: params.boolean("collapse-whitespace").unwrap_or(false),
            trim: params.boolean("trim").unwrap_or(true),
            extract,
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for name in &self.columns {
            let field = find_field(input, name)?;
            if field.data_type != DataType::Utf8 {
                return Err(PluginError::new(format!(
                    "column `{name}` has type {}; text-normalize needs a utf8 column",
                    field.data_type
                ))
                .in_column(name));
            }
            // No match gives null, so an extracting column may gain nulls.
            let nullable = field.nullable || self.extract.is_some();
            plan = plan.compute(name, DataType::Utf8, nullable);
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows as usize;
        let mut out = Vec::with_capacity(input.columns.len());
        for column in &input.columns {
            let bytes = match &column.values {
                Values::Bytes(b) => b.len(),
                _ => 0,
            };
            let mut builder = StringColumnBuilder::with_capacity(rows, bytes);
            for i in 0..rows {
                let Some(value) = column.str_at(i) else {
                    builder.push(None);
                    continue;
                };
                let normalized = self.normalize(value);
                builder.push(self.extract(&normalized).map(str::as_bytes));
            }
            out.push(builder.finish(&column.name, DataType::Utf8));
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

quiver_sdk::export_plugin!(TextNormalize);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(form: Form, extract: Option<&str>) -> TextNormalize {
        TextNormalize {
            columns: vec!["t".into()],
            form,
            lowercase: true,
            collapse_whitespace: true,
            trim: true,
            extract: extract.map(|p| Regex::new(p).unwrap()),
        }
    }

    #[test]
    fn steps_in_order() {
        let p = plugin(Form::Nfkc, None);
        assert_eq!(p.normalize("  ﬁle \u{3000}\tⅫ "), "file xii");
        let p = plugin(Form::None, None);
        assert_eq!(p.normalize("ﬁ Ⅻ"), "ﬁ ⅻ");
    }

    #[test]
    fn extraction() {
        let p = plugin(Form::Nfkc, Some(r"id=(\d+)"));
        assert_eq!(p.extract("x id=42 y"), Some("42"));
        assert_eq!(p.extract("nothing"), None);
        let p = plugin(Form::Nfkc, Some(r"\d+"));
        assert_eq!(p.extract("a12b"), Some("12"));
        let p = plugin(Form::Nfkc, Some(r"(a)|b"));
        assert_eq!(p.extract("b"), None);
    }
}
