//! A small framed transport over `turmoil::net` TCP: what libp2p's streams are to the
//! production driver, without libp2p (which does not run under turmoil without patches).
//!
//! ```text
//! frame = len:u32 kind:u8 body        (len counts kind and body; big-endian)
//! hello    = kind 1, body: node index u32
//! gossip   = kind 2, body: a sync gossip message
//! request  = kind 3, body: id u64, a sync request
//! response = kind 4, body: id u64, a sync response
//! ping     = kind 5, no body: "this link is alive" (sent when a link is otherwise idle)
//! source   = kind 6, body: a sync gossip head the sender published: its blocks can be
//!            fetched from the sender (what a node's signed `Meridian-Source` says to its hub)
//! dontwant = kind 7, body: a 32-byte gossip id: "I have this message, do not send it to me"
//!            (gossipsub v1.2's IDONTWANT)
//! ihave    = kind 8, body: a 32-byte gossip id: "I have this message" (gossipsub's IHAVE)
//! iwant    = kind 9, body: a 32-byte gossip id: "send me this message" (gossipsub's IWANT)
//! ```
//!
//! turmoil's TCP drops the segments a partition cuts and never retransmits them, so a cut
//! connection stalls forever, much like a real one whose peer vanished. Like libp2p's ping
//! protocol, each side sends a ping every [`PING_INTERVAL`] of idleness and drops a link that
//! has been silent for [`LINK_IDLE_MAX`]; the dialer then dials again.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest frame accepted; a bigger length prefix closes the connection.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// A link with nothing to send sends a ping this often.
pub const PING_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// A link that has received nothing (not even a ping) for this long is dropped.
pub const LINK_IDLE_MAX: std::time::Duration = std::time::Duration::from_millis(2_000);
/// How long a dial (connect and hello) may take.
pub const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1_000);
/// The longest wait between two dials of one peer.
pub const REDIAL_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(1_000);

// A live link must never look idle: several pings fit in the idle limit.
const _: () = assert!(PING_INTERVAL.as_millis() * 3 <= LINK_IDLE_MAX.as_millis());

/// One frame on a simulated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The first frame each side sends: who it is.
    Hello(u32),
    /// A gossip message.
    Gossip(Vec<u8>),
    /// A request with its id.
    Request(u64, Vec<u8>),
    /// The response to the request with this id.
    Response(u64, Vec<u8>),
    /// Keeps an idle link alive.
    Ping,
    /// A head the sender published (a gossip message), sent to its hub: the hub may fetch
    /// the head's blocks from the sender.
    Source(Vec<u8>),
    /// The sender already has the gossip message with this id (`wire::gossip_id`): do not
    /// send it a copy.
    DontWant([u8; 32]),
    /// The sender has the gossip message with this id, for the asking.
    IHave([u8; 32]),
    /// Send the gossip message with this id.
    IWant([u8; 32]),
}

impl Frame {
    /// The frame's bytes, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, id, body): (u8, Option<u64>, &[u8]) = match self {
            Frame::Hello(index) => {
                let mut out = Vec::with_capacity(9);
                out.extend_from_slice(&5u32.to_be_bytes());
                out.push(1);
                out.extend_from_slice(&index.to_be_bytes());
                return out;
            }
            Frame::Ping => return vec![0, 0, 0, 1, 5],
            Frame::DontWant(id) => (7, None, &id[..]),
            Frame::IHave(id) => (8, None, &id[..]),
            Frame::IWant(id) => (9, None, &id[..]),
            Frame::Gossip(body) => (2, None, body),
            Frame::Source(body) => (6, None, body),
            Frame::Request(id, body) => (3, Some(*id), body),
            Frame::Response(id, body) => (4, Some(*id), body),
        };
        let len = 1 + id.map_or(0, |_| 8) + body.len();
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(kind);
        if let Some(id) = id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(body);
        out
    }

    fn decode(bytes: Vec<u8>) -> std::io::Result<Self> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let (&kind, rest) = bytes.split_first().ok_or_else(|| bad("empty frame"))?;
        let gossip_id = |rest: &[u8]| -> std::io::Result<[u8; 32]> {
            rest.try_into().map_err(|_| bad("a gossip id is 32 bytes"))
        };
        let id = |rest: &[u8]| -> std::io::Result<(u64, Vec<u8>)> {
            if rest.len() < 8 {
                return Err(bad("frame too short for its id"));
            }
            let (id, body) = rest.split_at(8);
            let mut raw = [0u8; 8];
            raw.copy_from_slice(id);
            Ok((u64::from_be_bytes(raw), body.to_vec()))
        };
        match kind {
            1 => {
                let raw: [u8; 4] = rest.try_into().map_err(|_| bad("bad hello"))?;
                Ok(Frame::Hello(u32::from_be_bytes(raw)))
            }
            2 => Ok(Frame::Gossip(rest.to_vec())),
            3 => id(rest).map(|(id, body)| Frame::Request(id, body)),
            4 => id(rest).map(|(id, body)| Frame::Response(id, body)),
            5 if rest.is_empty() => Ok(Frame::Ping),
            6 => Ok(Frame::Source(rest.to_vec())),
            7 => Ok(Frame::DontWant(gossip_id(rest)?)),
            8 => Ok(Frame::IHave(gossip_id(rest)?)),
            9 => Ok(Frame::IWant(gossip_id(rest)?)),
            _ => Err(bad("unknown frame kind")),
        }
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream. Returns the bytes read with it.
pub async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<(Frame, usize)>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {FRAME_BYTES_MAX}"),
        ));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(Some((Frame::decode(body)?, 4 + len)))
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    frame: &Frame,
) -> std::io::Result<()> {
    writer.write_all(&frame.encode()).await?;
    writer.flush().await
}

/// Writes the frames `outbox` yields, and a ping whenever nothing has been sent for
/// [`PING_INTERVAL`], until the outbox closes or a write fails.
pub async fn write_frames<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    outbox: &mut tokio::sync::mpsc::UnboundedReceiver<Frame>,
) {
    loop {
        let frame = match tokio::time::timeout(PING_INTERVAL, outbox.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(_) => Frame::Ping,
        };
        if write_frame(writer, &frame).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let frames = [
            Frame::Hello(7),
            Frame::Gossip(b"g".to_vec()),
            Frame::Request(9, b"r".to_vec()),
            Frame::Response(u64::MAX, vec![]),
            Frame::Ping,
            Frame::Source(b"s".to_vec()),
            Frame::DontWant([7; 32]),
            Frame::IHave([8; 32]),
            Frame::IWant([9; 32]),
        ];
        let mut bytes = Vec::new();
        for frame in &frames {
            bytes.extend(frame.encode());
        }
        let mut reader = &bytes[..];
        for frame in &frames {
            let (read, _) = read_frame(&mut reader).await.unwrap().unwrap();
            assert_eq!(&read, frame);
        }
        assert!(read_frame(&mut reader).await.unwrap().is_none());
        let huge = (FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
        assert!(read_frame(&mut &huge[..]).await.is_err());
        let unknown = [0, 0, 0, 1, 9];
        assert!(read_frame(&mut &unknown[..]).await.is_err());
        let ping_with_body = [0, 0, 0, 2, 5, 0];
        assert!(read_frame(&mut &ping_with_body[..]).await.is_err());
        for kind in [7, 8, 9] {
            let short_id = [0, 0, 0, 3, kind, 1, 2];
            assert!(read_frame(&mut &short_id[..]).await.is_err());
        }
    }
}
