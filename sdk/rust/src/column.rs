//! Typed access to columns.

use crate::bindings::quiver::plugin::types::{Column, DataType, PluginError, Values};
use crate::bitmap::{get_bit, BitmapBuilder};

/// A Rust type that is the physical value type of a column (`f64` for float64 columns,
/// `i32` for date32 ones, …).
pub trait Native: Copy + Sized {
    /// Name of the physical layout, for error messages.
    const NAME: &'static str;
    /// The values, if `values` holds this type.
    fn slice(values: &Values) -> Option<&[Self]>;
    /// The values, mutable, if `values` holds this type.
    fn vec_mut(values: &mut Values) -> Option<&mut Vec<Self>>;
    /// Wraps a vector as column values.
    fn into_values(values: Vec<Self>) -> Values;
}

macro_rules! native {
    ($($t:ty => $case:ident, $name:literal;)*) => {$(
        impl Native for $t {
            const NAME: &'static str = $name;
            fn slice(values: &Values) -> Option<&[Self]> {
                match values { Values::$case(v) => Some(v), _ => None }
            }
            fn vec_mut(values: &mut Values) -> Option<&mut Vec<Self>> {
                match values { Values::$case(v) => Some(v), _ => None }
            }
            fn into_values(values: Vec<Self>) -> Values {
                Values::$case(values)
            }
        }
    )*};
}

native! {
    i8 => I8, "i8"; i16 => I16, "i16"; i32 => I32, "i32"; i64 => I64, "i64";
    u8 => U8, "u8"; u16 => U16, "u16"; u32 => U32, "u32"; u64 => U64, "u64";
    f32 => F32, "f32"; f64 => F64, "f64";
}

impl Column {
    /// A column without nulls.
    pub fn new(name: &str, data_type: DataType, values: Values) -> Self {
        Column {
            name: name.into(),
            data_type,
            validity: None,
            offsets: None,
            values,
        }
    }

    /// A fixed-width column from a vector of values, with an optional validity bitmap.
    pub fn from_vec<T: Native>(
        name: &str,
        data_type: DataType,
        values: Vec<T>,
        validity: Option<Vec<u8>>,
    ) -> Self {
        Column {
            validity,
            ..Column::new(name, data_type, T::into_values(values))
        }
    }

    fn wrong_layout(&self, wanted: &str) -> PluginError {
        PluginError::new(format!(
            "column `{}` has type {}, not values of {wanted}",
            self.name, self.data_type
        ))
        .in_column(&self.name)
    }

    /// The values as a slice of `T`, or an error naming the column if its layout differs.
    pub fn values<T: Native>(&self) -> Result<&[T], PluginError> {
        T::slice(&self.values).ok_or_else(|| self.wrong_layout(T::NAME))
    }

    /// The values as a mutable vector of `T`, to change in place and send back.
    pub fn values_mut<T: Native>(&mut self) -> Result<&mut Vec<T>, PluginError> {
        if T::slice(&self.values).is_none() {
            return Err(self.wrong_layout(T::NAME));
        }
        Ok(T::vec_mut(&mut self.values).expect("layout checked above"))
    }

