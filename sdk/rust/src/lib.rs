//! Write Quiver transform plugins in Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`] and built for
//! `wasm32-wasip2` as a `cdylib`. The host sends each batch as Arrow-shaped columns: a column's
//! values arrive as an owned `Vec` (e.g. `Vec<f64>`) that the plugin may change in place and send
//! back, so the data is copied only at the boundary.
//!
//! ```ignore
//! use quiver_sdk::prelude::*;
//!
//! struct Negate { column: String }
//!
//! impl Plugin for Negate {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("negate", env!("CARGO_PKG_VERSION"), "x → −x")
//!             .param(ParamSpec::text("column", "the float64 column to negate").required())
//!     }
//!     fn init(params: Params) -> Result<Self, ParamError> {
//!         Ok(Negate { column: params.text("column").unwrap_or_default().to_string() })
//!     }
//!     fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError> {
//!         expect_type(input, &self.column, &[DataType::Float64])?;
//!         Ok(Plan::passthrough(input).compute(&self.column, DataType::Float64, true))
//!     }
//!     fn transform(&mut self, mut input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
//!         let mut column = input.columns.remove(0);
//!         column.values_mut::<f64>()?.iter_mut().for_each(|x| *x = -*x);
//!         Ok(vec![OutputBatch::all_rows(input.rows, vec![column])])
//!     }
//! }
//! quiver_sdk::export_plugin!(Negate);
//! ```

use std::cell::UnsafeCell;

/// Bindings of the `stateful` world: the shared types, the host import, and the three exports.
/// Every SDK plugin is a `stateful` component: a plain transform answers `fit-reads` with no
/// columns (nothing to fit) and `snapshot` with `none` (no state), which tells the host so.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "quiver:plugin/stateful",
        pub_export_macro: true,
        default_bindings_module: "quiver_sdk::bindings",
        export_macro_name: "export",
        additional_derives: [PartialEq],
    });
}

mod aggregate;

mod bitmap;
mod column;
mod params;
mod plan;
pub mod quantile;
mod state;

pub use aggregate::{
    check_fitted_columns, merge_columnwise, Aggregate, ColumnFit, FitCalls, PerColumn, Unfitted,
};
pub use bindings::quiver::plugin::host::Level;
pub use bindings::quiver::plugin::types::{
    Batch, Column, DataType, Field, InvalidParam, OutputBatch, OutputField, OutputSource, Param,
    ParamError, ParamKind, ParamSpec, ParamValue, Plan, PluginError, PluginInfo, TimeUnit,
    TimestampType, Values, WrongKind,
};
pub use bitmap::{count_set_bits, get_bit, BitmapBuilder};
pub use column::{Native, StringColumnBuilder};
pub use params::Params;
pub use plan::{expect_numeric, expect_type, find_field, NUMERIC};
pub use state::{State, StateCalls, Stateless};

/// Category columns (text or integers), for encoders that count or collect the categories of
/// each column when fitted: what a category is ([`Key`](categories::Key),
/// [`KeyRef`](categories::KeyRef), [`Kind`](categories::Kind)), reading one from a row
/// ([`key_at`](categories::key_at)), statistics per category that merge exactly
/// ([`KeyMap`](categories::KeyMap), [`ColumnStats`](categories::ColumnStats),
/// [`count_categories`](categories::count_categories),
/// [`merge_columns`](categories::merge_columns)), and the checks and errors the encoders share.
///
/// A category is a non-null value of a utf8 column (its text) or of an integer column (its
/// value; its decimal text where a name is needed). Categories sort by value: text by Unicode
/// code point (byte order of UTF-8, as Python sorts strings), integers numerically.
pub mod categories {
    pub use crate::aggregate::{
        category_columns, category_field, check_keys, count_categories, fitted_field, key_at,
        merge_columns, unknown_category, ColumnStats, Key, KeyMap, KeyRef, Kind, CATEGORICAL,
    };
}

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::{
        expect_numeric, expect_type, find_field, get_bit, log, merge_columnwise, Aggregate, Batch,
        BitmapBuilder, Column, DataType, Field, Level, Native, OutputBatch, OutputField,
        OutputSource, ParamError, ParamSpec, ParamValue, Params, PerColumn, Plan, Plugin,
        PluginError, PluginInfo, State, StringColumnBuilder, Values, NUMERIC,
    };
}

