//! Mergeable quantile summaries: exact up to a number of distinct values, then a DDSketch.
//!
//! A [`QuantileSummary`] is made to be an [`Aggregate::State`](crate::Aggregate::State): build
//! one per batch (it implements [`Extend<f64>`]), [`merge`](QuantileSummary::merge) them in any
//! order and grouping, and ask the merged one for quantiles. NaN values are ignored (never
//! counted); ±∞ are counted like any other value.
//!
//! # Two representations, chosen by the number of distinct values alone
//!
//! * **Exact** while the summary holds at most `exact_limit` distinct values (100 000 by
//!   default), however many times each occurs: every distinct value is kept with its count,
//!   sorted by [`f64::total_cmp`] (so −0 and +0 are two values). A column of millions of rows
//!   with few distinct values (integers, codes, prices) stays exact.
//! * **Sketch** as soon as it holds more distinct values: a [DDSketch] with relative accuracy α (0.001 by
//!   default). A positive value x goes to bucket `i = ⌈ln x / ln γ⌉` with γ = (1 + α)/(1 − α),
//!   i.e. the bucket (γ^(i−1), γ^i]; a negative one to bucket ⌈ln |x| / ln γ⌉ of a separate
//!   negative store; zeros (±0), +∞ and −∞ have their own counts; the exact minimum and maximum
//!   are kept too. Buckets are never collapsed (the stores are sparse and a finite f64 needs at
//!   most ~730 000 bucket indices at α = 0.001, ~15 000 for data spanning 1e-3..1e10).
//!
//! The result therefore depends only on the multiset of values, never on insertion order or on
//! the merge tree: a multiset of d ≤ `exact_limit` distinct values is exact in every partial
//! state (each holds at most those d values), and its value → count map is unique; one of more
//! distinct values is a sketch whose bucket counts are sums of one bucket per value, and min/max
//! are taken in the total order. Switching representation happens when a merge first holds more
//! distinct values than the limit, wherever that is in the tree, and gives the same buckets as
//! inserting every value into a sketch directly.
//!
//! # Quantile definition
//!
//! [`QuantileSummary::quantile`] uses linear interpolation between the closest ranks, numpy's
//! default `method="linear"` (what scikit-learn's `RobustScaler` gets from `np.nanpercentile`):
//! with the values sorted as x₍₀₎ ≤ … ≤ x₍ₙ₋₁₎, h = q·(n − 1), lo = ⌊h⌋, f = h − lo,
//!
//! ```text
//! Q(q) = x₍lo₎ + f · (x₍lo+1₎ − x₍lo₎)      (just x₍lo₎ when f = 0)
//! ```
//!
//! computed like numpy's `_lerp` (from the upper end when f ≥ 0.5). On the exact path this is
//! computed from the true sorted values, so only that one interpolation rounds. [`QuantileSummary::value_at_rank`]
//! returns x₍r₎ itself (0-based rank r), the lower-rank definition DDSketch papers use.
//!
//! # Error bound of the sketch path
//!
//! For every rank r, `value_at_rank(r)` returns x̂ with
//!
//! ```text
//! |x̂ − x₍r₎| ≤ α · |x₍r₎|
//! ```
//!
//! where x₍r₎ is the true value at that rank: the bucket of x₍r₎ is found exactly by counting,
//! and its representative (1 − α)·γ^i is within α relative of every value of the bucket. The
//! estimate is clamped to the exact [min, max], which can only bring it closer; ranks 0 and
//! n − 1 return the exact minimum and maximum, and zeros and infinities are exact. For
//! `quantile(q)`, interpolating the two estimates gives
//!
//! ```text
//! |Q̂(q) − Q(q)| ≤ α · ((1 − f)·|x₍lo₎| + f·|x₍lo+1₎|) ≤ α · max(|x₍lo₎|, |x₍lo+1₎|)
//! ```
//!
//! which is α·|Q(q)| whenever x₍lo₎ and x₍lo+1₎ have the same sign (always, except where the data
//! crosses zero). Derived quantities lose the relative guarantee: an interquartile range
//! Q(0.75) − Q(0.25) is only within the sum of the two quartiles' bounds, about
//! α·(|Q(0.75)| + |Q(0.25)|), which is large relative to the range itself for data far from zero
//! with a narrow spread.
//!
//! Both bounds hold up to floating-point rounding in `ln`, `exp` and the interpolation (below
//! 1e-12 relative), for values of magnitude at least [`f64::MIN_POSITIVE`]: subnormal values
//! are bucketed the same way but their estimates carry the reduced precision of subnormals. The
//! SDK's unit tests check the bounds on more than a million values of several distributions.
//!
//! [DDSketch]: https://arxiv.org/abs/1908.10693

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default relative accuracy α of the sketch path.
pub const DEFAULT_ALPHA: f64 = 0.001;

