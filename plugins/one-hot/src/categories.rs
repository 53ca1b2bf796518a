//! Category columns, shared by the categorical encoders (`one-hot`, `ordinal-encoder`,
//! `count-encoder` and `target-encoder`).
//!
//! This file is compiled into each of those crates with `#[path]` instead of being a library
//! crate of its own: every crate under `plugins/` is built as a plugin component, so a shared
//! library crate has no place there, and each encoder uses only part of it.
//!
//! A category is a non-null value of a utf8 column (its text) or of an integer column (its
//! value; its decimal text where a name is needed). Categories sort by value: text by Unicode
//! code point (byte order of UTF-8, as Python sorts strings), integers numerically. A null is
//! never a category here; each encoder documents what it does with nulls.

// A fast non-cryptographic hash: keys come from the data being processed, and the maps are
// local to one plugin instance, so hash flooding is not a concern here.
use rustc_hash::FxHashMap as HashMap;
use std::fmt;

use quiver_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Column types that can hold categories: text and every integer type.
pub const CATEGORICAL: [DataType; 9] = [
    DataType::Utf8,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
];

/// What a category column holds. Recorded in fitted parameters so that a fit on text is not
/// silently applied to integers (where no value could ever match, making every row unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A utf8 column.
    Text,
    /// An integer column of any width or signedness.
    Integer,
}

impl Kind {
    /// The kind of a column of type `data_type` (one of [`CATEGORICAL`]).
    pub fn of(data_type: &DataType) -> Kind {
        if *data_type == DataType::Utf8 {
            Kind::Text
        } else {
            Kind::Integer
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Text => "text (utf8)",
            Kind::Integer => "integers",
        }
    }
}

/// The `columns` parameter: at least one name, none twice.
pub fn columns_param(params: &Params) -> Result<Vec<String>, ParamError> {
    let columns = params.text_list("columns");
    if columns.is_empty() {
        return Err(Params::invalid("columns", "name at least one column"));
    }
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            return Err(Params::invalid(
                "columns",
                format!("column `{c}` is named twice"),
            ));
        }
    }
    Ok(columns)
}

/// A type's name as Arrow spells it (`Int64`, not the binding's `DataType::Int64`).
pub fn type_name(data_type: &DataType) -> String {
    format!("{data_type:?}")
        .trim_start_matches("DataType::")
        .to_string()
}

/// The field `name` of `input`, checked to be a category column, with its kind.
pub fn category_field<'a>(
    input: &'a [Field],
    name: &str,
) -> Result<(&'a Field, Kind), PluginError> {
    let field = find_field(input, name)?;
    if !CATEGORICAL.contains(&field.data_type) {
        return Err(PluginError::new(format!(
            "column `{name}` has type {}; categories must be utf8 or integers",
            type_name(&field.data_type)
        ))
        .in_column(name));
    }
    Ok((field, Kind::of(&field.data_type)))
}

/// The field `name` of `input`, checked to be a category column of the kind it was fitted on.
pub fn fitted_field<'a>(
    input: &'a [Field],
    name: &str,
    fitted: Kind,
) -> Result<&'a Field, PluginError> {
    let (field, kind) = category_field(input, name)?;
    if kind != fitted {
        return Err(PluginError::new(format!(
            "column `{name}` holds {} ({}) but was fitted on {}",
            kind.name(),
            type_name(&field.data_type),
            fitted.name()
        ))
        .in_column(name));
    }
    Ok(field)
}

/// Checks that fitted parameters were made for the configured columns, in the same order.
pub fn check_fitted_columns<'a>(
    fitted: impl Iterator<Item = &'a str>,
    configured: &[String],
) -> Result<(), PluginError> {
    let names: Vec<&str> = fitted.collect();
    if names != configured.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(PluginError::new(format!(
            "fitted for columns {names:?}, but configured for {configured:?}"
        )));
    }
    Ok(())
}

/// The category of one row, borrowed from the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef<'a> {
    /// A value of an integer column (every integer type fits in `i128`).
    Int(i128),
    /// A value of a utf8 column.
    Text(&'a str),
}

