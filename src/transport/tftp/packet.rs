//! TFTP datagrams: RFC 1350, with the option extension of RFC 2347 and the
//! blksize (2348), timeout and tsize (2349) and windowsize (7440) options.
//!
//! Only what a read-only server meets: requests and the client's ACK and
//! ERROR are parsed, DATA, OACK and ERROR are written. Parsing never trusts
//! a length or a number it has not checked: every datagram reaching the
//! listener comes from the network.

use std::time::Duration;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// Bytes before the payload of a DATA packet (opcode, block number).
pub const DATA_HEADER: usize = 4;
/// RFC 2348's bounds for blksize.
const BLOCK_SIZES: std::ops::RangeInclusive<u16> = 8..=65464;
/// RFC 2349's bounds for timeout, in seconds.
const TIMEOUTS: std::ops::RangeInclusive<u64> = 1..=255;

/// Why a datagram sent to the listener is not a request we can read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// Shorter than an opcode.
    #[error("truncated packet")]
    Truncated,
    /// A packet of a transfer (DATA, ACK, ERROR, OACK): one that went
    /// astray or came late, for no transfer of the listener's.
    #[error("not a request (opcode {0})")]
    NotARequest(u16),
    /// No TFTP opcode at all.
    #[error("illegal TFTP operation (opcode {0})")]
    UnknownOpcode(u16),
    /// No NUL-terminated file name and mode.
    #[error("malformed request: file name and mode must each end with a NUL")]
    Malformed,
    /// The file name is not UTF-8.
    #[error("malformed request: the file name is not UTF-8")]
    NotUtf8,
    /// A mode other than octet and netascii (`mail` is obsolete).
    #[error("unsupported transfer mode")]
    Mode,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A read of `name`.
    Read(ReadRequest),
    /// A write: deskboot is read-only.
    Write,
}

/// A read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// The file name, as sent.
    pub name: String,
    /// The options the client proposed that we understand.
    pub options: Options,
}

/// Options a client proposed (RFC 2347); `None` where it proposed none or
/// a value out of the RFC's range (which a server may ignore).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// blksize: bytes per DATA block.
    pub block_size: Option<u16>,
    /// timeout: the client's wish for our retransmit timeout.
    pub timeout: Option<Duration>,
    /// tsize: the client wants the file's size in the OACK.
    pub transfer_size: bool,
    /// windowsize: blocks sent before waiting for an ACK.
    pub window_size: Option<u16>,
}

impl Request {
    /// Parses a datagram sent to the listening port.
    pub fn parse(datagram: &[u8]) -> Result<Request, RequestError> {
        let (opcode, body) = split_opcode(datagram).ok_or(RequestError::Truncated)?;
        match opcode {
            RRQ => {}
            WRQ => return Ok(Request::Write),
            DATA | ACK | ERROR | OACK => return Err(RequestError::NotARequest(opcode)),
            other => return Err(RequestError::UnknownOpcode(other)),
        }
        // Fields are NUL-terminated; a request that does not end in one
        // was cut short.
        let fields = body.strip_suffix(&[0]).ok_or(RequestError::Malformed)?;
        let mut fields = fields.split(|&b| b == 0);
        let name = fields.next().ok_or(RequestError::Malformed)?;
        let mode = fields.next().ok_or(RequestError::Malformed)?;
        if name.is_empty() {
            return Err(RequestError::Malformed);
        }
        let name = std::str::from_utf8(name).map_err(|_| RequestError::NotUtf8)?;
        if !mode.eq_ignore_ascii_case(b"octet") && !mode.eq_ignore_ascii_case(b"netascii") {
            return Err(RequestError::Mode);
        }
        let mut options = Options::default();
        while let (Some(option), Some(value)) = (fields.next(), fields.next()) {
            options.propose(option, value);
        }
        Ok(Request::Read(ReadRequest {
            name: name.to_string(),
            options,
        }))
    }
}

impl Options {
    /// Records one proposed option; unknown names and bad values are ignored.
    fn propose(&mut self, option: &[u8], value: &[u8]) {
        let number = || std::str::from_utf8(value).ok()?.parse::<u64>().ok();
        if option.eq_ignore_ascii_case(b"blksize") {
            self.block_size = number()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| BLOCK_SIZES.contains(n));
        } else if option.eq_ignore_ascii_case(b"timeout") {
            self.timeout = number()
                .filter(|n| TIMEOUTS.contains(n))
                .map(Duration::from_secs);
        } else if option.eq_ignore_ascii_case(b"tsize") {
            // A reader sends 0; some clients send junk (atftp: "enable").
            self.transfer_size = number().is_some();
        } else if option.eq_ignore_ascii_case(b"windowsize") {
            self.window_size = number()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|&n| n >= 1);
        }
    }
}

/// What a client sends back during a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// ACK of a block (block 0 acknowledges an OACK).
    Ack(u16),
    /// The client gave up, with its reason.
    Error(String),
}

impl Reply {
    /// Parses a datagram on a transfer's socket; `None` for anything else.
    pub fn parse(datagram: &[u8]) -> Option<Reply> {
        let (opcode, body) = split_opcode(datagram)?;
        match opcode {
            ACK => {
                let block: [u8; 2] = body.get(..2)?.try_into().ok()?;
                Some(Reply::Ack(u16::from_be_bytes(block)))
            }
            ERROR => {
                let message = body.get(2..).unwrap_or_default();
                let message = message.split(|&b| b == 0).next().unwrap_or_default();
                Some(Reply::Error(String::from_utf8_lossy(message).into_owned()))
            }
            _ => None,
        }
    }
}