/// A transform plugin. One value of this type lives in each plugin instance: the host calls
/// [`Plugin::init`] once, then [`Plugin::prepare`] for each input schema and
/// [`Plugin::transform`] for each batch.
pub trait Plugin: Sized + 'static {
    /// Name, version, description and parameters. Parameters given to `init` are checked
    /// against these specs (unknown names, kinds, required ones) before `init` runs.
    fn describe() -> PluginInfo;

    /// Builds the plugin from checked parameters (defaults filled in).
    fn init(params: Params) -> Result<Self, ParamError>;

    /// Which input columns the plugin reads and what the output schema is, for batches of this
    /// input schema.
    fn prepare(&self, input: &[Field]) -> Result<Plan, PluginError>;

    /// Processes one batch holding the plan's `reads` columns, in that order.
    fn transform(&mut self, input: Batch) -> Result<Vec<OutputBatch>, PluginError>;
}

/// Writes a message to the host's log, attributed to this plugin.
pub fn log(level: Level, message: &str) {
    bindings::quiver::plugin::host::log(level, message);
}

impl PluginInfo {
    /// Describes a plugin with no parameters yet.
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter.
    pub fn param(mut self, spec: ParamSpec) -> Self {
        self.params.push(spec);
        self
    }
}

impl PluginError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        PluginError {
            message: message.into(),
            column: None,
            row: None,
        }
    }

    /// Names the column concerned.
    pub fn in_column(mut self, column: &str) -> Self {
        self.column = Some(column.into());
        self
    }

    /// Names the row concerned (0-based within the batch).
    pub fn at_row(mut self, row: usize) -> Self {
        self.row = Some(row as u32);
        self
    }
}

impl OutputBatch {
    /// An output that keeps every input row: `columns` are the plan's computed columns.
    pub fn all_rows(rows: u32, columns: Vec<Column>) -> Self {
        OutputBatch {
            rows,
            columns,
            selection: None,
        }
    }

    /// An output that keeps the input rows whose bit is set in `selection`.
    pub fn selected(selection: BitmapBuilder, columns: Vec<Column>) -> Self {
        let rows = selection.count_set() as u32;
        OutputBatch {
            rows,
            columns,
            selection: Some(selection.finish()),
        }
    }
}

/// Holds the plugin value of an instance. Plugin instances are single-threaded: the host never
/// enters one instance from two threads, so unsynchronised interior mutability is sound here.
#[doc(hidden)]
pub struct Slot<T>(UnsafeCell<Option<T>>);

// SAFETY: a Wasm instance runs on one thread at a time and is never re-entered.
unsafe impl<T> Sync for Slot<T> {}

impl<T: Plugin> Slot<T> {
    #[doc(hidden)]
    pub const fn new() -> Self {
        Slot(UnsafeCell::new(None))
    }

    // Returning `&mut` from `&self` is the point of the slot: see `Sync` above.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn get(&self) -> Result<&mut T, PluginError> {
        // SAFETY: see `Sync` above; calls into an instance are never nested.
        unsafe { &mut *self.0.get() }
            .as_mut()
            .ok_or_else(|| PluginError::new("the host called the plugin before init"))
    }

    #[doc(hidden)]
    pub fn init(&self, params: Vec<Param>) -> Result<(), ParamError> {
        let params = Params::check(&T::describe().params, params)?;
        let plugin = T::init(params)?;
        // SAFETY: as in `get`.
        unsafe { *self.0.get() = Some(plugin) };
        Ok(())
    }

    #[doc(hidden)]
    pub fn prepare(&self, input: Vec<Field>) -> Result<Plan, PluginError> {
        self.get()?.prepare(&input)
    }

    #[doc(hidden)]
    pub fn transform(&self, input: Batch) -> Result<Vec<OutputBatch>, PluginError> {
        self.get()?.transform(input)
    }
}

