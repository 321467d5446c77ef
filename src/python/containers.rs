//! The builtin containers whose contents live outside the object, and the subclasses that
//! keep their base's struct: which layout an instance starts with, and the walks of
//! `collections.deque`'s blocks and `collections.OrderedDict`'s nodes (model `deque`,
//! `odict`). The census charges the blocks and nodes to their container, the graph reads the
//! items and keys they hold as references, and both use these walks.
//!
//! Every walk is bounded by the container's own count read from the core: a damaged link
//! or count ends it early, never loops.

use crate::models::{DequeLayout, OdictLayout};
use crate::python::objects::{TypeInfo, Typer};

/// Largest item count walked (as `edges::MAX_ITEMS`): a garbage count reads no more.
const MAX_ITEMS: u64 = 1 << 27;

/// The builtin layout an instance starts with: its type's own, else its base's (a subclass
/// of list, dict, set, deque or OrderedDict keeps the base's struct at the same offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Plain,
    List,
    Dict,
    Set,
    Deque,
    /// An OrderedDict: a dict too.
    Odict,
}

impl Layout {
    /// A dict's table (ma_keys, ma_values) at the start: dict, its subclasses, OrderedDict.
    pub fn is_dict(self) -> bool {
        matches!(self, Layout::Dict | Layout::Odict)
    }
}

/// Bytes of `PySetObject` before a subclass's own fields, on the GIL build (fill, used,
/// mask, table, hash, finger, smalltable[PySet_MINSIZE = 8] of {key, hash}, weakreflist:
/// Include/setobject.h 3.8-3.14; `set.__basicsize__` 200 there, 216 on 3.13t).
pub const SET_BASICSIZE: u64 = 0xc8;

/// Brent's cycle check on a walk of links read from the core: `seen(x)` is true once the
/// walk comes back to a node it passed (a damaged list linked in a loop), with O(1) memory.
struct Cycle {
    mark: u64,
    power: u64,
    steps: u64,
}

impl Cycle {
    fn new() -> Cycle {
        Cycle {
            mark: 0,
            power: 1,
            steps: 0,
        }
    }

    fn seen(&mut self, x: u64) -> bool {
        if x == self.mark {
            return true;
        }
        self.steps += 1;
        if self.steps == self.power {
            self.mark = x;
            self.power *= 2;
            self.steps = 0;
        }
        false
    }
}

/// A buffer an object owns, as the census names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    ListItems,
    DictKeys,
    DictValues,
    SetTable,
    /// A native row (`Typer::native_rows`).
    Native(u32),
}

