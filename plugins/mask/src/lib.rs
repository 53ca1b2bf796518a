//! `mask`: replaces text values by a salted hash, e.g. to pseudonymise e-mail addresses.
//!
//! Each non-null value v becomes the lowercase hex of SipHash-2-4-128(key, UTF-8 bytes of v),
//! where the 128-bit key is the first 16 bytes of SHA-256(salt) (k0 = bytes 0..8 and
//! k1 = bytes 8..16, little-endian). The same value and salt always give the same 32 hex digits,
//! so masked columns can still be joined and counted. With `keep-domain = true`, the part from
//! the last `@` on is kept in clear (`3f2a…@example.com`). Nulls stay null.

use quiver_sdk::prelude::*;
use sha2::{Digest, Sha256};
use siphasher::sip128::{Hasher128, SipHasher24};
use std::hash::Hasher;

struct Mask {
    columns: Vec<String>,
    keys: (u64, u64),
    keep_domain: bool,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Mask {
    fn mask_into(&self, value: &[u8], out: &mut Vec<u8>) {
        let mut h = SipHasher24::new_with_keys(self.keys.0, self.keys.1);
        h.write(value);
        let mut hex = [0u8; 32];
        for (i, byte) in h.finish128().as_bytes().iter().enumerate() {
            hex[2 * i] = HEX[(byte >> 4) as usize];
            hex[2 * i + 1] = HEX[(byte & 15) as usize];
        }
        out.extend_from_slice(&hex);
        if self.keep_domain {
            if let Some(at) = value.iter().rposition(|&c| c == b'@') {
                out.extend_from_slice(&value[at..]);
            }
        }
    }
}

impl Plugin for Mask {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "mask",
            env!("CARGO_PKG_VERSION"),
            "replace text values by a salted hash",
        )
        .param(ParamSpec::text_list("columns", "utf8 columns to mask").required())
        .param(
            ParamSpec::text("salt", "secret salt; the hash key is SHA-256(salt)[..16]").required(),
        )
        .param(
            ParamSpec::boolean("keep-domain", "keep the part from the last '@' in clear")
                .default(ParamValue::Boolean(false)),
        )
    }

    fn init(params: Params) -> Result<Self, ParamError> {
        let salt = params.text("salt").unwrap_or_default();
        if salt.is_empty() {
            return Err(Params::invalid("salt", "must not be empty"));
        }
        let digest = Sha256::digest(salt.as_bytes());
        let word = |i: usize| u64::from_le_bytes(digest[i..i + 8].try_into().expect("8 bytes"));
        Ok(Mask {
            columns: params.text_list("columns"),
            keys: (word(0), word(8)),
            keep_domain: params.boolean("keep-domain").unwrap_or(false),
        })
    }

    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
        let mut plan = Plan::passthrough(input);
        for name in &self.columns {
            let field = expect_type(input, name, &[DataType::Utf8])?;
            plan = plan.compute(name, DataType::Utf8, field.nullable);
        }
        Ok(plan)
    }

    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        let rows = input.rows as usize;
        let mut out = Vec::with_capacity(input.columns.len());
        for column in &input.columns {
            let mut builder = StringColumnBuilder::with_capacity(rows, rows * 32);
            for i in 0..rows {
                if column.is_valid(i) {
                    builder.push_with(|buf| self.mask_into(column.bytes_at(i), buf));
                } else {
                    builder.push(None);
                }
            }
            out.push(builder.finish(&column.name, DataType::Utf8));
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

quiver_sdk::export_plugin!(Mask);