/// Default number of distinct values a summary keeps exactly before it becomes a sketch.
pub const DEFAULT_EXACT_LIMIT: u64 = 100_000;

/// A mergeable quantile summary of f64 values (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantileSummary {
    alpha: f64,
    exact_limit: u64,
    repr: Repr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Repr {
    /// Every distinct value with its count; never more than `exact_limit` distinct values.
    Exact(Counts),
    /// More than `exact_limit` distinct values.
    Sketch(Sketch),
}

/// Distinct values, sorted by `total_cmp`, with cumulative counts: `ends[i]` values are ≤
/// `values[i]`, so the value of rank r is found by binary search (a fit asks for up to 10 000
/// quantiles of one summary).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Counts {
    values: Vec<f64>,
    ends: Vec<u64>,
}

impl Counts {
    /// The non-NaN `values`, counted.
    fn of(values: impl Iterator<Item = f64>) -> Counts {
        let mut sorted: Vec<f64> = values.filter(|x| !x.is_nan()).collect();
        sorted.sort_unstable_by(f64::total_cmp);
        let mut counts = Counts::default();
        for (i, &x) in sorted.iter().enumerate() {
            // Equal in the total order: the same value (and never −0 with +0).
            if counts
                .values
                .last()
                .is_some_and(|l| l.total_cmp(&x).is_eq())
            {
                *counts.ends.last_mut().expect("one per value") = i as u64 + 1;
            } else {
                counts.values.push(x);
                counts.ends.push(i as u64 + 1);
            }
        }
        counts
    }

    fn count(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Each distinct value with how many times it occurs.
    fn pairs(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.values
            .iter()
            .zip(self.ends.iter().zip(starts))
            .map(|(&x, (&end, start))| (x, end - start))
    }

    /// The value of 0-based rank r < count.
    fn at_rank(&self, r: u64) -> f64 {
        self.values[self.ends.partition_point(|&end| end <= r)]
    }

    /// Both multisets in one.
    fn merged(&self, other: &Counts) -> Counts {
        let mut out = Counts::default();
        let mut push = |x: f64, c: u64| {
            let end = out.ends.last().copied().unwrap_or(0) + c;
            match out.values.last() {
                Some(l) if l.total_cmp(&x).is_eq() => *out.ends.last_mut().expect("one") = end,
                _ => {
                    out.values.push(x);
                    out.ends.push(end);
                }
            }
        };
        let (mut a, mut b) = (self.pairs().peekable(), other.pairs().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if y.0.total_cmp(&x.0).is_lt() => b.next(),
                (Some(_), _) => a.next(),
                (None, _) => b.next(),
            };
            match next {
                Some((x, c)) => push(x, c),
                None => return out,
            }
        }
    }
}

/// A DDSketch with unbounded sparse stores (no collapsing, so it stays order-independent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sketch {
    count: u64,
    /// Smallest and largest value in `total_cmp` order (so −0 vs +0 is deterministic too).
    min: f64,
    max: f64,
    neg_inf: u64,
    /// Bucket index of |x| → count, for x < 0.
    negative: BTreeMap<i32, u64>,
    zero: u64,
    /// Bucket index of x → count, for x > 0.
    positive: BTreeMap<i32, u64>,
    pos_inf: u64,
}

