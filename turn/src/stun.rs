//! The STUN wire format (RFC 8489) with the TURN attributes (RFC 8656), and TURN's ChannelData framing.
//!
//! Parsing borrows the datagram and never panics: every input is untrusted. Building appends attributes to a
//! buffer and finishes with MESSAGE-INTEGRITY (HMAC-SHA1 under the long-term key) and FINGERPRINT when asked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The fixed value in every STUN header (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// STUN header length.
pub const HEADER_LEN: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// STUN/TURN methods this server knows.
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types this server reads or writes.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
}

/// The four STUN message classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        }
    }
    fn from_bits(b: u16) -> Class {
        match b & 3 {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// Why bytes are not a STUN message or ChannelData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Fewer bytes than the header or an attribute says.
    #[error("truncated")]
    Truncated,
    /// The first two bits are not 00, or the magic cookie is wrong.
    #[error("not a STUN message")]
    NotStun,
    /// The header's length is not a multiple of 4 or disagrees with the datagram.
    #[error("bad length")]
    BadLength,
    /// FINGERPRINT present but wrong.
    #[error("bad fingerprint")]
    BadFingerprint,
    /// An address attribute with an unknown family or a wrong size.
    #[error("bad address attribute")]
    BadAddress,
    /// A ChannelData channel number outside 0x4000..=0x4FFF.
    #[error("bad channel number")]
    BadChannel,
}

/// One attribute as it appears in a parsed message.
#[derive(Debug, Clone, Copy)]
pub struct RawAttr<'a> {
    pub ty: u16,
    pub value: &'a [u8],
    /// Offset of the attribute's header inside the message.
    offset: usize,
}

/// A parsed STUN message borrowing its datagram.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub method: u16,
    pub class: Class,
    pub transaction_id: [u8; 12],
    raw: &'a [u8],
    attrs: Vec<RawAttr<'a>>,
}

/// Most attributes one message may carry; more is an attack, not a client.
const MAX_ATTRS: usize = 64;

