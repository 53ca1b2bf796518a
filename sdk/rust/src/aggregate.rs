//! Fit → transform: plugins whose transform needs statistics over all the data.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bindings::quiver::plugin::types::{
    Batch, Column, DataType, Field, OutputBatch, PluginError, Values,
};
use crate::plan::find_field;
use crate::{Plugin, Slot};

/// A plugin fitted on the data before it transforms it (`export_feature!`).
///
/// The host calls [`Aggregate::partial`] on batches of every partition, [`Aggregate::merge`]s
/// the states, [`Aggregate::finish`]es the result into fitted parameters and gives them to
/// every instance with [`Aggregate::set_fitted`]. States cross as compact versioned bytes,
/// fitted parameters as JSON (saved by `quiver fit`), both serialised by the SDK.
///
/// For results that do not depend on how the data was partitioned, `merge` must be
/// associative and commutative (sums, counts, min/max, vocabularies, mergeable sketches).
pub trait Aggregate: Plugin {
    /// Statistics of some rows.
    type State: Serialize + DeserializeOwned;
    /// What `finish` computes and `transform` uses.
    type Fitted: Serialize + DeserializeOwned;

    /// Input columns `partial` reads (may differ from what `transform` reads, e.g. a label).
    fn fit_reads(&self, input: &[Field]) -> Result<Vec<String>, PluginError>;
    /// Statistics of one batch holding the `fit_reads` columns, in that order.
    fn partial(&self, input: &Batch) -> Result<Self::State, PluginError>;
    /// Combines states.
    fn merge(&self, states: Vec<Self::State>) -> Result<Self::State, PluginError>;
    /// Fitted parameters from the merged state.
    fn finish(&self, state: Self::State) -> Result<Self::Fitted, PluginError>;
    /// Uses fitted parameters for the following `prepare` and `transform` calls.
    fn set_fitted(&mut self, fitted: Self::Fitted) -> Result<(), PluginError>;
}

/// `Aggregate::merge` for plugins whose state is one value per configured column: folds every
/// state into `empty()` column by column with `combine`; an error names the column.
pub fn merge_columnwise<S>(
    states: Vec<Vec<S>>,
    columns: &[String],
    empty: impl Fn() -> S,
    mut combine: impl FnMut(&mut S, S) -> Result<(), String>,
) -> Result<Vec<S>, PluginError> {
    let mut acc: Vec<S> = columns.iter().map(|_| empty()).collect();
    for state in states {
        if state.len() != acc.len() {
            return Err(PluginError::new(format!(
                "a state for {} columns, but the plugin is configured for {}",
                state.len(),
                acc.len()
            )));
        }
        for ((a, s), c) in acc.iter_mut().zip(state).zip(columns) {
            combine(a, s).map_err(|e| PluginError::new(e).in_column(c))?;
        }
    }
    Ok(acc)
}

/// Fitted parameters with one entry per configured column, in `columns` order; in JSON
/// `{"columns": [{"column": "amount", …the fields of F}]}`.
///
/// The shape shared by the per-column feature plugins: [`PerColumn::finish`] builds it from one
/// merged state per column, [`PerColumn::check`] tells whether a fit was made for the
/// configured columns, and [`PerColumn::map_f64`] applies it to a batch of numeric columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerColumn<F> {
    /// One fit per configured column, in order.
    pub columns: Vec<ColumnFit<F>>,
}

/// The fit of one column: its name, then the fields of `F` (flattened into the same JSON
/// object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnFit<F> {
    /// The configured column.
    pub column: String,
    /// What was fitted on it.
    #[serde(flatten)]
    pub fit: F,
}

impl<F> PerColumn<F> {
    /// The fits of the configured `columns` from one state each (`Aggregate::finish`).
    pub fn finish<S>(
        columns: &[String],
        states: Vec<S>,
        mut fit: impl FnMut(&str, S) -> Result<F, PluginError>,
    ) -> Result<Self, PluginError> {
        if states.len() != columns.len() {
            return Err(PluginError::new("a state for another set of columns"));
        }
        let columns = columns
            .iter()
            .zip(states)
            .map(|(c, s)| {
                Ok(ColumnFit {
                    column: c.clone(),
                    fit: fit(c, s)?,
                })
            })
            .collect::<Result<_, PluginError>>()?;
        Ok(PerColumn { columns })
    }

