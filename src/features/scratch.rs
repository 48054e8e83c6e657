//! The scratch file of a large materialization: the partial timelines written as they are
//! computed, then stored as one version and deleted.
//!
//! In a plaintext store it is a Parquet file under the store's `tmp/`. In an encrypted store
//! (and an `s3://` one) it goes to the system's temporary directory, and for an encrypted
//! store it is **sealed**: an Arrow IPC stream cut into chunks of [`CHUNK`] bytes, each
//! encrypted with AES-256-GCM under a key drawn for this file alone and held only in memory
//! (never written anywhere), so the file cannot be read by anyone, not even by Ward after
//! the process ends. A chunk on disk is a flag byte (1 on the last chunk), its length (u32,
//! big-endian) and the ciphertext with its tag; its nonce is its index, and the flag is the
//! additional data, so a reordered, cut or altered file is an error, never garbage.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use parquet::arrow::ArrowWriter;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::timeline;
use crate::error::{Error, Result};
use crate::store::{PutOptions, PutOutcome, Store};

/// The plaintext bytes of a sealed chunk (the last one may be shorter).
pub(crate) const CHUNK: usize = 1 << 20;

/// A scratch file being written.
pub(crate) struct Scratch {
    path: tempfile::TempPath,
    writer: Writer,
}

enum Writer {
    Parquet(Box<ArrowWriter<File>>),
    Sealed(Box<StreamWriter<SealedWriter<BufWriter<File>>>>),
}

/// A written scratch file, ready to be stored.
pub(crate) struct Finished {
    path: tempfile::TempPath,
    key: Option<Box<LessSafeKey>>,
}

impl Scratch {
    /// A new scratch file in the store's scratch directory: sealed when the store is
    /// encrypted.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be created; [`Error::Internal`] if no key can be
    /// drawn.
    pub(crate) fn create(store: &Store) -> Result<Scratch> {
        let dir = store.scratch_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let sealed = store.encryption().is_some();
        let file = tempfile::Builder::new()
            .prefix("timeline-")
            .suffix(if sealed { ".sealed" } else { ".parquet" })
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        let (handle, path) = file.into_parts();
        let schema = timeline::timeline_schema();
        let writer = if sealed {
            let sealing = SealedWriter::new(BufWriter::new(handle), ephemeral_key()?);
            Writer::Sealed(Box::new(StreamWriter::try_new(sealing, &schema)?))
        } else {
            Writer::Parquet(Box::new(
                ArrowWriter::try_new(handle, schema, None).map_err(|e| parquet_err(&path, e))?,
            ))
        };
        Ok(Scratch { path, writer })
    }

    /// Appends `batch`.
    ///
    /// # Errors
    /// The writer's error, naming the file.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.writer {
            Writer::Parquet(w) => w.write(batch).map_err(|e| parquet_err(&self.path, e)),
            Writer::Sealed(w) => w.write(batch).map_err(|e| arrow_err(&self.path, e)),
        }
    }

    /// Closes the file.
    ///
    /// # Errors
    /// The writer's error, naming the file.
    pub(crate) fn finish(self) -> Result<Finished> {
        let Scratch { path, writer } = self;
        let key = match writer {
            Writer::Parquet(w) => {
                w.close().map_err(|e| parquet_err(&path, e))?;
                None
            }
            Writer::Sealed(w) => {
                let sealing = w.into_inner().map_err(|e| arrow_err(&path, e))?;
                let (mut file, key) = sealing.finish().map_err(|e| Error::io(&path, e))?;
                file.flush().map_err(|e| Error::io(&path, e))?;
                Some(Box::new(key))
            }
        };
        Ok(Finished { path, key })
    }
}

impl Finished {
    /// Stores the file's rows, which come in bucket order, as a bucketed version
    /// ([`Store::put_bucketed_stream`]: one group in memory at a time); then the file is
    /// deleted.
    ///
    /// # Errors
    /// As [`Finished::put`].
    pub(crate) async fn put_bucketed(
        self,
        store: &Store,
        bucketing: crate::hash::bucketed::Bucketing,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        let path = self.path.to_path_buf();
        let reader: Box<dyn RecordBatchReader + Send> = match self.key {
            None => {
                let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
                Box::new(
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .and_then(|b| b.build())
                        .map_err(|e| parquet_err(&path, e))?,
                )
            }
            Some(key) => {
                let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
                Box::new(
                    StreamReader::try_new(
                        SealedReader::new(BufReader::new(file), *key, path.clone()),
                        None,
                    )
                    .map_err(|e| arrow_err(&path, e))?,
                )
            }
        };
        let schema = reader.schema();
        let batches = reader.map(|b| b.map_err(|e| arrow_err(&path, e)));
        let out = store
            .put_bucketed_stream(schema, batches, bucketing, opts)
            .await;
        drop(self.path);
        out
    }
}

fn parquet_err(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::Parquet {
        path: path.to_path_buf(),
        source: e,
    }
}

fn arrow_err(path: &Path, e: arrow::error::ArrowError) -> Error {
    Error::Store {
        path: path.to_path_buf(),
        reason: format!("scratch file: {e}"),
    }
}