impl<'a> Message<'a> {
    /// Parses one whole STUN message (a datagram, or one frame cut by [`frame_len`]). Attributes after
    /// MESSAGE-INTEGRITY other than FINGERPRINT are ignored, as RFC 8489 §14.5 says.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let ty = u16::from_be_bytes([buf[0], buf[1]]);
        if ty & 0xC000 != 0 || u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return Err(ParseError::NotStun);
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if len & 3 != 0 || HEADER_LEN + len != buf.len() {
            return Err(ParseError::BadLength);
        }
        let method = (ty & 0x000F) | ((ty >> 1) & 0x0070) | ((ty >> 2) & 0x0F80);
        let class = Class::from_bits(((ty >> 4) & 1) | ((ty >> 7) & 2));
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&buf[8..20]);
        let mut attrs = Vec::new();
        let mut at = HEADER_LEN;
        let mut after_integrity = false;
        while at < buf.len() {
            if buf.len() - at < 4 {
                return Err(ParseError::Truncated);
            }
            let aty = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let alen = u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize;
            let end = at + 4 + alen;
            if end > buf.len() {
                return Err(ParseError::Truncated);
            }
            let value = &buf[at + 4..end];
            if aty == attr::FINGERPRINT {
                if alen != 4 || end != buf.len() {
                    return Err(ParseError::BadFingerprint);
                }
                let want = fingerprint(&buf[..at]);
                if u32::from_be_bytes([value[0], value[1], value[2], value[3]]) != want {
                    return Err(ParseError::BadFingerprint);
                }
            } else if !after_integrity {
                if attrs.len() == MAX_ATTRS {
                    return Err(ParseError::BadLength);
                }
                attrs.push(RawAttr { ty: aty, value, offset: at });
                after_integrity = aty == attr::MESSAGE_INTEGRITY;
            }
            at = end + (4 - alen % 4) % 4;
        }
        if at != buf.len() {
            return Err(ParseError::Truncated);
        }
        Ok(Message { method, class, transaction_id, raw: buf, attrs })
    }

    /// The attributes in order (those after MESSAGE-INTEGRITY left out).
    pub fn attrs(&self) -> &[RawAttr<'a>] {
        &self.attrs
    }

    /// The value of the first attribute of type `ty`.
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.attrs.iter().find(|a| a.ty == ty).map(|a| a.value)
    }

    /// A UTF-8 attribute (USERNAME, REALM, NONCE); `None` when absent or not UTF-8.
    pub fn text(&self, ty: u16) -> Option<&'a str> {
        self.get(ty).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A 4-byte integer attribute (LIFETIME).
    pub fn u32_attr(&self, ty: u16) -> Option<u32> {
        self.get(ty).and_then(|v| <[u8; 4]>::try_from(v).ok()).map(u32::from_be_bytes)
    }

    /// CHANNEL-NUMBER.
    pub fn channel_number(&self) -> Option<u16> {
        self.get(attr::CHANNEL_NUMBER).filter(|v| v.len() == 4).map(|v| u16::from_be_bytes([v[0], v[1]]))
    }

    /// REQUESTED-TRANSPORT's protocol number (17 = UDP).
    pub fn requested_transport(&self) -> Option<u8> {
        self.get(attr::REQUESTED_TRANSPORT).filter(|v| v.len() == 4).map(|v| v[0])
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several), decoded.
    pub fn xor_peer_addresses(&self) -> impl Iterator<Item = Result<SocketAddr, ParseError>> + '_ {
        self.attrs
            .iter()
            .filter(|a| a.ty == attr::XOR_PEER_ADDRESS)
            .map(|a| decode_xor_address(a.value, &self.transaction_id))
    }

    /// Decodes an XOR address attribute of type `ty`.
    pub fn xor_address(&self, ty: u16) -> Option<Result<SocketAddr, ParseError>> {
        self.get(ty).map(|v| decode_xor_address(v, &self.transaction_id))
    }

    /// The ERROR-CODE (code, reason) of an error response.
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        let v = self.get(attr::ERROR_CODE).filter(|v| v.len() >= 4)?;
        let code = u16::from(v[2] & 7) * 100 + u16::from(v[3]);
        Some((code, std::str::from_utf8(&v[4..]).unwrap_or("")))
    }

    /// Whether the message carries MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.get(attr::MESSAGE_INTEGRITY).is_some()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1 under `key`, RFC 8489 §14.5). False when absent.
    pub fn check_integrity(&self, key: &[u8]) -> bool {
        let Some(mi) = self.attrs.iter().find(|a| a.ty == attr::MESSAGE_INTEGRITY) else { return false };
        if mi.value.len() != 20 {
            return false;
        }
        // The length field covers everything up to and including MESSAGE-INTEGRITY.
        let len = (mi.offset + 24 - HEADER_LEN) as u16;
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(&self.raw[..2]);
        mac.update(&len.to_be_bytes());
        mac.update(&self.raw[4..mi.offset]);
        mac.verify_slice(mi.value).is_ok()
    }

    /// Comprehension-required attributes (type < 0x8000) this server does not understand (RFC 8489 §7.3.1: a
    /// request with one gets 420).
    pub fn unknown_required(&self) -> Vec<u16> {
        const KNOWN: &[u16] = &[
            attr::MAPPED_ADDRESS,
            attr::USERNAME,
            attr::MESSAGE_INTEGRITY,
            attr::ERROR_CODE,
            attr::CHANNEL_NUMBER,
            attr::LIFETIME,
            attr::XOR_PEER_ADDRESS,
            attr::DATA,
            attr::REALM,
            attr::NONCE,
            attr::XOR_RELAYED_ADDRESS,
            attr::REQUESTED_ADDRESS_FAMILY,
            attr::REQUESTED_TRANSPORT,
            attr::DONT_FRAGMENT,
            attr::MESSAGE_INTEGRITY_SHA256,
            attr::XOR_MAPPED_ADDRESS,
        ];
        self.attrs.iter().map(|a| a.ty).filter(|t| *t < 0x8000 && !KNOWN.contains(t)).collect()
    }
}

/// CRC-32 of everything before FINGERPRINT, whose header length field already covers FINGERPRINT.
fn fingerprint(before: &[u8]) -> u32 {
    CRC32.checksum(before) ^ FINGERPRINT_XOR
}

