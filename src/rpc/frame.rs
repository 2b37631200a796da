//! The wire format of server RPC: each frame is a 4-byte big-endian length
//! followed by that many bytes of postcard. Frames are bounded on both sides,
//! so a peer (or anything else that connects) cannot make us allocate more
//! than [`MAX_FRAME`] for one message, and a decode error is an error, never
//! a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame either side accepts. Raft batches are sized to stay far
/// below it (`Tuning::max_payload_entries`, snapshot chunks of 1 MiB).
pub const MAX_FRAME: usize = 64 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// A length prefix beyond the limit: garbage, or a peer we cannot serve.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The socket failed, or closed in the middle of a frame.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a message we understand.
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
}

/// Encodes `msg` as one frame, length prefix included.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(msg, vec![0u8; 4])?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    // `len <= MAX_FRAME` fits in a u32.
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes a frame's body (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(body)?)
}

/// Reads the next frame's body into `buf`. A clean end of stream before a
/// length prefix is [`FrameError::Closed`]; inside a frame it is an I/O error.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_end_of_stream() {
        let mut bytes = encode(&(7u64, "seven".to_string())).unwrap();
        bytes.extend(encode(&(8u64, "eight".to_string())).unwrap());
        let mut r = bytes.as_slice();
        let mut buf = Vec::new();
        read(&mut r, &mut buf).await.unwrap();
        assert_eq!(decode::<(u64, String)>(&buf).unwrap(), (7, "seven".into()));
        read(&mut r, &mut buf).await.unwrap();
        assert_eq!(decode::<(u64, String)>(&buf).unwrap(), (8, "eight".into()));
        assert!(matches!(
            read(&mut r, &mut buf).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn oversized_prefix_is_refused_before_allocating() {
        let bytes = u32::MAX.to_be_bytes();
        let mut r = bytes.as_slice();
        let mut buf = Vec::new();
        assert!(matches!(
            read(&mut r, &mut buf).await,
            Err(FrameError::TooLarge(_))
        ));
        assert!(buf.capacity() < 1024);
    }

    #[tokio::test]
    async fn truncated_frame_is_an_io_error() {
        let mut bytes = encode(&"hello".to_string()).unwrap();
        bytes.truncate(bytes.len() - 2);
        let mut r = bytes.as_slice();
        let mut buf = Vec::new();
        assert!(matches!(
            read(&mut r, &mut buf).await,
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn garbage_bodies_are_errors() {
        for body in [&[][..], &[0xff; 3], &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80]] {
            assert!(decode::<(u64, String)>(body).is_err());
        }
    }
}
