//! CAR v1: how snapshots travel as files and HTTP bodies.
//!
//! A CAR file is a varint-prefixed DAG-CBOR header `{version: 1, roots: [commit]}` followed by
//! varint-prefixed sections of `cid ‖ block`. Standard IPLD tooling reads what [`CarWriter`]
//! writes. [`CarReader`] streams: it checks every length against [`Limits`] before allocating,
//! recomputes every block's hash as it goes, and stops at the first bad block.

use std::io::{self, Read, Write};
use std::sync::Arc;

use cid::Cid;

use crate::cbor::{self, MapReader, Value};
use crate::ids::{self, BlockError};

/// A block and its CID, the block shared rather than copied.
pub type SharedBlock = (Cid, Arc<[u8]>);

/// Largest CAR header accepted, in bytes.
pub const HEADER_BYTES_MAX: usize = 4096;

/// Size limits applied to snapshots from outside: CAR files, imports and tree loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most blocks in one CAR file.
    pub blocks_max: usize,
    /// Most bytes in one CAR file, headers included.
    pub car_bytes_max: u64,
    /// Largest single block, in bytes.
    pub block_bytes_max: usize,
    /// Most agents in one registry.
    pub agents_max: usize,
    /// Deepest registry tree, in layers.
    pub tree_depth_max: u32,
}

impl Limits {
    /// The defaults: room for a million agents of up to 64 KiB.
    pub const DEFAULT: Limits = Limits {
        blocks_max: 4_000_000,
        car_bytes_max: 4 * 1024 * 1024 * 1024,
        block_bytes_max: 1024 * 1024,
        agents_max: 1_000_000,
        tree_depth_max: crate::mst::TREE_DEPTH_MAX,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const _: () = assert!(crate::manifest::MANIFEST_BYTES_MAX <= Limits::DEFAULT.block_bytes_max);
const _: () = assert!(Limits::DEFAULT.agents_max < Limits::DEFAULT.blocks_max);

/// Why a CAR stream was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CarError {
    /// Reading or writing failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a header or section.
    #[error("car truncated at byte {offset}")]
    Truncated {
        /// Byte offset where more input was expected.
        offset: u64,
    },
    /// A malformed varint.
    #[error("bad varint at byte {offset}")]
    BadVarint {
        /// Byte offset.
        offset: u64,
    },
    /// The header is not a CAR v1 header with exactly one root.
    #[error("bad car header: {0}")]
    BadHeader(String),
    /// A section's CID cannot be parsed.
    #[error("bad cid in section at byte {offset}: {reason}")]
    BadCid {
        /// Byte offset of the section.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// A block does not hash to its CID.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A block appears twice. Meridian's writers never repeat one; a repeat only pads the
    /// file and inflates what an import reports.
    #[error("block {cid} appears twice in the car")]
    DuplicateBlock {
        /// The repeated block.
        cid: Cid,
    },
    /// A limit was exceeded.
    #[error("car {what} {value} exceeds the limit of {max}")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The limit.
        max: u64,
    },
}

fn write_varint(out: &mut impl Write, mut value: u64) -> io::Result<()> {
    let mut buffer = [0u8; 10];
    let mut len = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buffer[len] = byte;
            len += 1;
            break;
        }
        buffer[len] = byte | 0x80;
        len += 1;
    }
    out.write_all(&buffer[..len])
}

/// Writes a CAR v1 stream with one root.
pub struct CarWriter<W: Write> {
    out: W,
    bytes: u64,
    blocks: u64,
}

impl<W: Write> CarWriter<W> {
    /// Starts a CAR stream whose root is `root`.
    pub fn new(mut out: W, root: &Cid) -> Result<Self, CarError> {
        let header = cbor::encode(&cbor::map([
            ("roots", Value::Array(vec![Value::Link(*root)])),
            ("version", Value::Integer(1)),
        ]));
        write_varint(&mut out, header.len() as u64)?;
        out.write_all(&header)?;
        Ok(Self {
            out,
            bytes: header.len() as u64 + 2,
            blocks: 0,
        })
    }

