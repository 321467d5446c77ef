//! `PyTypeObject` offsets and `tp_flags` bits, one definition for every reader (typing,
//! edges, thread names, the symbol-free scan, ownership). The offsets are identical on
//! 3.8-3.14 up to `tp_vectorcall` on x86_64/aarch64 LP64 (layouts.md §C.3 and §C.6,
//! Include/cpython/object.h `struct _typeobject`); the flags are Include/object.h's
//! `Py_TPFLAGS_*`.

pub const TP_NAME: u64 = 0x18;
pub const TP_BASICSIZE: u64 = 0x20;
pub const TP_ITEMSIZE: u64 = 0x28;
pub const TP_FLAGS: u64 = 0xa8;
pub const TP_WEAKLISTOFFSET: u64 = 0xd0;
pub const TP_MEMBERS: u64 = 0xf0;
pub const TP_BASE: u64 = 0x100;
pub const TP_DICT: u64 = 0x108;
pub const TP_DICTOFFSET: u64 = 0x120;
pub const TP_WEAKLIST: u64 = 0x170;

/// 3.12+ Py_TPFLAGS_INLINE_VALUES (3.11: Py_TPFLAGS_MANAGED_WEAKREF's slot) — read per version.
pub const F_INLINE_VALUES: u64 = 1 << 2;
pub const F_MANAGED_DICT: u64 = 1 << 4;
pub const F_HEAPTYPE: u64 = 1 << 9;
pub const F_READY: u64 = 1 << 12;
pub const F_HAVE_GC: u64 = 1 << 14;
pub const F_LONG_SUBCLASS: u64 = 1 << 24;
pub const F_LIST_SUBCLASS: u64 = 1 << 25;
pub const F_TUPLE_SUBCLASS: u64 = 1 << 26;
pub const F_DICT_SUBCLASS: u64 = 1 << 29;
pub const F_TYPE_SUBCLASS: u64 = 1 << 31;