fn split_opcode(datagram: &[u8]) -> Option<(u16, &[u8])> {
    let (opcode, body) = datagram.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*opcode), body))
}

/// TFTP error codes (RFC 1350, 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: see the message.
    Other = 0,
    /// 1: file not found.
    NotFound = 1,
    /// 2: access violation.
    AccessViolation = 2,
    /// 4: illegal TFTP operation.
    IllegalOperation = 4,
}

/// An ERROR packet.
pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(5 + message.len());
    packet.extend_from_slice(&ERROR.to_be_bytes());
    packet.extend_from_slice(&(code as u16).to_be_bytes());
    packet.extend_from_slice(message.as_bytes());
    packet.push(0);
    packet
}

/// An OACK carrying the options we agreed to, in a fixed order.
pub fn oack(agreed: &[(&str, u64)]) -> Vec<u8> {
    let mut packet = OACK.to_be_bytes().to_vec();
    for (name, value) in agreed {
        packet.extend_from_slice(name.as_bytes());
        packet.push(0);
        packet.extend_from_slice(value.to_string().as_bytes());
        packet.push(0);
    }
    packet
}

/// Writes a DATA packet's header into the start of `packet`, which has room.
pub fn data_header(packet: &mut [u8], block: u16) {
    packet[..2].copy_from_slice(&DATA.to_be_bytes());
    packet[2..DATA_HEADER].copy_from_slice(&block.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(fields: &[&str]) -> Vec<u8> {
        let mut packet = vec![0, 1];
        for field in fields {
            packet.extend_from_slice(field.as_bytes());
            packet.push(0);
        }
        packet
    }

    #[test]
    fn a_plain_read_request() {
        let parsed = Request::parse(&rrq(&["y000000000066.cfg", "octet"]));
        assert_eq!(
            parsed,
            Ok(Request::Read(ReadRequest {
                name: "y000000000066.cfg".into(),
                options: Options::default(),
            }))
        );
    }

    #[test]
    fn options_are_case_insensitive_and_bounded() {
        let Ok(Request::Read(read)) = Request::parse(&rrq(&[
            "a.cfg",
            "NETASCII",
            "BlkSize",
            "1428",
            "tsize",
            "0",
            "timeout",
            "3",
            "windowsize",
            "8",
            "multicast",
            "",
        ])) else {
            panic!("not parsed");
        };
        assert_eq!(
            read.options,
            Options {
                block_size: Some(1428),
                timeout: Some(Duration::from_secs(3)),
                transfer_size: true,
                window_size: Some(8),
            }
        );
        let Ok(Request::Read(read)) = Request::parse(&rrq(&[
            "a.cfg",
            "octet",
            "blksize",
            "7",
            "timeout",
            "0",
            "windowsize",
            "0",
            "tsize",
            "enable",
        ])) else {
            panic!("not parsed");
        };
        assert_eq!(read.options, Options::default(), "out of range: ignored");
    }

    #[test]
    fn malformed_requests_say_why() {
        assert_eq!(Request::parse(&[0]), Err(RequestError::Truncated));
        assert_eq!(Request::parse(&[0, 1, b'x']), Err(RequestError::Malformed));
        assert_eq!(Request::parse(&rrq(&["x"])), Err(RequestError::Malformed));
        assert_eq!(
            Request::parse(&rrq(&["", "octet"])),
            Err(RequestError::Malformed)
        );
        assert_eq!(
            Request::parse(&rrq(&["x", "mail"])),
            Err(RequestError::Mode)
        );
        assert_eq!(
            Request::parse(&[0, 1, 0xff, 0, b'o', 0]),
            Err(RequestError::NotUtf8)
        );
        assert_eq!(
            Request::parse(&[0, 4, 0, 1]),
            Err(RequestError::NotARequest(4))
        );
        assert_eq!(
            Request::parse(&[0, 9, 0, 0]),
            Err(RequestError::UnknownOpcode(9))
        );
        assert_eq!(
            Request::parse(&rrq(&["x", "octet"])[..1]),
            Err(RequestError::Truncated)
        );
        assert_eq!(Request::parse(&[0, 2, b'x', 0]), Ok(Request::Write));
    }

    #[test]
    fn replies() {
        assert_eq!(Reply::parse(&[0, 4, 1, 2]), Some(Reply::Ack(258)));
        assert_eq!(Reply::parse(&[0, 4, 1]), None);
        assert_eq!(
            Reply::parse(b"\x00\x05\x00\x00user abort\x00"),
            Some(Reply::Error("user abort".into()))
        );
        assert_eq!(Reply::parse(&[0, 5]), Some(Reply::Error(String::new())));
        assert_eq!(Reply::parse(&[0, 3, 0, 1, 7]), None);
    }

    #[test]
    fn written_packets() {
        assert_eq!(error(ErrorCode::NotFound, "no"), b"\x00\x05\x00\x01no\x00");
        assert_eq!(
            oack(&[("blksize", 1428), ("tsize", 3000)]),
            b"\x00\x06blksize\x001428\x00tsize\x003000\x00"
        );
        let mut packet = [9u8; 6];
        data_header(&mut packet, 65535);
        assert_eq!(packet, [0, 3, 0xff, 0xff, 9, 9]);
    }
}
