//! Addresses in the analysed process, kept apart from file offsets and sizes by a newtype.

use serde::{Serialize, Serializer};
use std::fmt;

/// A virtual address in the analysed process.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Addr(pub u64);

impl Addr {
    pub const NULL: Addr = Addr(0);

    #[inline]
    pub fn get(self) -> u64 {
        self.0
    }
    #[inline]
    pub fn is_null(self) -> bool {
        self.0 == 0
    }
    /// `self + off`, or `None` on overflow (addresses come from untrusted data).
    #[inline]
    pub fn checked_add(self, off: u64) -> Option<Addr> {
        self.0.checked_add(off).map(Addr)
    }
    #[inline]
    pub fn checked_sub(self, off: u64) -> Option<Addr> {
        self.0.checked_sub(off).map(Addr)
    }
    /// Wrapping add, for offsets that are known to be small and inside a validated range.
    #[inline]
    pub fn wrapping_add(self, off: u64) -> Addr {
        Addr(self.0.wrapping_add(off))
    }
    /// Distance from `base` to `self` (`self - base`), `None` when `self < base`.
    #[inline]
    pub fn offset_from(self, base: Addr) -> Option<u64> {
        self.0.checked_sub(base.0)
    }
    #[inline]
    pub fn align_down(self, align: u64) -> Addr {
        debug_assert!(align.is_power_of_two());
        Addr(self.0 & !(align - 1))
    }
    #[inline]
    pub fn align_up(self, align: u64) -> Option<Addr> {
        debug_assert!(align.is_power_of_two());
        self.0
            .checked_add(align - 1)
            .map(|v| Addr(v & !(align - 1)))
    }
    #[inline]
    pub fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({:#x})", self.0)
    }
}

impl fmt::LowerHex for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// Addresses are written as hex strings in JSON ("0x7f..."): 64-bit values do not fit
/// a JSON number exactly in every consumer.
impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A half-open address range `[start, end)`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, schemars::JsonSchema,
)]
pub struct Range {
    pub start: Addr,
    pub end: Addr,
}

impl Range {
    pub fn new(start: Addr, end: Addr) -> Range {
        Range { start, end }
    }
    #[inline]
    pub fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }
    #[inline]
    pub fn contains(&self, a: Addr) -> bool {
        a >= self.start && a < self.end
    }
    pub fn intersect(&self, o: &Range) -> Option<Range> {
        let s = self.start.max(o.start);
        let e = self.end.min(o.end);
        (s < e).then_some(Range::new(s, e))
    }
}

/// Addresses are `"0x..."` strings in JSON.
impl schemars::JsonSchema for Addr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Addr".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^0x[0-9a-f]+$"})
    }
}