impl Typer<'_> {
    /// The buffers the census charges to the object at `o` (of type `ti`): its layout's
    /// tables (a subclass of list, dict or set owns its base's), then `native_owned`'s.
    /// `f(pointer, buffer)`, pointers non-zero. The census and the trace views use it alike.
    pub fn owned_buffers(&self, o: u64, ti: &TypeInfo, mut f: impl FnMut(u64, Buffer)) {
        let mut at = |off: u64, b: Buffer| {
            if let Some(p) = self.u64_at(self.field(o, off)).filter(|&p| p != 0) {
                f(p, b)
            }
        };
        match ti.layout {
            Layout::List => at(0x18, Buffer::ListItems),
            Layout::Dict | Layout::Odict => {
                at(0x20, Buffer::DictKeys);
                at(0x28, Buffer::DictValues);
            }
            // Not the small table inside the object.
            Layout::Set => {
                if let Some(t) = self
                    .u64_at(self.field(o, 0x28))
                    .filter(|&t| t != 0 && t != self.field(o, 0x40))
                {
                    f(t, Buffer::SetTable)
                }
            }
            Layout::Deque | Layout::Plain => {}
        }
        self.native_owned(o, ti, &mut |p, r| f(p, Buffer::Native(r)));
    }

    /// What an object owns on native rows: a deque's blocks, an OrderedDict's nodes and
    /// node array, and the type's native buffers (a bytearray's or array's data):
    /// `f(pointer, row)`, pointers non-zero.
    pub fn native_owned(&self, o: u64, ti: &TypeInfo, f: &mut dyn FnMut(u64, u32)) {
        let om = self.layout();
        match (ti.layout, &om.deque, &om.odict) {
            (Layout::Deque, Some(d), _) => {
                let row = self.deque_row();
                self.deque_blocks(o, d, &mut |b| f(b, row))
            }
            (Layout::Odict, _, Some(od)) => {
                let row = self.odict_row();
                self.odict_nodes(o, od, &mut |n, _| f(n, row))
            }
            _ => {}
        }
        for &(off, row) in &ti.native {
            if let Some(p) = self.u64_at(o.wrapping_add(off)).filter(|&p| p != 0) {
                f(p, row);
            }
        }
    }

    /// The deque's items in order: `f(item, index)`.
    pub fn deque_items(&self, o: u64, d: &DequeLayout, f: &mut dyn FnMut(u64, u64)) {
        let Some((mut block, mut idx, n)) = self.deque_start(o, d) else {
            return;
        };
        let link = 8 + 8 * d.block_len;
        let mut cycle = Cycle::new();
        cycle.seen(block);
        let mut i = 0;
        while i < n {
            if idx >= d.block_len {
                match self.u64_at(block.wrapping_add(link)) {
                    Some(b) if b != 0 && !cycle.seen(b) => block = b,
                    _ => return,
                }
                idx = 0;
            }
            let take = (d.block_len - idx).min(n - i);
            let Some(bytes) = self.bytes_at(block.wrapping_add(8 + 8 * idx), take * 8) else {
                return;
            };
            for (k, w) in bytes.chunks_exact(8).enumerate() {
                f(u64::from_le_bytes(w.try_into().unwrap()), i + k as u64);
            }
            i += take;
            idx += take;
        }
    }

    /// The deque's blocks, the ones in use left to right and then (3.11+) its free ones.
    pub fn deque_blocks(&self, o: u64, d: &DequeLayout, f: &mut dyn FnMut(u64)) {
        if let Some((mut block, idx, n)) = self.deque_start(o, d) {
            // The blocks holding items leftindex .. leftindex + n - 1; an empty deque keeps one.
            let blocks = (idx + n).div_ceil(d.block_len).max(1);
            let right = self.u64_at(o.wrapping_add(d.right_block)).unwrap_or(0);
            let link = 8 + 8 * d.block_len;
            let mut cycle = Cycle::new();
            for _ in 0..blocks {
                if block == 0 || cycle.seen(block) {
                    break;
                }
                f(block);
                if block == right {
                    break;
                }
                block = self.u64_at(block.wrapping_add(link)).unwrap_or(0);
            }
        }
        if let (Some(c), Some(b)) = (d.free_count, d.free_blocks) {
            let n = self.u64_at(o.wrapping_add(c)).unwrap_or(0);
            if n <= d.free_max {
                for i in 0..n {
                    if let Some(p) = self.u64_at(b.wrapping_add(o).wrapping_add(8 * i)) {
                        if p != 0 {
                            f(p);
                        }
                    }
                }
            }
        }
    }

    /// (left block, left index, item count), or None for a deque whose fields are damaged.
    fn deque_start(&self, o: u64, d: &DequeLayout) -> Option<(u64, u64, u64)> {
        let n = self.u64_at(self.field(o, 0x10))?;
        let block = self.u64_at(o.wrapping_add(d.left_block))?;
        let idx = self.u64_at(o.wrapping_add(d.left_index))?;
        (n <= MAX_ITEMS && idx < d.block_len && block != 0).then_some((block, idx, n))
    }

    /// The OrderedDict's nodes in order: `f(node, key)`, at most its dict's `ma_used`; then
    /// its node array (`od_fast_nodes`) as a node with no key (0).
    pub fn odict_nodes(&self, o: u64, od: &OdictLayout, f: &mut dyn FnMut(u64, u64)) {
        let used = self.u64_at(self.field(o, 0x10)).unwrap_or(0).min(MAX_ITEMS);
        let mut node = self.u64_at(o.wrapping_add(od.first)).unwrap_or(0);
        let mut cycle = Cycle::new();
        for _ in 0..used {
            if node == 0 || cycle.seen(node) {
                break;
            }
            let Some(key) = self.u64_at(node.wrapping_add(od.node_key)) else {
                break;
            };
            f(node, key);
            node = self.u64_at(node.wrapping_add(od.node_next)).unwrap_or(0);
        }
        if let Some(a) = self
            .u64_at(o.wrapping_add(od.fast_nodes))
            .filter(|&a| a != 0)
        {
            f(a, 0);
        }
    }
}
