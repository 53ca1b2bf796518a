//! Fit → transform: plugins whose transform needs statistics over all the data.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bindings::quiver::plugin::types::{Batch, Field, PluginError};
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