    /// Checks that the fit was made for the `configured` columns, in the same order
    /// (`Aggregate::set_fitted`).
    pub fn check(&self, configured: &[String]) -> Result<(), PluginError> {
        check_fitted_columns(self.columns.iter().map(|c| c.column.as_str()), configured)
    }

    /// Transforms a batch holding the fitted columns, in order: each becomes float64, its
    /// values mapped by the function `scale` makes from the column's fit.
    pub fn map_f64<G: Fn(f64) -> f64>(
        &self,
        input: Batch,
        scale: impl Fn(&F) -> G,
    ) -> Result<Vec<OutputBatch>, PluginError> {
        let mut out = Vec::with_capacity(input.columns.len());
        for (mut column, fit) in input.columns.into_iter().zip(&self.columns) {
            column.map_f64(scale(&fit.fit))?;
            out.push(column);
        }
        Ok(vec![OutputBatch::all_rows(input.rows, out)])
    }
}

/// Checks that fitted parameters were made for the `configured` columns, in the same order.
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

/// Header of every state: a magic tag and the encoding version, so a state from another
/// encoding is refused instead of misread.
const STATE_HEADER: &[u8; 4] = b"QST1";

pub(crate) fn encode_state<S: Serialize>(state: &S) -> Result<Vec<u8>, PluginError> {
    let mut out = STATE_HEADER.to_vec();
    let body = postcard::to_allocvec(state)
        .map_err(|e| PluginError::new(format!("cannot encode the state: {e}")))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub(crate) fn decode_state<S: DeserializeOwned>(bytes: &[u8]) -> Result<S, PluginError> {
    let body = bytes.strip_prefix(STATE_HEADER.as_slice()).ok_or_else(|| {
        PluginError::new("the state was not made by this SDK version (bad header)")
    })?;
    postcard::from_bytes(body).map_err(|e| {
        PluginError::new(format!(
            "the state is corrupt or from another plugin version: {e}"
        ))
    })
}

/// The `aggregate` calls of an exported plugin: real ones for an [`Aggregate`], or "nothing to
/// fit" ([`Unfitted`]) for a plain transform.
#[doc(hidden)]
pub trait FitCalls<T: Plugin> {
    fn fit_reads(slot: &Slot<T>, input: Vec<Field>) -> Result<Vec<String>, PluginError>;
    fn partial(slot: &Slot<T>, input: Batch) -> Result<Vec<u8>, PluginError>;
    fn merge(slot: &Slot<T>, states: Vec<Vec<u8>>) -> Result<Vec<u8>, PluginError>;
    fn finish(slot: &Slot<T>, state: Vec<u8>) -> Result<String, PluginError>;
    fn set_fitted(slot: &Slot<T>, fitted: String) -> Result<(), PluginError>;
}

/// Marks a plugin that needs no fitting.
#[doc(hidden)]
pub struct Unfitted<T>(std::marker::PhantomData<T>);

fn not_an_aggregate() -> PluginError {
    PluginError::new("this plugin needs no fitting (its fit-reads is empty)")
}

impl<T: Plugin> FitCalls<T> for Unfitted<T> {
    fn fit_reads(_: &Slot<T>, _: Vec<Field>) -> Result<Vec<String>, PluginError> {
        Ok(Vec::new())
    }
    fn partial(_: &Slot<T>, _: Batch) -> Result<Vec<u8>, PluginError> {
        Err(not_an_aggregate())
    }
    fn merge(_: &Slot<T>, _: Vec<Vec<u8>>) -> Result<Vec<u8>, PluginError> {
        Err(not_an_aggregate())
    }
    fn finish(_: &Slot<T>, _: Vec<u8>) -> Result<String, PluginError> {
        Err(not_an_aggregate())
    }
    fn set_fitted(_: &Slot<T>, _: String) -> Result<(), PluginError> {
        Err(not_an_aggregate())
    }
}

impl<T: Aggregate> FitCalls<T> for T {
    fn fit_reads(slot: &Slot<T>, input: Vec<Field>) -> Result<Vec<String>, PluginError> {
        slot.get()?.fit_reads(&input)
    }

    fn partial(slot: &Slot<T>, input: Batch) -> Result<Vec<u8>, PluginError> {
        encode_state(&slot.get()?.partial(&input)?)
    }

    fn merge(slot: &Slot<T>, states: Vec<Vec<u8>>) -> Result<Vec<u8>, PluginError> {
        let plugin = slot.get()?;
        let states = states
            .iter()
            .map(|s| decode_state(s))
            .collect::<Result<Vec<T::State>, _>>()?;
        encode_state(&plugin.merge(states)?)
    }

    fn finish(slot: &Slot<T>, state: Vec<u8>) -> Result<String, PluginError> {
        let plugin = slot.get()?;
        let fitted = plugin.finish(decode_state(&state)?)?;
        serde_json::to_string(&fitted)
            .map_err(|e| PluginError::new(format!("cannot encode the fitted parameters: {e}")))
    }

    fn set_fitted(slot: &Slot<T>, fitted: String) -> Result<(), PluginError> {
        let parsed: T::Fitted = serde_json::from_str(&fitted).map_err(|e| {
            PluginError::new(format!("the fitted parameters do not fit this plugin: {e}"))
        })?;
        slot.get()?.set_fitted(parsed)
    }
}

// ---------------------------------------------------------------------------------------------
// Category columns, exported as `quiver_sdk::categories` (documented there). They live in this
// file because the SDK's source files are also embedded, by name, in the `quiver` binary.

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

/// The field `name` of `input`, checked to be a category column, with its kind.
pub fn category_field<'a>(
    input: &'a [Field],
    name: &str,
) -> Result<(&'a Field, Kind), PluginError> {
    let field = find_field(input, name)?;
    if !CATEGORICAL.contains(&field.data_type) {
        return Err(PluginError::new(format!(
            "column `{name}` has type {}; categories must be utf8 or integers",
            field.data_type
        ))
        .in_column(name));
    }
    Ok((field, Kind::of(&field.data_type)))
}

