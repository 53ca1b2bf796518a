//! Bit-packed bitmaps in Arrow's layout (least significant bit first).

/// Whether bit `i` of `bits` is set.
#[inline]
pub fn get_bit(bits: &[u8], i: usize) -> bool {
    bits[i >> 3] & (1 << (i & 7)) != 0
}

/// Number of set bits among the first `len` bits.
pub fn count_set_bits(bits: &[u8], len: usize) -> usize {
    let full = len / 8;
    // Eight bytes per step: a loop iteration costs a deadline check in the sandbox.
    let words = bits[..full].chunks_exact(8);
    let rest = words.remainder();
    let mut n: usize = words
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")).count_ones() as usize)
        .sum::<usize>()
        + rest.iter().map(|b| b.count_ones() as usize).sum::<usize>();
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
        // One step per word, not per byte (`flat_map` would loop per byte).
        let mut bytes: Vec<u8> = Vec::with_capacity(words.len() * 8);
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        bytes.truncate(len.div_ceil(8));
        BitmapBuilder { bytes, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic bit pattern with runs and isolated bits.
    fn pattern(len: usize) -> Vec<bool> {
        (0..len).map(|i| (i * 7 + i / 13) % 5 < 2).collect()
    }

    #[test]
    fn words_and_counts_agree_with_bit_by_bit() {
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 500, 1000] {
            let bits = pattern(len);
            let mut one_by_one = BitmapBuilder::default();
            for &b in &bits {
                one_by_one.push(b);
            }
            let mut words = vec![0u64; len.div_ceil(64)];
            for (i, &b) in bits.iter().enumerate() {
                words[i / 64] |= (b as u64) << (i % 64);
            }
            let from_words = BitmapBuilder::from_words(&words, len);
            let want = bits.iter().filter(|&&b| b).count();
            assert_eq!(from_words.count_set(), want, "len {len}");
            assert_eq!(one_by_one.count_set(), want, "len {len}");
            assert_eq!(from_words.finish(), one_by_one.finish(), "len {len}");
        }
    }
}