    /// Appends one block. The hash is checked, so a writer never emits a corrupt file.
    pub fn write_block(&mut self, cid: &Cid, block: &[u8]) -> Result<(), CarError> {
        ids::verify_block(cid, block)?;
        let cid_bytes = cid.to_bytes();
        let len = (cid_bytes.len() + block.len()) as u64;
        write_varint(&mut self.out, len)?;
        self.out.write_all(&cid_bytes)?;
        self.out.write_all(block)?;
        self.bytes += len + 5;
        self.blocks += 1;
        Ok(())
    }

    /// Blocks written so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, CarError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a CAR v1 stream block by block, verifying each block's hash before returning it.
pub struct CarReader<R: Read> {
    input: R,
    root: Cid,
    offset: u64,
    blocks: usize,
    limits: Limits,
    /// The current section; its capacity is reused from block to block.
    section: Vec<u8>,
}

impl<R: Read> CarReader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R, limits: Limits) -> Result<Self, CarError> {
        let mut offset = 0u64;
        let header_len =
            read_varint(&mut input, &mut offset)?.ok_or(CarError::Truncated { offset })?;
        if header_len as usize > HEADER_BYTES_MAX || header_len == 0 {
            return Err(CarError::Limit {
                what: "header bytes",
                value: header_len,
                max: HEADER_BYTES_MAX as u64,
            });
        }
        let mut header = vec![0u8; header_len as usize];
        read_exact(&mut input, &mut header, &mut offset)?;
        let value = cbor::decode(&header).map_err(|e| CarError::BadHeader(e.to_string()))?;
        let mut reader = MapReader::new(value).map_err(|e| CarError::BadHeader(e.to_string()))?;
        let version = reader
            .u64("version")
            .map_err(|e| CarError::BadHeader(e.to_string()))?;
        if version != 1 {
            return Err(CarError::BadHeader(format!(
                "version {version}, expected 1"
            )));
        }
        let roots = reader
            .array("roots")
            .map_err(|e| CarError::BadHeader(e.to_string()))?;
        reader
            .finish()
            .map_err(|e| CarError::BadHeader(e.to_string()))?;
        let root = match roots.as_slice() {
            [Value::Link(cid)] => *cid,
            _ => return Err(CarError::BadHeader("expected exactly one root link".into())),
        };
        Ok(Self {
            input,
            root,
            offset,
            blocks: 0,
            limits,
            section: Vec::new(),
        })
    }

    /// The root CID from the header (a snapshot's commit).
    pub fn root(&self) -> Cid {
        self.root
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// The next verified block, or `None` at the clean end of the stream.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        Ok(self
            .next_section(true)?
            .map(|(cid, cid_len)| (cid, self.section[cid_len..].to_vec())))
    }

    /// [`CarReader::next_block`] as a shared block, copied once out of the reader's buffer.
    pub fn next_shared_block(&mut self) -> Result<Option<SharedBlock>, CarError> {
        self.next_shared_block_with(true)
    }

    /// The next block with every limit checked but its hash not yet: for a caller that hashes
    /// many blocks in parallel ([`crate::snapshot::read_car`]) and then must check every one
    /// with [`ids::verify_block`] before using it.
    pub(crate) fn next_block_unhashed(&mut self) -> Result<Option<SharedBlock>, CarError> {
        self.next_shared_block_with(false)
    }

    fn next_shared_block_with(&mut self, hash: bool) -> Result<Option<SharedBlock>, CarError> {
        Ok(self
            .next_section(hash)?
            .map(|(cid, cid_len)| (cid, Arc::from(&self.section[cid_len..]))))
    }

    /// Reads one section into the reader's buffer (reused, so a stream of blocks costs no
    /// allocation per block here), checks its limits and (if `hash`) its block's hash, and
    /// returns the CID and where the block starts in the buffer.
    fn next_section(&mut self, hash: bool) -> Result<Option<(Cid, usize)>, CarError> {
        let section_offset = self.offset;
        let Some(len) = read_varint(&mut self.input, &mut self.offset)? else {
            return Ok(None);
        };
        self.blocks += 1;
        if self.blocks > self.limits.blocks_max {
            return Err(CarError::Limit {
                what: "blocks",
                value: self.blocks as u64,
                max: self.limits.blocks_max as u64,
            });
        }
        // A section is a CID (at most ~70 bytes for the hashes we accept) plus the block.
        let section_max = self.limits.block_bytes_max as u64 + 128;
        if len > section_max {
            return Err(CarError::Limit {
                what: "section bytes",
                value: len,
                max: section_max,
            });
        }
        if self.offset + len > self.limits.car_bytes_max {
            return Err(CarError::Limit {
                what: "total bytes",
                value: self.offset + len,
                max: self.limits.car_bytes_max,
            });
        }
        self.section.resize(len as usize, 0);
        read_exact(&mut self.input, &mut self.section, &mut self.offset)?;
        let mut cursor = &self.section[..];
        let cid = Cid::read_bytes(&mut cursor).map_err(|error| CarError::BadCid {
            offset: section_offset,
            reason: error.to_string(),
        })?;
        let cid_len = self.section.len() - cursor.len();
        let block = &self.section[cid_len..];
        if block.len() > self.limits.block_bytes_max {
            return Err(CarError::Limit {
                what: "block bytes",
                value: block.len() as u64,
                max: self.limits.block_bytes_max as u64,
            });
        }
        if hash {
            ids::verify_block(&cid, block)?;
        }
        Ok(Some((cid, cid_len)))
    }
}