/// A key for one scratch file, from the system's random source.
fn ephemeral_key() -> Result<LessSafeKey> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Internal("no random bytes for a scratch key".into()))?;
    let key = UnboundKey::new(&AES_256_GCM, &bytes)
        .map_err(|_| Error::Internal("AES-256-GCM key".into()))?;
    Ok(LessSafeKey::new(key))
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[NONCE_LEN - 8..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals what is written to it in chunks (see the module documentation).
pub(crate) struct SealedWriter<W: Write> {
    inner: W,
    key: LessSafeKey,
    buf: Vec<u8>,
    index: u64,
}

impl<W: Write> SealedWriter<W> {
    pub(crate) fn new(inner: W, key: LessSafeKey) -> Self {
        SealedWriter {
            inner,
            key,
            buf: Vec::with_capacity(CHUNK),
            index: 0,
        }
    }

    fn seal(&mut self, len: usize, last: bool) -> std::io::Result<()> {
        let mut chunk: Vec<u8> = self.buf.drain(..len).collect();
        let flag = [u8::from(last)];
        self.key
            .seal_in_place_append_tag(nonce(self.index), Aad::from(flag), &mut chunk)
            .map_err(|_| std::io::Error::other("sealing a scratch chunk failed"))?;
        self.index += 1;
        let n = u32::try_from(chunk.len()).map_err(std::io::Error::other)?;
        self.inner.write_all(&flag)?;
        self.inner.write_all(&n.to_be_bytes())?;
        self.inner.write_all(&chunk)
    }

    /// Seals the rest as the last chunk; the inner writer and the key.
    pub(crate) fn finish(mut self) -> std::io::Result<(W, LessSafeKey)> {
        let len = self.buf.len();
        self.seal(len, true)?;
        self.inner.flush()?;
        Ok((self.inner, self.key))
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= CHUNK {
            self.seal(CHUNK, false)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Opens what [`SealedWriter`] wrote, chunk by chunk.
pub(crate) struct SealedReader<R: Read> {
    inner: R,
    key: LessSafeKey,
    path: std::path::PathBuf,
    plain: Vec<u8>,
    pos: usize,
    index: u64,
    done: bool,
}

impl<R: Read> SealedReader<R> {
    pub(crate) fn new(inner: R, key: LessSafeKey, path: std::path::PathBuf) -> Self {
        SealedReader {
            inner,
            key,
            path,
            plain: Vec::new(),
            pos: 0,
            index: 0,
            done: false,
        }
    }

    fn bad(&self, what: &str) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: scratch chunk {}: {what}",
                self.path.display(),
                self.index
            ),
        )
    }

    fn next_chunk(&mut self) -> std::io::Result<()> {
        let mut head = [0u8; 5];
        self.inner
            .read_exact(&mut head)
            .map_err(|_| self.bad("cut short (no last chunk)"))?;
        let last = match head[0] {
            0 => false,
            1 => true,
            _ => return Err(self.bad("not a sealed chunk")),
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > CHUNK + AES_256_GCM.tag_len() {
            return Err(self.bad("too long"));
        }
        let mut chunk = vec![0u8; len];
        self.inner
            .read_exact(&mut chunk)
            .map_err(|_| self.bad("cut short"))?;
        let plain_len = self
            .key
            .open_in_place(nonce(self.index), Aad::from([head[0]]), &mut chunk)
            .map_err(|_| self.bad("does not open (altered, reordered or another key)"))?
            .len();
        chunk.truncate(plain_len);
        self.plain = chunk;
        self.pos = 0;
        self.index += 1;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for SealedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(data: &[u8]) -> (Vec<u8>, LessSafeKey) {
        let mut w = SealedWriter::new(Vec::new(), ephemeral_key().expect("key"));
        // In uneven pieces, across chunk boundaries.
        for piece in data.chunks(70_001) {
            w.write_all(piece).expect("write");
        }
        w.finish().expect("finish")
    }

    fn open(bytes: &[u8], key: LessSafeKey) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        SealedReader::new(bytes, key, "scratch".into()).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn sealed_scratch_round_trips_and_hides_its_bytes() {
        let data: Vec<u8> = b"patient P0000042 hemoglobin 13.1 "
            .iter()
            .copied()
            .cycle()
            .take(3 * CHUNK + 12_345)
            .collect();
        let (bytes, key) = sealed(&data);
        assert!(!bytes.windows(16).any(|w| w == b"patient P0000042"));
        assert_eq!(open(&bytes, key).expect("open"), data);
        let (empty, key) = sealed(b"");
        assert_eq!(open(&empty, key).expect("open"), b"");
    }

    #[test]
    fn a_cut_altered_or_foreign_scratch_file_is_an_error() {
        let data = vec![7u8; 2 * CHUNK + 10];
        let (bytes, key) = sealed(&data);
        let (_, other) = sealed(b"x");
        // Cut after the first chunk: no last chunk.
        let first = 5 + CHUNK + AES_256_GCM.tag_len();
        let err = open(&bytes[..first], key).expect_err("cut");
        assert!(err.to_string().contains("cut short"), "{err}");
        let (bytes, key) = sealed(&data);
        let mut altered = bytes.clone();
        altered[100] ^= 1;
        let err = open(&altered, key).expect_err("altered");
        assert!(err.to_string().contains("does not open"), "{err}");
        let err = open(&bytes, other).expect_err("another key");
        assert!(err.to_string().contains("does not open"), "{err}");
    }
}
