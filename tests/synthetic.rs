//! The parser and address space on the synthetic core: every field lands where it should.

use crate::synth;
use coreheap::image::core::CoreFile;
use coreheap::image::memory::ByteSource;
use coreheap::{Addr, Options, Process};

fn process() -> Process {
    let s = synth::core();
    let core = CoreFile::from_bytes("synthetic", s.bytes).unwrap();
    Process::from_core(core, &Options::default())
}

#[test]
fn threads_signal_and_pid() {
    let p = process();
    let info = coreheap::analysis::info::info(&p);
    assert_eq!(info.pid, Some(synth::PID));
    let tids: Vec<u32> = info.threads.iter().map(|t| t.tid).collect();
    assert_eq!(tids, vec![synth::TID2, synth::PID]);
    let sig = info.signal.as_ref().unwrap();
    assert_eq!((sig.number, sig.tid), (11, Some(synth::TID2)));
    assert_eq!(sig.fault_address, Some(Addr(0xdead)));
    assert_eq!(info.threads[0].thread_pointer, Some(Addr(0x7f00_dead_0000)));
}

#[test]
fn cmdline_comes_from_the_stack() {
    let p = process();
    assert_eq!(
        p.cmdline(),
        vec!["/usr/bin/demo".to_string(), "--flag".to_string()]
    );
}

#[test]
fn reads_span_and_missing_bytes_are_errors() {
    let p = process();
    let mut b = [0u8; 16];
    p.space
        .read(Addr(synth::HEAP + 0x2ff8), &mut b[..8])
        .unwrap();
    assert_eq!(b[0], ((0x2ff8u32) % 251) as u8);
    // Past the heap segment's end: unavailable, not zeros.
    assert!(p
        .space
        .read(Addr(synth::HEAP + 0x2ffc), &mut b[..8])
        .is_err());
    // The library mapping was left out and its file does not exist.
    assert_eq!(p.space.source_of(Addr(synth::LIB)), ByteSource::Unavailable);
    assert!(p.space.read_u64(Addr(synth::LIB)).is_err());
    assert_eq!(p.space.source_of(Addr(synth::HEAP)), ByteSource::Core);
}

#[test]
fn mappings_account_for_every_byte() {
    let p = process();
    let info = coreheap::analysis::info::info(&p);
    let lib = info
        .mappings
        .iter()
        .find(|m| m.path.as_deref() == Some("/nonexistent/libdemo.so"))
        .unwrap();
    assert_eq!(
        (lib.in_core, lib.from_disk, lib.unavailable),
        (0, 0, 0x4000)
    );
    for m in &info.mappings {
        assert_eq!(m.in_core + m.from_disk + m.unavailable, m.size);
    }
}

#[test]
fn truncated_core_is_analysed_with_a_warning() {
    let s = synth::core();
    let cut = s.load_offsets[0] as usize + 0x1800; // in the middle of the heap segment
    let core = CoreFile::from_bytes("cut", s.bytes[..cut].to_vec()).unwrap();
    assert!(core.truncated.is_some());
    let p = Process::from_core(core, &Options::default());
    assert!(p
        .diagnostics
        .iter()
        .any(|d| d.message.contains("truncated")));
    assert!(p.space.read_u64(Addr(synth::HEAP)).is_ok());
    assert!(p.space.read_u64(Addr(synth::HEAP + 0x2000)).is_err());
    let info = coreheap::analysis::info::info(&p);
    assert!(info.truncated);
    assert_eq!(info.pid, Some(synth::PID));
}