fn read_exact(input: &mut impl Read, buffer: &mut [u8], offset: &mut u64) -> Result<(), CarError> {
    input.read_exact(buffer).map_err(|error| {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            CarError::Truncated { offset: *offset }
        } else {
            CarError::Io(error)
        }
    })?;
    *offset += buffer.len() as u64;
    Ok(())
}

/// Reads an unsigned LEB128 varint; `None` on a clean end of input before its first byte.
fn read_varint(input: &mut impl Read, offset: &mut u64) -> Result<Option<u64>, CarError> {
    let start = *offset;
    let mut value = 0u64;
    for index in 0..9 {
        let mut byte = [0u8; 1];
        match input.read(&mut byte) {
            Ok(0) if index == 0 => return Ok(None),
            Ok(0) => return Err(CarError::Truncated { offset: *offset }),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {
                return Err(CarError::Io(error));
            }
            Err(error) => return Err(CarError::Io(error)),
        }
        *offset += 1;
        value |= u64::from(byte[0] & 0x7f) << (7 * index);
        if byte[0] & 0x80 == 0 {
            // Minimal form: no trailing zero groups except for the value 0 itself.
            if index > 0 && byte[0] == 0 {
                return Err(CarError::BadVarint { offset: start });
            }
            return Ok(Some(value));
        }
    }
    Err(CarError::BadVarint { offset: start })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Cid, Vec<u8>, Vec<u8>) {
        let block = cbor::encode(&cbor::map([("a", Value::Integer(1))]));
        let cid = ids::dag_cbor_cid(&block);
        let mut writer = CarWriter::new(Vec::new(), &cid).unwrap();
        writer.write_block(&cid, &block).unwrap();
        (cid, block, writer.finish().unwrap())
    }

    #[test]
    fn round_trip() {
        let (cid, block, bytes) = sample();
        let mut reader = CarReader::new(&bytes[..], Limits::DEFAULT).unwrap();
        assert_eq!(reader.root(), cid);
        assert_eq!(reader.next_block().unwrap(), Some((cid, block)));
        assert_eq!(reader.next_block().unwrap(), None);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let (cid, block, bytes) = sample();
        // Cutting exactly after the header leaves a valid CAR with no blocks.
        let header_len = bytes.len() - block.len() - cid.to_bytes().len() - 1;
        for cut in 1..bytes.len() {
            let result = CarReader::new(&bytes[..cut], Limits::DEFAULT)
                .and_then(|mut reader| reader.next_block());
            match result {
                Ok(None) if cut == header_len => {}
                Ok(found) => panic!("cut at {cut} was accepted: {found:?}"),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn oversized_section_refused_before_allocation() {
        let (cid, _, _) = sample();
        let mut bytes = CarWriter::new(Vec::new(), &cid).unwrap().finish().unwrap();
        write_varint(&mut bytes, u64::MAX >> 2).unwrap();
        let mut reader = CarReader::new(&bytes[..], Limits::DEFAULT).unwrap();
        assert!(matches!(reader.next_block(), Err(CarError::Limit { .. })));
    }
}