fn decode_xor_address(v: &[u8], txid: &[u8; 12]) -> Result<SocketAddr, ParseError> {
    if v.len() < 4 {
        return Err(ParseError::BadAddress);
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match (v[1], v.len()) {
        (1, 8) => {
            let mut a = [0u8; 4];
            for i in 0..4 {
                a[i] = v[4 + i] ^ cookie[i];
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        (2, 20) => {
            let mut a = [0u8; 16];
            for i in 0..16 {
                let k = if i < 4 { cookie[i] } else { txid[i - 4] };
                a[i] = v[4 + i] ^ k;
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => Err(ParseError::BadAddress),
    }
}

/// Builds one STUN message.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    transaction_id: [u8; 12],
}

impl MessageBuilder {
    pub fn new(method: u16, class: Class, transaction_id: [u8; 12]) -> MessageBuilder {
        let c = class.bits();
        let ty =
            (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7);
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&ty.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id);
        MessageBuilder { buf, transaction_id }
    }

    /// Appends an attribute (padded to 4 bytes).
    pub fn attr(mut self, ty: u16, value: &[u8]) -> Self {
        self.push(ty, value);
        self
    }

    fn push(&mut self, ty: u16, value: &[u8]) {
        self.buf.extend_from_slice(&ty.to_be_bytes());
        self.buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len() + (4 - value.len() % 4) % 4, 0);
        self.set_len();
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// A 4-byte integer attribute.
    pub fn u32_attr(self, ty: u16, v: u32) -> Self {
        self.attr(ty, &v.to_be_bytes())
    }

    /// An XOR-*-ADDRESS attribute.
    pub fn xor_address(self, ty: u16, addr: SocketAddr) -> Self {
        let cookie = MAGIC_COOKIE.to_be_bytes();
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut v = vec![0u8];
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.push(1);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend(ip.octets().iter().zip(cookie).map(|(a, k)| a ^ k));
            }
            IpAddr::V6(ip) => {
                v.push(2);
                v.extend_from_slice(&port.to_be_bytes());
                let key: Vec<u8> = cookie.iter().chain(self.transaction_id.iter()).copied().collect();
                v.extend(ip.octets().iter().zip(key).map(|(a, k)| a ^ k));
            }
        }
        self.attr(ty, &v)
    }

    /// ERROR-CODE with its reason phrase.
    pub fn error(self, code: u16, reason: &str) -> Self {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    /// The message without MESSAGE-INTEGRITY.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// Appends MESSAGE-INTEGRITY under `key`, then FINGERPRINT.
    pub fn finish_with_integrity(mut self, key: &[u8]) -> Vec<u8> {
        let mi_at = self.buf.len();
        self.push(attr::MESSAGE_INTEGRITY, &[0u8; 20]);
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(&self.buf[..mi_at]);
        let tag = mac.finalize().into_bytes();
        self.buf[mi_at + 4..mi_at + 24].copy_from_slice(&tag);
        self.finish_with_fingerprint()
    }

    /// Appends FINGERPRINT.
    pub fn finish_with_fingerprint(mut self) -> Vec<u8> {
        let fp_at = self.buf.len();
        self.push(attr::FINGERPRINT, &[0u8; 4]);
        let fp = fingerprint(&self.buf[..fp_at]);
        self.buf[fp_at + 4..].copy_from_slice(&fp.to_be_bytes());
        self.buf
    }
}

/// First and last ChannelData channel numbers (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;

/// A ChannelData message: application data on a bound channel, with a 4-byte header instead of STUN's 36+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses one ChannelData message; trailing padding (streams, or a padding UDP sender) is allowed.
    pub fn parse(buf: &'a [u8]) -> Result<ChannelData<'a>, ParseError> {
        if buf.len() < 4 {
            return Err(ParseError::Truncated);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
            return Err(ParseError::BadChannel);
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        let data = buf.get(4..4 + len).ok_or(ParseError::Truncated)?;
        if buf.len() > (4 + len + 3) & !3 {
            return Err(ParseError::BadLength);
        }
        Ok(ChannelData { channel, data })
    }

    /// Encodes; `pad` rounds the length up to 4 bytes (required over TCP/TLS, RFC 8656 §12.5).
    pub fn encode(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + data.len() + 3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        if pad {
            out.resize((out.len() + 3) & !3, 0);
        }
        out
    }
}

/// On a stream transport, the length of the next frame (STUN message or padded ChannelData) starting at
/// `buf[0]`, once at least 4 bytes are there; `None` while fewer are. `Err` when the stream cannot be TURN.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    match buf[0] >> 6 {
        0 => Ok(Some(HEADER_LEN + len)),
        1 => Ok(Some((4 + len + 3) & !3)),
        _ => Err(ParseError::NotStun),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn round_trip_with_integrity_and_fingerprint() {
        let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let peer6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let m = MessageBuilder::new(method::CREATE_PERMISSION, Class::Request, TX)
            .attr(attr::USERNAME, b"alice")
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .xor_address(attr::XOR_PEER_ADDRESS, peer6)
            .finish_with_integrity(b"key");
        let p = Message::parse(&m).unwrap();
        assert_eq!(p.method, method::CREATE_PERMISSION);
        assert_eq!(p.class, Class::Request);
        assert_eq!(p.transaction_id, TX);
        assert_eq!(p.text(attr::USERNAME), Some("alice"));
        assert_eq!(p.xor_peer_addresses().collect::<Vec<_>>(), vec![Ok(peer), Ok(peer6)]);
        assert!(p.check_integrity(b"key"));
        assert!(!p.check_integrity(b"other"));
    }

    #[test]
    fn rfc5769_sample_request_verifies() {
        // RFC 5769 §2.1: a request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY, FINGERPRINT.
        let hex = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.class, Class::Request);
        assert_eq!(m.method, method::BINDING);
        assert_eq!(m.text(attr::USERNAME), Some("evtj:h6vY"));
        assert!(m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let good = MessageBuilder::new(method::BINDING, Class::Request, TX)
            .attr(attr::SOFTWARE, b"x")
            .finish_with_fingerprint();
        assert_eq!(Message::parse(&good[..19]).unwrap_err(), ParseError::Truncated);
        assert_eq!(Message::parse(&good[..good.len() - 4]).unwrap_err(), ParseError::BadLength);
        let mut bad_fp = good.clone();
        *bad_fp.last_mut().unwrap() ^= 1;
        assert_eq!(Message::parse(&bad_fp).unwrap_err(), ParseError::BadFingerprint);
        let mut bad_cookie = good.clone();
        bad_cookie[4] = 0;
        assert_eq!(Message::parse(&bad_cookie).unwrap_err(), ParseError::NotStun);
        // An attribute claiming more bytes than there are.
        let mut long_attr =
            MessageBuilder::new(method::BINDING, Class::Request, TX).attr(attr::SOFTWARE, b"abcd").finish();
        long_attr[22..24].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(Message::parse(&long_attr).unwrap_err(), ParseError::Truncated);
        assert!(ChannelData::parse(&[0x40, 0, 0, 5, 1]).is_err());
        assert_eq!(ChannelData::parse(&[0x30, 0, 0, 0]).unwrap_err(), ParseError::BadChannel);
    }

    #[test]
    fn channel_data_padding_and_stream_framing() {
        let udp = ChannelData::encode(0x4001, b"abcde", false);
        assert_eq!(udp.len(), 9);
        let tcp = ChannelData::encode(0x4001, b"abcde", true);
        assert_eq!(tcp.len(), 12);
        assert_eq!(ChannelData::parse(&udp).unwrap(), ChannelData { channel: 0x4001, data: b"abcde" });
        assert_eq!(ChannelData::parse(&tcp).unwrap().data, b"abcde");
        assert_eq!(frame_len(&tcp), Ok(Some(12)));
        assert_eq!(frame_len(&tcp[..3]), Ok(None));
        let stun = MessageBuilder::new(method::BINDING, Class::Request, TX).finish();
        assert_eq!(frame_len(&stun), Ok(Some(20)));
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Err(ParseError::NotStun));
    }

    #[test]
    fn error_code_round_trip() {
        let m = MessageBuilder::new(method::ALLOCATE, Class::Error, TX).error(486, "Allocation Quota Reached").finish();
        assert_eq!(Message::parse(&m).unwrap().error_code(), Some((486, "Allocation Quota Reached")));
    }
}