impl KeyRef<'_> {
    /// The value for error messages: text quoted (and escaped), integers as they are.
    pub fn quoted(&self) -> String {
        match self {
            KeyRef::Int(i) => i.to_string(),
            KeyRef::Text(t) => format!("{t:?}"),
        }
    }
}

/// The category of row `i`, or `None` if the row is null.
#[inline]
pub fn key_at(column: &Column, i: usize) -> Option<KeyRef<'_>> {
    if !column.is_valid(i) {
        return None;
    }
    Some(match &column.values {
        Values::I8(v) => KeyRef::Int(v[i].into()),
        Values::I16(v) => KeyRef::Int(v[i].into()),
        Values::I32(v) => KeyRef::Int(v[i].into()),
        Values::I64(v) => KeyRef::Int(v[i].into()),
        Values::U8(v) => KeyRef::Int(v[i].into()),
        Values::U16(v) => KeyRef::Int(v[i].into()),
        Values::U32(v) => KeyRef::Int(v[i].into()),
        Values::U64(v) => KeyRef::Int(v[i].into()),
        // The host validates the UTF-8 of every utf8 column it sends, so this cannot fail;
        // if it did, the empty text is as good as any other stand-in.
        Values::Bytes(_) => KeyRef::Text(std::str::from_utf8(column.bytes_at(i)).unwrap_or("")),
        // `prepare` and `fit_reads` accept only CATEGORICAL columns.
        Values::Bits(_) | Values::F32(_) | Values::F64(_) => KeyRef::Int(0),
    })
}

/// An owned category, as fitted parameters hold it.
///
/// In JSON a category is a plain string or number (`"red"`, `42`), so fitted files read
/// naturally. That form needs a self-describing format, which is why states (postcard bytes)
/// use [`KeyMap`]'s own representation and never contain a `Key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// A value of an integer column.
    Int(i128),
    /// A value of a utf8 column.
    Text(String),
}

impl Key {
    /// The kind of column this value can come from.
    pub fn kind(&self) -> Kind {
        match self {
            Key::Int(_) => Kind::Integer,
            Key::Text(_) => Kind::Text,
        }
    }
}

/// The text of a category as it appears in column names: the text itself, or decimal digits.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(t) => f.write_str(t),
        }
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Key::Text(t) => s.serialize_str(t),
            // Every integer column's values fit in i64 or u64, the widths JSON readers expect.
            Key::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(v), _) => s.serialize_i64(v),
                (_, Ok(v)) => s.serialize_u64(v),
                _ => s.serialize_i128(*i),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a category: a string or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key::Int(v.into()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key::Int(v.into()))
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Key, E> {
                Ok(Key::Int(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Checks that every fitted category of `column` is of the column's fitted kind.
pub fn check_keys<'a>(
    column: &str,
    kind: Kind,
    keys: impl IntoIterator<Item = &'a Key>,
) -> Result<(), PluginError> {
    match keys.into_iter().find(|k| k.kind() != kind) {
        Some(k) => Err(PluginError::new(format!(
            "fitted category {k:?} of column `{column}` is not one of {}",
            kind.name()
        ))
        .in_column(column)),
        None => Ok(()),
    }
}

/// A value per category of one column: exact statistics that merge by key, so a fit does not
/// depend on how the rows were partitioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyMap<V> {
    text: HashMap<String, V>,
    int: HashMap<i128, V>,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        KeyMap {
            text: HashMap::default(),
            int: HashMap::default(),
        }
    }
}