/// Two summaries cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantileError {
    message: String,
}

impl std::fmt::Display for QuantileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for QuantileError {}

/// The bucket mapping of a relative accuracy α.
#[derive(Clone, Copy)]
struct Mapping {
    alpha: f64,
    /// ln γ = ln((1 + α)/(1 − α)) = 2·atanh(α), computed once per call for the same α, so the
    /// same value maps to the same bucket everywhere.
    ln_gamma: f64,
}

impl Mapping {
    fn new(alpha: f64) -> Self {
        Mapping {
            alpha,
            ln_gamma: 2.0 * alpha.atanh(),
        }
    }

    /// Bucket of a finite magnitude m > 0: i with γ^(i−1) < m ≤ γ^i.
    fn index(self, m: f64) -> i32 {
        // |ln m| ≤ 745 and ln γ ≥ 2α, so the quotient fits an i32 for any α above ~1e-6 and the
        // cast saturates (instead of wrapping) below that.
        (m.ln() / self.ln_gamma).ceil() as i32
    }

    /// Representative of bucket i: (1 − α)·γ^i, within α relative of all of (γ^(i−1), γ^i].
    /// May overflow to +∞ for the topmost buckets; callers clamp to the exact maximum.
    fn value(self, i: i32) -> f64 {
        (1.0 - self.alpha) * (f64::from(i) * self.ln_gamma).exp()
    }
}

fn total_min(a: f64, b: f64) -> f64 {
    if b.total_cmp(&a) == Ordering::Less {
        b
    } else {
        a
    }
}

fn total_max(a: f64, b: f64) -> f64 {
    if b.total_cmp(&a) == Ordering::Greater {
        b
    } else {
        a
    }
}

impl Sketch {
    fn empty() -> Self {
        Sketch {
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            neg_inf: 0,
            negative: BTreeMap::new(),
            zero: 0,
            positive: BTreeMap::new(),
            pos_inf: 0,
        }
    }

    /// Adds `n` times one non-NaN value.
    fn add(&mut self, m: Mapping, x: f64, n: u64) {
        self.count += n;
        self.min = total_min(self.min, x);
        self.max = total_max(self.max, x);
        if x == 0.0 {
            self.zero += n;
        } else if x == f64::INFINITY {
            self.pos_inf += n;
        } else if x == f64::NEG_INFINITY {
            self.neg_inf += n;
        } else if x > 0.0 {
            *self.positive.entry(m.index(x)).or_insert(0) += n;
        } else {
            *self.negative.entry(m.index(-x)).or_insert(0) += n;
        }
    }

    /// Adds another sketch's counts (same mapping).
    fn absorb(&mut self, o: &Sketch) {
        self.count += o.count;
        self.min = total_min(self.min, o.min);
        self.max = total_max(self.max, o.max);
        self.neg_inf += o.neg_inf;
        self.zero += o.zero;
        self.pos_inf += o.pos_inf;
        for (&i, &c) in &o.negative {
            *self.negative.entry(i).or_insert(0) += c;
        }
        for (&i, &c) in &o.positive {
            *self.positive.entry(i).or_insert(0) += c;
        }
    }

    /// Estimate of the value of 0-based rank r < count, walking the buckets in value order.
    fn at_rank(&self, m: Mapping, r: u64) -> f64 {
        // The extremes are known exactly.
        if r == 0 {
            return self.min;
        }
        if r + 1 == self.count {
            return self.max;
        }
        let clamp = |x: f64| x.clamp(self.min, self.max);
        let mut seen = self.neg_inf;
        if r < seen {
            return f64::NEG_INFINITY;
        }
        // Higher index = larger magnitude = smaller negative value: descending index first.
        for (&i, &c) in self.negative.iter().rev() {
            seen += c;
            if r < seen {
                return clamp(-m.value(i));
            }
        }
        seen += self.zero;
        if r < seen {
            return clamp(0.0);
        }
        for (&i, &c) in &self.positive {
            seen += c;
            if r < seen {
                return clamp(m.value(i));
            }
        }
        f64::INFINITY
    }
}

