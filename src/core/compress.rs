//! Compressed cores as systemd-coredump stores them (`core.*.zst`, `.lz4`, `.xz`).
//!
//! Recognised by magic bytes (the extension is only a hint), decompressed once into an
//! unnamed temporary file and then memory-mapped like any core: a tens-of-GB core is never
//! held in RAM.

use crate::error::{Error, Result};
use crate::progress::{Progress, Unit};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Lz4,
    Xz,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
            Some(Compression::Lz4)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else {
            None
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Xz => "xz",
        }
    }
}

/// Counts compressed bytes consumed, for the progress bar.
struct CountingReader<'p, R> {
    inner: R,
    phase: Box<dyn crate::progress::Phase + 'p>,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.phase.inc(n as u64);
        Ok(n)
    }
}

/// Decompress `path` into a fresh unnamed temporary file (in `$TMPDIR`) and return it.
pub fn decompress_to_temp(path: &Path, kind: Compression, progress: &dyn Progress) -> Result<File> {
    let input = File::open(path).map_err(|e| Error::io(path, e))?;
    let total = input.metadata().map(|m| m.len()).ok();
    let phase = progress.phase(
        &format!("decompressing {} core", kind.name()),
        total,
        Unit::Bytes,
    );
    let reader = CountingReader {
        inner: BufReader::with_capacity(1 << 20, input),
        phase,
    };
    let mut out = tempfile::tempfile().map_err(|e| {
        Error::Other(format!(
            "cannot create a temporary file to decompress {}: {e} (hint: set TMPDIR to a directory with room for the uncompressed core)",
            path.display()
        ))
    })?;
    let res = {
        let mut w = io::BufWriter::with_capacity(1 << 20, &mut out);
        let r = match kind {
            Compression::Zstd => zstd::stream::read::Decoder::new(reader).and_then(|mut d| {
                // systemd-coredump and `zstd --long` may use windows beyond the default limit.
                d.window_log_max(31)?;
                io::copy(&mut d, &mut w)
            }),
            Compression::Lz4 => io::copy(&mut lz4_flex::frame::FrameDecoder::new(reader), &mut w),
            Compression::Xz => io::copy(&mut liblzma::read::XzDecoder::new(reader), &mut w),
        };
        r.and_then(|n| w.flush().map(|_| n))
    };
    match res {
        Ok(_) => Ok(out),
        Err(e) => Err(Error::bad_core(
            path,
            format!("cannot decompress this {} file: {e}", kind.name()),
        )),
    }
}
