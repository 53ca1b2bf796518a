//! Building plans: which columns a plugin reads, and the output schema.

use crate::bindings::quiver::plugin::types::{
    DataType, Field, OutputField, OutputSource, Plan, PluginError,
};

/// The field called `name`, or an error listing the available columns.
pub fn find_field<'a>(input: &'a [Field], name: &str) -> Result<&'a Field, PluginError> {
    input.iter().find(|f| f.name == name).ok_or_else(|| {
        let names: Vec<&str> = input.iter().map(|f| f.name.as_str()).collect();
        PluginError::new(format!(
            "column `{name}` not found; the input has: {}",
            names.join(", ")
        ))
        .in_column(name)
    })
}

/// The field called `name`, checked to have one of the `allowed` types.
pub fn expect_type<'a>(
    input: &'a [Field],
    name: &str,
    allowed: &[DataType],
) -> Result<&'a Field, PluginError> {
    let field = find_field(input, name)?;
    if !allowed.contains(&field.data_type) {
        let allowed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        return Err(PluginError::new(format!(
            "column `{name}` has type {}; expected {}",
            field.data_type,
            allowed.join(", ")
        ))
        .in_column(name));
    }
    Ok(field)
}

impl std::fmt::Display for DataType {
    /// Arrow's names: `Utf8`, `Float64`, `Timestamp(Millisecond, UTC)`, …
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::bindings::quiver::plugin::types::TimeUnit;
        let name = match self {
            DataType::Boolean => "Boolean",
            DataType::Int8 => "Int8",
            DataType::Int16 => "Int16",
            DataType::Int32 => "Int32",
            DataType::Int64 => "Int64",
            DataType::Uint8 => "UInt8",
            DataType::Uint16 => "UInt16",
            DataType::Uint32 => "UInt32",
            DataType::Uint64 => "UInt64",
            DataType::Float32 => "Float32",
            DataType::Float64 => "Float64",
            DataType::Utf8 => "Utf8",
            DataType::Binary => "Binary",
            DataType::Date32 => "Date32",
            DataType::Timestamp(t) => {
                let unit = match t.unit {
                    TimeUnit::Second => "Second",
                    TimeUnit::Millisecond => "Millisecond",
                    TimeUnit::Microsecond => "Microsecond",
                    TimeUnit::Nanosecond => "Nanosecond",
                };
                return match &t.timezone {
                    Some(tz) => write!(f, "Timestamp({unit}, {tz})"),
                    None => write!(f, "Timestamp({unit})"),
                };
            }
        };
        f.write_str(name)
    }
}

/// The numeric types (integers and floats).
pub const NUMERIC: [DataType; 10] = [
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Float32,
    DataType::Float64,
];

/// Checks that every one of `columns` exists and is numeric; returns them (a typical
/// `Aggregate::fit_reads`).
pub fn expect_numeric(input: &[Field], columns: &[String]) -> Result<Vec<String>, PluginError> {
    for c in columns {
        expect_type(input, c, &NUMERIC)?;
    }
    Ok(columns.to_vec())
}

impl Plan {
    /// Reads each of `columns` (which must be numeric) and replaces it by a float64 column of
    /// the same nullability.
    pub fn compute_f64(mut self, input: &[Field], columns: &[String]) -> Result<Self, PluginError> {
        for c in columns {
            let field = expect_type(input, c, &NUMERIC)?;
            self = self.compute(c, DataType::Float64, field.nullable);
        }
        Ok(self)
    }

    /// A plan that reads nothing and passes every input column through unchanged.
    pub fn passthrough(input: &[Field]) -> Self {
        Plan {
            reads: Vec::new(),
            output: input
                .iter()
                .map(|f| OutputField {
                    name: f.name.clone(),
                    data_type: f.data_type.clone(),
                    nullable: f.nullable,
                    source: OutputSource::Passthrough(f.name.clone()),
                })
                .collect(),
        }
    }

    /// Adds `name` to the columns the plugin reads (once).
    pub fn read(mut self, name: &str) -> Self {
        if !self.reads.iter().any(|r| r == name) {
            self.reads.push(name.into());
        }
        self
    }

    /// Reads `name` and replaces its output column (or appends one) by a computed column.
    pub fn compute(self, name: &str, data_type: DataType, nullable: bool) -> Self {
        self.read(name).computed(name, data_type, nullable)
    }

    /// Declares a computed output column `name` without reading an input column of that name.
    pub fn computed(mut self, name: &str, data_type: DataType, nullable: bool) -> Self {
        let field = OutputField {
            name: name.into(),
            data_type,
            nullable,
            source: OutputSource::Computed,
        };
        match self.output.iter_mut().find(|f| f.name == name) {
            Some(existing) => *existing = field,
            None => self.output.push(field),
        }
        self
    }

    /// Declares a computed output column `name` placed right after the output column `after`
    /// (at the end if there is none).
    pub fn computed_after(
        mut self,
        after: &str,
        name: &str,
        data_type: DataType,
        nullable: bool,
    ) -> Self {
        self = self.drop(name);
        let at = self
            .output
            .iter()
            .position(|f| f.name == after)
            .map_or(self.output.len(), |i| i + 1);
        self.output.insert(
            at,
            OutputField {
                name: name.into(),
                data_type,
                nullable,
                source: OutputSource::Computed,
            },
        );
        self
    }

    /// Removes output column `name`.
    pub fn drop(mut self, name: &str) -> Self {
        self.output.retain(|f| f.name != name);
        self
    }
}