/// numpy's `_lerp`: a + (b − a)·t, from the upper end for t ≥ 0.5 (so t = 1 gives b exactly).
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    if t == 0.0 || a == b {
        // Also keeps ±∞ runs from turning into ∞ − ∞ = NaN.
        return a;
    }
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

impl Default for QuantileSummary {
    fn default() -> Self {
        Self::new()
    }
}

impl QuantileSummary {
    /// An empty summary with α = [`DEFAULT_ALPHA`] and [`DEFAULT_EXACT_LIMIT`].
    pub fn new() -> Self {
        Self::with_accuracy(DEFAULT_ALPHA, DEFAULT_EXACT_LIMIT)
    }

    /// An empty summary with relative accuracy `alpha` on the sketch path, exact up to
    /// `exact_limit` distinct values. Only summaries with the same settings can be merged.
    ///
    /// # Panics
    ///
    /// If `alpha` is not in [1e-6, 0.5] (below that, bucket indices could overflow an i32;
    /// above, the sketch is useless).
    pub fn with_accuracy(alpha: f64, exact_limit: u64) -> Self {
        assert!(
            (1e-6..=0.5).contains(&alpha),
            "relative accuracy {alpha} is not in [1e-6, 0.5]"
        );
        QuantileSummary {
            alpha,
            exact_limit,
            repr: Repr::Exact(Counts::default()),
        }
    }

    /// Relative accuracy α of the sketch path.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Number of distinct values kept exactly before the summary becomes a sketch.
    pub fn exact_limit(&self) -> u64 {
        self.exact_limit
    }

    /// Number of (non-NaN) values summarised.
    pub fn count(&self) -> u64 {
        match &self.repr {
            Repr::Exact(c) => c.count(),
            Repr::Sketch(s) => s.count,
        }
    }

    /// Whether no value was summarised.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Whether answers are exact (at most `exact_limit` distinct values), not sketch estimates.
    pub fn is_exact(&self) -> bool {
        matches!(self.repr, Repr::Exact(_))
    }

    /// The smallest value (exact on both paths), if any.
    pub fn min(&self) -> Option<f64> {
        match &self.repr {
            Repr::Exact(c) => c.values.first().copied(),
            Repr::Sketch(s) => Some(s.min),
        }
    }

    /// The largest value (exact on both paths), if any.
    pub fn max(&self) -> Option<f64> {
        match &self.repr {
            Repr::Exact(c) => c.values.last().copied(),
            Repr::Sketch(s) => Some(s.max),
        }
    }

    /// The value of 0-based rank `r` in sorted order (exact, or within α relative on the
    /// sketch path); `None` if `r ≥ count`.
    pub fn value_at_rank(&self, r: u64) -> Option<f64> {
        if r >= self.count() {
            return None;
        }
        Some(match &self.repr {
            Repr::Exact(c) => c.at_rank(r),
            Repr::Sketch(s) => s.at_rank(Mapping::new(self.alpha), r),
        })
    }