    /// The values of a numeric column as `f64` (borrowed for float64, converted otherwise),
    /// ignoring validity; an error naming the column for other types.
    pub fn f64_values(&self) -> Result<std::borrow::Cow<'_, [f64]>, PluginError> {
        use std::borrow::Cow;
        fn conv<T: Copy + Into<f64>>(v: &[T]) -> Cow<'static, [f64]> {
            Cow::Owned(v.iter().map(|&x| x.into()).collect())
        }
        Ok(match &self.values {
            Values::F64(v) => Cow::Borrowed(v),
            Values::F32(v) => conv(v),
            Values::I8(v) => conv(v),
            Values::I16(v) => conv(v),
            Values::I32(v) => conv(v),
            Values::I64(v) => Cow::Owned(v.iter().map(|&x| x as f64).collect()),
            Values::U8(v) => conv(v),
            Values::U16(v) => conv(v),
            Values::U32(v) => conv(v),
            Values::U64(v) => Cow::Owned(v.iter().map(|&x| x as f64).collect()),
            Values::Bits(_) | Values::Bytes(_) => return Err(self.wrong_layout("numbers")),
        })
    }

    /// Applies `f` to every value of a numeric column, which becomes float64: in place for a
    /// float64 column (the buffer the host sent goes back), converted otherwise. Validity is
    /// kept; `f` also sees the (meaningless) values under nulls.
    pub fn map_f64(&mut self, f: impl Fn(f64) -> f64) -> Result<(), PluginError> {
        match &mut self.values {
            Values::F64(v) => v.iter_mut().for_each(|x| *x = f(*x)),
            _ => {
                let mapped = self.f64_values()?.iter().map(|&x| f(x)).collect();
                self.set_f64_values(mapped);
            }
        }
        Ok(())
    }

    /// Replaces the values by float64 ones (keeping validity), e.g. after scaling.
    pub fn set_f64_values(&mut self, values: Vec<f64>) {
        self.values = Values::F64(values);
        self.data_type = DataType::Float64;
    }

    /// Whether row `i` holds a value (is not null).
    #[inline]
    pub fn is_valid(&self, i: usize) -> bool {
        self.validity.as_ref().is_none_or(|v| get_bit(v, i))
    }

    /// Value of a boolean column at row `i` (ignoring validity).
    #[inline]
    pub fn bool_at(&self, i: usize) -> bool {
        match &self.values {
            Values::Bits(b) => get_bit(b, i),
            _ => false,
        }
    }

    /// Bytes of row `i` of a utf8 or binary column (ignoring validity).
    #[inline]
    pub fn bytes_at(&self, i: usize) -> &[u8] {
        match (&self.offsets, &self.values) {
            (Some(o), Values::Bytes(b)) => &b[o[i] as usize..o[i + 1] as usize],
            _ => &[],
        }
    }

    /// Text of row `i` of a utf8 column, or `None` if the row is null.
    #[inline]
    pub fn str_at(&self, i: usize) -> Option<&str> {
        if !self.is_valid(i) {
            return None;
        }
        // The host validates UTF-8 of every utf8 column it sends (Arrow's own invariant), so
        // invalid bytes here would be a host bug; treat them as absent rather than trusting them.
        std::str::from_utf8(self.bytes_at(i)).ok()
    }
}

/// Builds a utf8 (or binary) column row by row.
#[derive(Debug, Default)]
pub struct StringColumnBuilder {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
    validity: BitmapBuilder,
    nulls: usize,
}

impl StringColumnBuilder {
    /// A builder with room for `rows` rows and `bytes` bytes of text.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StringColumnBuilder {
            offsets,
            bytes: Vec::with_capacity(bytes),
            validity: BitmapBuilder::with_capacity(rows),
            nulls: 0,
        }
    }

    /// Appends a value, or a null.
    #[inline]
    pub fn push(&mut self, value: Option<&[u8]>) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        if let Some(v) = value {
            self.bytes.extend_from_slice(v);
        } else {
            self.nulls += 1;
        }
        self.validity.push(value.is_some());
        self.offsets.push(self.bytes.len() as i32);
    }

    /// Appends text built by `write` into the value buffer (no intermediate allocation).
    #[inline]
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        write(&mut self.bytes);
        self.validity.push(true);
        self.offsets.push(self.bytes.len() as i32);
    }

    /// The finished column.
    pub fn finish(mut self, name: &str, data_type: DataType) -> Column {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        Column {
            name: name.into(),
            data_type,
            validity: (self.nulls > 0).then(|| self.validity.finish()),
            offsets: Some(self.offsets),
            values: Values::Bytes(self.bytes),
        }
    }
}
