//! State kept across batches, saved by the host in streaming checkpoints.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregate::{decode_state, encode_state};
use crate::bindings::quiver::plugin::types::PluginError;
use crate::{Plugin, Slot};

/// A plugin that keeps state from one batch to the next (`export_stateful!`), such as a
/// running count per key.
///
/// The host takes [`State::snapshot`] at every checkpoint and, after a restart, gives it back
/// with [`State::restore`] before the first batch, so the state always matches the output that
/// was committed. The SDK serialises the value compactly, with a version header.
pub trait State: Plugin {
    /// What is kept.
    type Saved: Serialize + DeserializeOwned;

    /// The state after the batches so far; `None` if this configuration keeps none.
    fn snapshot(&self) -> Result<Option<Self::Saved>, PluginError>;
    /// Replaces the state with a saved one.
    fn restore(&mut self, saved: Self::Saved) -> Result<(), PluginError>;
}

/// The `state` calls of an exported plugin: real ones for a [`State`], or "keeps none"
/// ([`Stateless`]).
#[doc(hidden)]
pub trait StateCalls<T: Plugin> {
    fn snapshot(slot: &Slot<T>) -> Result<Option<Vec<u8>>, PluginError>;
    fn restore(slot: &Slot<T>, state: Vec<u8>) -> Result<(), PluginError>;
}

/// Marks a plugin that keeps no state across batches.
#[doc(hidden)]
pub struct Stateless<T>(std::marker::PhantomData<T>);

impl<T: Plugin> StateCalls<T> for Stateless<T> {
    fn snapshot(_: &Slot<T>) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(None)
    }
    fn restore(_: &Slot<T>, _: Vec<u8>) -> Result<(), PluginError> {
        Err(PluginError::new(
            "this plugin keeps no state across batches, so it has none to restore",
        ))
    }
}

impl<T: State> StateCalls<T> for T {
    fn snapshot(slot: &Slot<T>) -> Result<Option<Vec<u8>>, PluginError> {
        slot.get()?
            .snapshot()?
            .map(|s| encode_state(&s))
            .transpose()
    }

    fn restore(slot: &Slot<T>, state: Vec<u8>) -> Result<(), PluginError> {
        slot.get()?.restore(decode_state(&state)?)
    }
}