    /// The q-quantile by linear interpolation between closest ranks (numpy's default, see the
    /// [module docs](self) for the definition and the sketch path's bound); `None` if empty.
    ///
    /// # Panics
    ///
    /// If `q` is not in [0, 1].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        assert!((0.0..=1.0).contains(&q), "quantile {q} is not in [0, 1]");
        let n = self.count();
        if n == 0 {
            return None;
        }
        let h = (n - 1) as f64 * q;
        let lo = (h.floor() as u64).min(n - 1);
        let f = h - lo as f64;
        let a = self.value_at_rank(lo)?;
        if f == 0.0 {
            return Some(a);
        }
        let b = self.value_at_rank((lo + 1).min(n - 1))?;
        Some(lerp(a, b, f))
    }

    /// Adds the values of `other`. Both must have the same α and exact limit.
    pub fn merge(&mut self, other: &QuantileSummary) -> Result<(), QuantileError> {
        if self.alpha.to_bits() != other.alpha.to_bits() || self.exact_limit != other.exact_limit {
            return Err(QuantileError {
                message: format!(
                    "cannot merge a quantile summary with α = {}, exact limit {} into one with α = {}, exact limit {}",
                    other.alpha, other.exact_limit, self.alpha, self.exact_limit
                ),
            });
        }
        match &other.repr {
            Repr::Exact(b) => self.absorb(b),
            Repr::Sketch(o) => self.make_sketch().absorb(o),
        }
        Ok(())
    }

    /// Adds counted values: exact while the distinct values stay within the limit.
    fn absorb(&mut self, counts: &Counts) {
        let m = Mapping::new(self.alpha);
        match &mut self.repr {
            Repr::Sketch(sketch) => counts.pairs().for_each(|(x, n)| sketch.add(m, x, n)),
            Repr::Exact(exact) => {
                *exact = exact.merged(counts);
                if exact.values.len() as u64 > self.exact_limit {
                    self.make_sketch();
                }
            }
        }
    }

    /// Turns the summary into a sketch (if it is not one) and returns it.
    fn make_sketch(&mut self) -> &mut Sketch {
        if let Repr::Exact(counts) = &self.repr {
            let m = Mapping::new(self.alpha);
            let mut sketch = Sketch::empty();
            counts.pairs().for_each(|(x, n)| sketch.add(m, x, n));
            self.repr = Repr::Sketch(sketch);
        }
        match &mut self.repr {
            Repr::Sketch(s) => s,
            Repr::Exact(_) => unreachable!("converted above"),
        }
    }
}

impl Extend<f64> for QuantileSummary {
    /// Adds values, ignoring NaN. Add a batch at a time: the exact path sorts once per call.
    fn extend<I: IntoIterator<Item = f64>>(&mut self, values: I) {
        match &mut self.repr {
            Repr::Sketch(sketch) => {
                let m = Mapping::new(self.alpha);
                values
                    .into_iter()
                    .filter(|x| !x.is_nan())
                    .for_each(|x| sketch.add(m, x, 1));
            }
            Repr::Exact(_) => self.absorb(&Counts::of(values.into_iter())),
        }
    }
}