/// Checks that every one of `columns` is a category column; returns them (a typical
/// `Aggregate::fit_reads` of an encoder).
pub fn category_columns(input: &[Field], columns: &[String]) -> Result<Vec<String>, PluginError> {
    for c in columns {
        category_field(input, c)?;
    }
    Ok(columns.to_vec())
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
            field.data_type,
            fitted.name()
        ))
        .in_column(name));
    }
    Ok(field)
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
        // `category_field` accepts only CATEGORICAL columns.
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
///
/// `H` builds the hasher of the maps. Keys come from the data being processed and a map is
/// local to one plugin instance, so a plugin may well choose a fast non-cryptographic hash
/// (such as rustc-hash's `FxBuildHasher`) over the default SipHash.
// Debug by hand: derived, it would require `H: Debug`, which hasher builders often are not.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "V: Serialize",
    deserialize = "V: Deserialize<'de>, H: BuildHasher + Default"
))]
pub struct KeyMap<V, H = RandomState> {
    text: HashMap<String, V, H>,
    int: HashMap<i128, V, H>,
}

impl<V: fmt::Debug, H> fmt::Debug for KeyMap<V, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMap")
            .field("text", &self.text)
            .field("int", &self.int)
            .finish()
    }
}

impl<V, H: Default> Default for KeyMap<V, H> {
    fn default() -> Self {
        KeyMap {
            text: HashMap::default(),
            int: HashMap::default(),
        }
    }
}