impl<T: Plugin> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Exports a [`Plugin`] that needs no fitting (its `fit-reads` is empty).
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        $crate::__export!(
            $plugin,
            $crate::Unfitted<$plugin>,
            $crate::Stateless<$plugin>
        );
    };
}

/// Exports a [`Plugin`] that is also a [`State`]: it keeps state across batches, which the
/// host saves in streaming checkpoints.
#[macro_export]
macro_rules! export_stateful {
    ($plugin:ty) => {
        $crate::__export!($plugin, $crate::Unfitted<$plugin>, $plugin);
    };
}

/// Exports a [`Plugin`] that is also an [`Aggregate`], fitted on the data before it transforms.
#[macro_export]
macro_rules! export_feature {
    ($plugin:ty) => {
        $crate::__export!($plugin, $plugin, $crate::Stateless<$plugin>);
    };
}

/// The three interfaces, delegating to a [`Slot`]; `$agg` is the plugin itself or
/// [`Unfitted`], `$state` the plugin itself or [`Stateless`].
#[doc(hidden)]
#[macro_export]
macro_rules! __export {
    ($plugin:ty, $agg:ty, $state:ty) => {
        const _: () = {
            static SLOT: $crate::Slot<$plugin> = $crate::Slot::new();
            struct QuiverExport;
            impl $crate::bindings::exports::quiver::plugin::transformer::Guest for QuiverExport {
                fn describe() -> $crate::PluginInfo {
                    <$plugin as $crate::Plugin>::describe()
                }
                fn init(params: Vec<$crate::Param>) -> Result<(), $crate::ParamError> {
                    SLOT.init(params)
                }
                fn prepare(input: Vec<$crate::Field>) -> Result<$crate::Plan, $crate::PluginError> {
                    SLOT.prepare(input)
                }
                fn transform(
                    input: $crate::Batch,
                ) -> Result<Vec<$crate::OutputBatch>, $crate::PluginError> {
                    SLOT.transform(input)
                }
            }
            impl $crate::bindings::exports::quiver::plugin::aggregate::Guest for QuiverExport {
                fn fit_reads(
                    input: Vec<$crate::Field>,
                ) -> Result<Vec<String>, $crate::PluginError> {
                    <$agg as $crate::FitCalls<$plugin>>::fit_reads(&SLOT, input)
                }
                fn partial(input: $crate::Batch) -> Result<Vec<u8>, $crate::PluginError> {
                    <$agg as $crate::FitCalls<$plugin>>::partial(&SLOT, input)
                }
                fn merge(states: Vec<Vec<u8>>) -> Result<Vec<u8>, $crate::PluginError> {
                    <$agg as $crate::FitCalls<$plugin>>::merge(&SLOT, states)
                }
                fn finish(state: Vec<u8>) -> Result<String, $crate::PluginError> {
                    <$agg as $crate::FitCalls<$plugin>>::finish(&SLOT, state)
                }
                fn set_fitted(fitted: String) -> Result<(), $crate::PluginError> {
                    <$agg as $crate::FitCalls<$plugin>>::set_fitted(&SLOT, fitted)
                }
            }
            impl $crate::bindings::exports::quiver::plugin::state::Guest for QuiverExport {
                fn snapshot() -> Result<Option<Vec<u8>>, $crate::PluginError> {
                    <$state as $crate::StateCalls<$plugin>>::snapshot(&SLOT)
                }
                fn restore(state: Vec<u8>) -> Result<(), $crate::PluginError> {
                    <$state as $crate::StateCalls<$plugin>>::restore(&SLOT, state)
                }
            }
    $crate::bindings::export!(QuiverExport with_types_in $crate::bindings);
        };
    };
}