impl FromIterator<f64> for QuantileSummary {
    /// A summary with the default settings of the given values (NaN ignored).
    fn from_iter<I: IntoIterator<Item = f64>>(values: I) -> Self {
        let mut s = QuantileSummary::new();
        s.extend(values);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: the test owns its generator, so the data is the same everywhere.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// numpy's `quantile(values, q)` with method "linear", the textbook way.
    fn reference(sorted: &[f64], q: f64) -> f64 {
        let h = (sorted.len() - 1) as f64 * q;
        let lo = h.floor() as usize;
        let f = h - lo as f64;
        if f == 0.0 || sorted[lo] == sorted[lo + 1] {
            sorted[lo]
        } else {
            sorted[lo] + f * (sorted[lo + 1] - sorted[lo])
        }
    }

    fn summary_of(values: &[f64], alpha: f64, limit: u64) -> QuantileSummary {
        let mut s = QuantileSummary::with_accuracy(alpha, limit);
        s.extend(values.iter().copied());
        s
    }

    /// The values split into `parts` chunks (summarised separately), merged as a balanced tree
    /// or left to right, in the order given.
    fn merged(values: &[f64], parts: usize, balanced: bool, limit: u64) -> QuantileSummary {
        let chunk = values.len().div_ceil(parts).max(1);
        let mut states: Vec<QuantileSummary> = values
            .chunks(chunk)
            .map(|c| summary_of(c, DEFAULT_ALPHA, limit))
            .collect();
        if balanced {
            while states.len() > 1 {
                let mut next = Vec::new();
                for pair in states.chunks(2) {
                    let mut a = pair[0].clone();
                    if let Some(b) = pair.get(1) {
                        a.merge(b).unwrap();
                    }
                    next.push(a);
                }
                states = next;
            }
            states.pop().unwrap()
        } else {
            let mut acc = QuantileSummary::with_accuracy(DEFAULT_ALPHA, limit);
            for s in states.iter().rev() {
                acc.merge(s).unwrap();
            }
            acc
        }
    }

    #[test]
    fn exact_path_is_numpy_linear() {
        let s: QuantileSummary = [4.0, 1.0, f64::NAN, 3.0, 2.0].into_iter().collect();
        assert!(s.is_exact());
        assert_eq!(s.count(), 4);
        // numpy.quantile([1, 2, 3, 4], [0, .25, .5, .75, 1]) = [1, 1.75, 2.5, 3.25, 4]
        for (q, want) in [
            (0.0, 1.0),
            (0.25, 1.75),
            (0.5, 2.5),
            (0.75, 3.25),
            (1.0, 4.0),
        ] {
            assert_eq!(s.quantile(q), Some(want), "q = {q}");
        }
        assert_eq!(s.value_at_rank(1), Some(2.0));
        assert_eq!(s.value_at_rank(4), None);
        assert_eq!((s.min(), s.max()), (Some(1.0), Some(4.0)));
        let one: QuantileSummary = [7.0].into_iter().collect();
        assert_eq!(one.quantile(0.3), Some(7.0));
        let none = QuantileSummary::new();
        assert!(none.is_empty() && none.quantile(0.5).is_none() && none.min().is_none());
        let inf: QuantileSummary = [f64::INFINITY, f64::INFINITY, 1.0].into_iter().collect();
        assert_eq!(inf.quantile(0.9), Some(f64::INFINITY));
    }

    #[test]
    fn exact_merges_do_not_depend_on_the_tree() {
        let mut rng = Rng(7);
        let values: Vec<f64> = (0..5000)
            .map(|_| ((rng.next() % 200) as f64 - 100.0) / 8.0)
            .collect();
        let one = summary_of(&values, DEFAULT_ALPHA, DEFAULT_EXACT_LIMIT);
        for parts in [2, 7, 64] {
            for balanced in [true, false] {
                assert_eq!(merged(&values, parts, balanced, DEFAULT_EXACT_LIMIT), one);
            }
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for k in 0..=100 {
            let q = k as f64 / 100.0;
            let (got, want) = (one.quantile(q).unwrap(), reference(&sorted, q));
            assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{q}");
        }
    }

    #[test]
    fn switching_to_the_sketch_does_not_depend_on_the_tree() {
        let mut rng = Rng(11);
        let values: Vec<f64> = (0..5000).map(|_| rng.unit() * 1e4 - 3e3).collect();
        // Every partial state is exact (at most 1000 values): the switch happens in a merge.
        let one = summary_of(&values, DEFAULT_ALPHA, 1000);
        assert!(!one.is_exact());
        for parts in [5, 7, 64] {
            for balanced in [true, false] {
                let m = merged(&values, parts, balanced, 1000);
                assert_eq!(m, one, "{parts} parts, balanced {balanced}");
            }
        }
        // Exactly at the limit it stays exact; one more value makes it a sketch.
        let at = merged(&values[..1000], 3, true, 1000);
        assert!(at.is_exact());
        let mut over = at.clone();
        over.extend([1.0]);
        assert!(!over.is_exact());
        let wrong = QuantileSummary::with_accuracy(0.01, 1000);
        assert!(over.merge(&wrong).unwrap_err().to_string().contains("α"));
    }

    #[test]
    fn many_values_with_few_distinct_ones_stay_exact() {
        // 300 000 integers in 0..50: three times the limit in values, but 50 distinct ones.
        let mut rng = Rng(5);
        let values: Vec<f64> = (0..300_000).map(|_| (rng.next() % 50) as f64).collect();
        let one = summary_of(&values, DEFAULT_ALPHA, DEFAULT_EXACT_LIMIT);
        assert!(one.is_exact());
        assert_eq!(one.count(), 300_000);
        for parts in [2, 7, 64] {
            for balanced in [true, false] {
                assert_eq!(merged(&values, parts, balanced, DEFAULT_EXACT_LIMIT), one);
            }
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for k in 0..=1000 {
            let q = k as f64 / 1000.0;
            assert_eq!(one.quantile(q), Some(reference(&sorted, q)), "q = {q}");
        }
        for r in (0..300_000).step_by(7919).chain([299_999]) {
            assert_eq!(one.value_at_rank(r), Some(sorted[r as usize]), "rank {r}");
        }
        // −0 and +0 are two values, counted apart, and the minimum is −0.
        let zeros: QuantileSummary = [0.0, -0.0, 0.0].into_iter().collect();
        assert_eq!(zeros.min().map(f64::to_bits), Some((-0.0f64).to_bits()));
        assert_eq!(
            zeros.value_at_rank(1).map(f64::to_bits),
            Some(0f64.to_bits())
        );
    }

    #[test]
    fn the_switch_to_the_sketch_counts_distinct_values() {
        // 20 distinct values, each 100 times: exact at a limit of 20, a sketch at 19.
        let values: Vec<f64> = (0..2000).map(|i| f64::from(i % 20) * 1.5).collect();
        assert!(summary_of(&values, DEFAULT_ALPHA, 20).is_exact());
        let sketched = summary_of(&values, DEFAULT_ALPHA, 19);
        assert!(!sketched.is_exact());
        // The same buckets as a sketch of every value, whatever the merge tree.
        for parts in [3, 64] {
            for balanced in [true, false] {
                assert_eq!(merged(&values, parts, balanced, 19), sketched);
            }
        }
        let mut direct = QuantileSummary::with_accuracy(DEFAULT_ALPHA, 0);
        direct.extend(values.iter().copied());
        assert_eq!(direct.count(), sketched.count());
        for k in 0..=20 {
            let q = f64::from(k) / 20.0;
            assert_eq!(direct.quantile(q), sketched.quantile(q), "q = {q}");
        }
    }

    /// Checks both documented bounds of the sketch path on `values` (sorted here).
    fn check_bounds(name: &str, values: &mut [f64]) {
        let s = summary_of(values, DEFAULT_ALPHA, DEFAULT_EXACT_LIMIT);
        assert!(!s.is_exact(), "{name}: the sketch path must be tested");
        values.sort_by(f64::total_cmp);
        let n = values.len() as u64;
        let alpha = DEFAULT_ALPHA;
        // Floating-point rounding allowance, as documented.
        let slack = 1e-12;
        let mut worst: f64 = 0.0;
        let ranks = (0..n).step_by(997).chain([1, n / 2, n - 2, n - 1]);
        for r in ranks {
            let (got, want) = (s.value_at_rank(r).unwrap(), values[r as usize]);
            if want.is_infinite() {
                assert_eq!(got, want, "{name}: rank {r}: infinities are exact");
                continue;
            }
            let err = (got - want).abs();
            assert!(
                err <= (alpha + slack) * want.abs(),
                "{name}: rank {r}: {got} vs {want}"
            );
            if want != 0.0 {
                worst = worst.max(err / want.abs());
            }
        }
        assert_eq!(s.value_at_rank(0), Some(values[0]), "{name}: min is exact");
        assert_eq!(s.value_at_rank(n - 1), Some(values[n as usize - 1]));
        for k in 0..=1000 {
            let q = k as f64 / 1000.0;
            let h = (n - 1) as f64 * q;
            let lo = h.floor() as usize;
            let f = h - lo as f64;
            let hi = (lo + 1).min(values.len() - 1);
            let (got, want) = (s.quantile(q).unwrap(), reference(values, q));
            if want.is_infinite() {
                assert_eq!(got, want, "{name}: q = {q}");
                continue;
            }
            let bound = if f == 0.0 {
                alpha * values[lo].abs()
            } else {
                alpha * ((1.0 - f) * values[lo].abs() + f * values[hi].abs())
            };
            assert!(
                (got - want).abs() <= bound + slack * want.abs().max(values[hi].abs()),
                "{name}: q = {q}: {got} vs {want} (bound {bound})"
            );
        }
        eprintln!("{name}: worst relative error at a rank {worst:.3e} (α = {alpha})");
        // The bound is not loose: the worst rank comes close to it.
        assert!(worst > alpha * 0.5, "{name}: worst relative error {worst}");
    }

    #[test]
    fn sketch_error_is_within_the_documented_bound_on_millions_of_values() {
        let n = 1_200_000;
        let mut rng = Rng(2024);
        let mut uniform: Vec<f64> = (0..n).map(|_| rng.unit() * 2000.0 - 1000.0).collect();
        check_bounds("uniform ±1000", &mut uniform);
        // Twelve orders of magnitude, positive only.
        let mut log_uniform: Vec<f64> = (0..n)
            .map(|_| 10f64.powf(rng.unit() * 12.0 - 3.0))
            .collect();
        check_bounds("log-uniform 1e-3..1e9", &mut log_uniform);
        // Heavy tails on both sides, zeros, duplicates, infinities and extremes.
        let mut mixed: Vec<f64> = (0..n)
            .map(|i| match i % 10 {
                0 => 0.0,
                1 => (rng.next() % 50) as f64,
                2 if i % 100_000 == 2 => f64::INFINITY,
                3 if i % 100_000 == 3 => f64::NEG_INFINITY,
                4 if i % 200_000 == 4 => f64::MAX,
                5 if i % 200_000 == 5 => -f64::MAX,
                6 if i % 200_000 == 6 => f64::MIN_POSITIVE,
                _ => {
                    let sign = if rng.next().is_multiple_of(2) {
                        1.0
                    } else {
                        -1.0
                    };
                    sign * (rng.unit() * 40.0 - 10.0).exp()
                }
            })
            .collect();
        check_bounds("mixed", &mut mixed);
    }

    #[test]
    fn sketch_merges_do_not_depend_on_the_tree_on_a_million_values() {
        let mut rng = Rng(99);
        let values: Vec<f64> = (0..1_000_000)
            .map(|_| {
                let sign = if rng.next().is_multiple_of(3) {
                    -1.0
                } else {
                    1.0
                };
                sign * (rng.unit() * 30.0 - 5.0).exp()
            })
            .collect();
        let one = summary_of(&values, DEFAULT_ALPHA, DEFAULT_EXACT_LIMIT);
        let mut reversed = values.clone();
        reversed.reverse();
        assert_eq!(
            summary_of(&reversed, DEFAULT_ALPHA, DEFAULT_EXACT_LIMIT),
            one
        );
        for parts in [2, 7, 64] {
            for balanced in [true, false] {
                let m = merged(&values, parts, balanced, DEFAULT_EXACT_LIMIT);
                assert_eq!(m, one, "{parts} parts");
                for k in 0..=20 {
                    let q = k as f64 / 20.0;
                    assert_eq!(
                        m.quantile(q).map(f64::to_bits),
                        one.quantile(q).map(f64::to_bits)
                    );
                }
            }
        }
        // Through the SDK's state encoding too.
        let bytes = postcard::to_allocvec(&one).unwrap();
        assert_eq!(
            postcard::from_bytes::<QuantileSummary>(&bytes).unwrap(),
            one
        );
    }
}
