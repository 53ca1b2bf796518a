//! Bit-packed bitmaps in Arrow's layout (least significant bit first).

/// Whether bit `i` of `bits` is set.
#[inline]
pub fn get_bit(bits: &[u8], i: usize) -> bool {
    bits[i >> 3] & (1 << (i & 7)) != 0
}

/// Number of set bits among the first `len` bits.
pub fn count_set_bits(bits: &[u8], len: usize) -> usize {
    let full = len / 8;
    let mut n: usize = bits[..full].iter().map(|b| b.count_ones() as usize).sum();
    if !len.is_multiple_of(8) {
        n += (bits[full] & ((1u8 << (len % 8)) - 1)).count_ones() as usize;
    }
    n
}

/// Builds a bitmap one bit at a time, or from 64-bit words.
#[derive(Debug, Clone, Default)]
pub struct BitmapBuilder {
    bytes: Vec<u8>,
    len: usize,
}

impl BitmapBuilder {
    /// An empty bitmap with room for `capacity` bits.
    pub fn with_capacity(capacity: usize) -> Self {
        BitmapBuilder {
            bytes: Vec::with_capacity(capacity.div_ceil(8)),
            len: 0,
        }
    }

    /// A bitmap of `len` bits, all set to `value`.
    pub fn filled(len: usize, value: bool) -> Self {
        BitmapBuilder {
            bytes: vec![if value { 0xff } else { 0 }; len.div_ceil(8)],
            len,
        }
    }

    /// Appends one bit.
    #[inline]
    pub fn push(&mut self, value: bool) {
        if self.len.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if value {
            *self.bytes.last_mut().expect("pushed above") |= 1 << (self.len % 8);
        }
        self.len += 1;
    }

    /// Sets or clears bit `i` (which must be below `len`).
    #[inline]
    pub fn set(&mut self, i: usize, value: bool) {
        if value {
            self.bytes[i >> 3] |= 1 << (i & 7);
        } else {
            self.bytes[i >> 3] &= !(1 << (i & 7));
        }
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the bitmap has no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of set bits.
    pub fn count_set(&self) -> usize {
        count_set_bits(&self.bytes, self.len)
    }

    /// The bytes, ready to send as a validity or selection bitmap.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    /// Builds a bitmap from 64-bit words (bit i of word w is row 64·w + i).
    pub fn from_words(words: &[u64], len: usize) -> Self {
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.truncate(len.div_ceil(8));
        BitmapBuilder { bytes, len }
    }
}
