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
        decompress_into(reader, kind, &mut w)
    };
    match res {
        Ok(()) => Ok(out),
        Err(Failed::Read(e)) => Err(Error::bad_core(
            path,
            format!("cannot decompress this {} file: {e}", kind.name()),
        )),
        // The core may be fine: the temporary file could not take it (a full disk).
        Err(Failed::Write(e)) => Err(Error::Other(format!(
            "cannot write the decompressed core of {} to a temporary file: {e} (hint: set TMPDIR to a directory with room for the uncompressed core)",
            path.display()
        ))),
    }
}

/// Why decompression stopped: the input (a damaged core) or the output (no room).
#[derive(Debug)]
enum Failed {
    Read(io::Error),
    Write(io::Error),
}

/// A writer that remembers its first error, so a copy's failure can be told apart.
struct Tracked<'w> {
    inner: &'w mut dyn Write,
    error: Option<io::Error>,
}

impl Write for Tracked<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| {
            self.error
                .get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|e| {
            self.error
                .get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
        })
    }
}

fn decompress_into(
    reader: impl Read,
    kind: Compression,
    out: &mut dyn Write,
) -> Result<(), Failed> {
    let mut w = Tracked {
        inner: out,
        error: None,
    };
    let r = match kind {
        Compression::Zstd => zstd::stream::read::Decoder::new(reader).and_then(|mut d| {
            // systemd-coredump and `zstd --long` may use windows beyond the default limit.
            d.window_log_max(31)?;
            io::copy(&mut d, &mut w)
        }),
        Compression::Lz4 => io::copy(&mut lz4_flex::frame::FrameDecoder::new(reader), &mut w),
        Compression::Xz => io::copy(&mut liblzma::read::XzDecoder::new(reader), &mut w),
    };
    let r = r.and_then(|_| w.flush());
    match (r, w.error.take()) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(e)) => Err(Failed::Write(e)),
        (Err(e), None) => Err(Failed::Read(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `room` bytes, then fails as a full disk does.
    struct Full {
        room: usize,
    }
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_not_a_bad_core() {
        let data = vec![7u8; 1 << 20];
        let z = zstd::stream::encode_all(&data[..], 3).unwrap();
        let mut sink = Vec::new();
        assert!(decompress_into(&z[..], Compression::Zstd, &mut sink).is_ok());
        assert_eq!(sink.len(), data.len());
        let r = decompress_into(&z[..], Compression::Zstd, &mut Full { room: 1000 });
        assert!(matches!(r, Err(Failed::Write(_))), "{r:?}");
        let r = decompress_into(&z[..z.len() / 2], Compression::Zstd, &mut Vec::new());
        assert!(matches!(r, Err(Failed::Read(_))), "{r:?}");
    }
}
