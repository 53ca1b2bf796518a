//! `email-normalize` with the Rust SDK: trims and ASCII-lowercases an e-mail column in one
//! pass over its bytes and flags free-mail domains (see `../README.md` for the exact rules).

use quiver_sdk::prelude::*;

/// ASCII white space, as the other three implementations define it.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b)
}

struct EmailNormalize {
    column: String,
    flag: String,
    free: Vec<Vec<u8>>,
}

impl Plugin for EmailNormalize {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "email-normalize",
            env!("CARGO_PKG_VERSION"),
            "trims and lowercases e-mail addresses and flags free-mail domains",
        )
        .param(ParamSpec::text("column", "the utf8 column of addresses").required())
        .param(
            ParamSpec::text_list("free-domains", "free-mail domains").default(
                ParamValue::TextList(
                    ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com"]
                        .map(String::from)
                        .to_vec(),
                ),
            ),
        )
        .param(
            ParamSpec::text("flag", "name of the boolean column added")
                .default(ParamValue::Text("is_free_mail".into())),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        Ok(EmailNormalize {
            column: params.text("column").unwrap_or_default().into(),
            flag: params.text("flag").unwrap_or("is_free_mail").into(),
            free: params
                .text_list("free-domains")
                .iter()
                .map(|d| d.to_ascii_lowercase().into_bytes())
                .collect(),
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let field = expect_type(input, &self.column, &[DataType::Utf8])?;
        if input.iter().any(|f| f.name == self.flag) {
            return Err(PluginError::new(format!(
                "the flag column `{}` already exists in the input",
                self.flag
            )));
        }
        Ok(Plan::passthrough(input)
            .compute(&self.column, DataType::Utf8, field.nullable)
            .computed_after(&self.column, &self.flag, DataType::Boolean, true))
    }

    fn transform(&mut self, mut input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows as usize;
        let emails = input.columns.remove(0);
        let text_bytes = match &emails.values {
            Values::Bytes(b) => b.len(),
            _ => 0,
        };
        let mut out = StringColumnBuilder::with_capacity(rows, text_bytes);
        let mut flags = BitmapBuilder::with_capacity(rows);
        for i in 0..rows {
            if !emails.is_valid(i) {
                out.push(None);
                flags.push(false);
                continue;
            }
            let raw = emails.bytes_at(i);
            let start = raw.iter().position(|&b| !is_space(b)).unwrap_or(raw.len());
            let end = raw
                .iter()
                .rposition(|&b| !is_space(b))
                .map_or(start, |e| e + 1);
            let mut free = false;
            out.push_with(|buf| {
                let from = buf.len();
                buf.extend(raw[start..end].iter().map(u8::to_ascii_lowercase));
                let address = &buf[from..];
                if let Some(at) = address.iter().rposition(|&b| b == b'@') {
                    free = self.free.iter().any(|d| d[..] == address[at + 1..]);
                }
            });
            flags.push(free);
        }
        let normalized = out.finish(&self.column, DataType::Utf8);
        let flag = Column {
            name: self.flag.clone(),
            data_type: DataType::Boolean,
            validity: normalized.validity.clone(),
            offsets: None,
            values: Values::Bits(flags.finish()),
        };
        Ok(vec![OutputBatch::all_rows(
            input.rows,
            vec![normalized, flag],
        )])
    }
}

quiver_sdk::export_plugin!(EmailNormalize);