impl<V> KeyMap<V> {
    /// The value of category `key`, inserted as `V::default()` if absent.
    #[inline]
    pub fn entry(&mut self, key: KeyRef<'_>) -> &mut V
    where
        V: Default,
    {
        match key {
            KeyRef::Int(i) => self.int.entry(i).or_default(),
            // Look up before inserting so that a seen text is not copied again.
            KeyRef::Text(t) => {
                if !self.text.contains_key(t) {
                    self.text.insert(t.to_string(), V::default());
                }
                self.text.get_mut(t).expect("inserted above")
            }
        }
    }

    /// The value of category `key`, if present.
    #[inline]
    pub fn get(&self, key: KeyRef<'_>) -> Option<&V> {
        match key {
            KeyRef::Int(i) => self.int.get(&i),
            KeyRef::Text(t) => self.text.get(t),
        }
    }

    /// Sets the value of category `key`; returns the previous one.
    pub fn insert(&mut self, key: Key, value: V) -> Option<V> {
        match key {
            Key::Int(i) => self.int.insert(i, value),
            Key::Text(t) => self.text.insert(t, value),
        }
    }

    /// Adds `other`'s categories: values of categories in both are combined by `combine`.
    pub fn merge(&mut self, other: KeyMap<V>, mut combine: impl FnMut(&mut V, V)) {
        for (k, v) in other.text {
            match self.text.get_mut(&k) {
                Some(mine) => combine(mine, v),
                None => {
                    self.text.insert(k, v);
                }
            }
        }
        for (k, v) in other.int {
            match self.int.get_mut(&k) {
                Some(mine) => combine(mine, v),
                None => {
                    self.int.insert(k, v);
                }
            }
        }
    }

    /// The categories and their values, sorted by category.
    pub fn into_sorted(self) -> Vec<(Key, V)> {
        let mut out: Vec<(Key, V)> = self
            .int
            .into_iter()
            .map(|(k, v)| (Key::Int(k), v))
            .chain(self.text.into_iter().map(|(k, v)| (Key::Text(k), v)))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl<V> FromIterator<(Key, V)> for KeyMap<V> {
    fn from_iter<I: IntoIterator<Item = (Key, V)>>(iter: I) -> Self {
        let mut map = KeyMap::default();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

/// The statistics of one column: its kind, and a value per category.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnStats<V> {
    /// What the column holds (known even when no row has a value).
    pub kind: Kind,
    /// The value per category.
    pub map: KeyMap<V>,
}

impl<V> ColumnStats<V> {
    /// No categories yet, for a column like `column`.
    pub fn empty(column: &Column) -> Self {
        ColumnStats {
            kind: Kind::of(&column.data_type),
            map: KeyMap::default(),
        }
    }
}

/// Merges per-column states (one [`ColumnStats`] per configured column) element by element.
pub fn merge_columns<V>(
    columns: usize,
    states: Vec<Vec<ColumnStats<V>>>,
    mut combine: impl FnMut(&mut V, V),
) -> Result<Vec<ColumnStats<V>>, PluginError> {
    let mut states = states.into_iter();
    let mut acc = states
        .next()
        .ok_or_else(|| PluginError::new("no states to merge"))?;
    for state in std::iter::once(&acc).chain(states.as_slice()) {
        if state.len() != columns {
            return Err(PluginError::new("a state for another set of columns"));
        }
    }
    for state in states {
        for (a, s) in acc.iter_mut().zip(state) {
            if a.kind != s.kind {
                return Err(PluginError::new(
                    "states of the same column fitted on different types",
                ));
            }
            a.map.merge(s.map, &mut combine);
        }
    }
    Ok(acc)
}

/// Counts the categories of every column of a batch (the plugin's `fit_reads` columns).
pub fn count_batch(input: &Batch) -> Vec<ColumnStats<u64>> {
    let rows = input.rows as usize;
    input
        .columns
        .iter()
        .map(|column| {
            let mut stats = ColumnStats::empty(column);
            for key in (0..rows).filter_map(|i| key_at(column, i)) {
                *stats.map.entry(key) += 1;
            }
            stats
        })
        .collect()
}

/// The error for a category not seen when the plugin was fitted.
pub fn unknown_category(column: &str, key: KeyRef<'_>, row: usize) -> PluginError {
    PluginError::new(format!(
        "unknown category {} in column `{column}`: not seen when fitted (handle-unknown = \"error\")",
        key.quoted()
    ))
    .in_column(column)
    .at_row(row)
}