impl<V, H: BuildHasher> KeyMap<V, H> {
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
    pub fn merge(&mut self, other: KeyMap<V, H>, mut combine: impl FnMut(&mut V, V)) {
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

impl<V, H: BuildHasher + Default> FromIterator<(Key, V)> for KeyMap<V, H> {
    fn from_iter<I: IntoIterator<Item = (Key, V)>>(iter: I) -> Self {
        let mut map = KeyMap::default();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

/// The statistics of one column: its kind, and a value per category.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "V: Serialize",
    deserialize = "V: Deserialize<'de>, H: BuildHasher + Default"
))]
pub struct ColumnStats<V, H = RandomState> {
    /// What the column holds (known even when no row has a value).
    pub kind: Kind,
    /// The value per category.
    pub map: KeyMap<V, H>,
}

impl<V: fmt::Debug, H> fmt::Debug for ColumnStats<V, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColumnStats")
            .field("kind", &self.kind)
            .field("map", &self.map)
            .finish()
    }
}

impl<V, H: BuildHasher + Default> ColumnStats<V, H> {
    /// No categories yet, for a column like `column`.
    pub fn empty(column: &Column) -> Self {
        ColumnStats {
            kind: Kind::of(&column.data_type),
            map: KeyMap::default(),
        }
    }

    /// The statistics of one column of a batch: `add` folds each row's value into its
    /// category's (`V::default()` at first); null rows are skipped.
    pub fn of(column: &Column, rows: usize, mut add: impl FnMut(&mut V, usize)) -> Self
    where
        V: Default,
    {
        let mut stats = ColumnStats::empty(column);
        for i in 0..rows {
            if let Some(key) = key_at(column, i) {
                add(stats.map.entry(key), i);
            }
        }
        stats
    }
}

/// Merges per-column states (one [`ColumnStats`] per configured column) element by element,
/// combining the values of a category found in several by `combine`.
pub fn merge_columns<V, H: BuildHasher>(
    columns: usize,
    states: Vec<Vec<ColumnStats<V, H>>>,
    mut combine: impl FnMut(&mut V, V),
) -> Result<Vec<ColumnStats<V, H>>, PluginError> {
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
pub fn count_categories<H: BuildHasher + Default>(input: &Batch) -> Vec<ColumnStats<u64, H>> {
    let rows = input.rows as usize;
    input
        .columns
        .iter()
        .map(|column| ColumnStats::of(column, rows, |n, _| *n += 1))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Fit {
        count: u64,
        mean: f64,
    }

    #[test]
    fn per_column_fits_are_one_json_object_per_column_named_first() {
        let columns = ["a".to_string(), "b".to_string()];
        let fitted = PerColumn::finish(&columns, vec![2u64, 0], |c, n| {
            Ok(Fit {
                count: n,
                mean: if c == "a" { 1.5 } else { 0.0 },
            })
        })
        .unwrap();
        let json = serde_json::to_string(&fitted).unwrap();
        assert_eq!(
            json,
            r#"{"columns":[{"column":"a","count":2,"mean":1.5},{"column":"b","count":0,"mean":0.0}]}"#
        );
        let back: PerColumn<Fit> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, fitted);
        assert!(back.check(&columns).is_ok());
        let err = back.check(&["b".into(), "a".into()]).unwrap_err();
        assert_eq!(
            err.message,
            r#"fitted for columns ["a", "b"], but configured for ["b", "a"]"#
        );
        let short = PerColumn::<Fit>::finish(&columns, vec![1u64], |_, _| unreachable!());
        assert!(short.is_err());
    }

    #[test]
    fn category_stats_merge_by_key_and_sort_by_value() {
        let mut a: KeyMap<u64> = [(Key::Text("b".into()), 2), (Key::Int(-3), 1)]
            .into_iter()
            .collect();
        let b: KeyMap<u64> = [(Key::Text("b".into()), 5), (Key::Text("a".into()), 1)]
            .into_iter()
            .collect();
        a.merge(b, |x, y| *x += y);
        assert_eq!(
            a.into_sorted(),
            vec![
                (Key::Int(-3), 1),
                (Key::Text("a".into()), 1),
                (Key::Text("b".into()), 7)
            ]
        );
    }
}
