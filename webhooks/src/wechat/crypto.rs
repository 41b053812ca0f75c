//! Signatures and "safe mode" message encryption for the WeChat Official
//! Account and WeCom callback protocols.
//!
//! Both platforms share one scheme. A callback URL proves it belongs to us by
//! answering a signed challenge; in safe (and compatible) mode every message
//! body carries an `Encrypt` element holding AES-256-CBC ciphertext, and a
//! `msg_signature` query parameter signs that ciphertext together with the
//! shared token, a timestamp and a nonce.
//!
//! The ciphertext is not authenticated by itself: always check the signature
//! (with [`MessageCrypto::verify_msg_signature`], or use
//! [`MessageCrypto::decrypt_verified`]) before decrypting, so that nobody
//! without the token can probe the decryption for padding errors.

use std::fmt;

use aes::Aes256;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use cbc::cipher::array::Array;
use cbc::cipher::{BlockModeDecrypt as _, BlockModeEncrypt as _, KeyIvInit as _};
use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq as _;

use super::xml::push_cdata;

type Aes256CbcEnc = cbc::Encryptor<Aes256>;
type Aes256CbcDec = cbc::Decryptor<Aes256>;

/// The number of characters in an EncodingAESKey as the platforms issue it.
const ENCODING_AES_KEY_CHARS: usize = 43;
/// The size of the AES-256 key that the EncodingAESKey encodes.
const AES_KEY_BYTES: usize = 32;
/// The size of an AES block, which every ciphertext must be a multiple of.
const AES_BLOCK_BYTES: usize = 16;
/// The platforms pad plaintexts with PKCS#7 to 32-byte blocks rather than to
/// the AES block size, so valid pad bytes run from 1 to 32.
const PAD_BLOCK_BYTES: usize = 32;
/// The size of the random prefix that starts every plaintext.
const RANDOM_PREFIX_BYTES: usize = 16;
/// The size of the big-endian message length that follows the random prefix.
const LENGTH_FIELD_BYTES: usize = 4;

/// Decodes the 43-character EncodingAESKey.
///
/// 43 base64 characters carry 258 bits, two more than the 256-bit key, and
/// the platforms generate keys without zeroing those two bits (the published
/// test key ends in `R`, which has one of them set). A strict decoder would
/// reject real keys, so trailing bits are allowed here.
const ENCODING_AES_KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Why a key could not be loaded, or why a message could not be decrypted.
///
/// No message ever includes the EncodingAESKey or the token.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The token is empty, which would let anyone compute valid signatures.
    #[error("the WeChat token must not be empty")]
    EmptyToken,
    /// The EncodingAESKey does not have the 43 characters the platforms issue.
    #[error("the EncodingAESKey must be {ENCODING_AES_KEY_CHARS} characters long, got {len}")]
    InvalidKeyLength {
        /// The number of characters that were supplied.
        len: usize,
    },
    /// The EncodingAESKey has 43 characters but is not base64 for a 32-byte key.
    ///
    /// The decoder's own error is left out on purpose: it quotes the
    /// offending character, which is part of the key.
    #[error("the EncodingAESKey is not base64 for a {AES_KEY_BYTES}-byte AES key")]
    InvalidKeyEncoding,
    /// The `msg_signature` does not match the token, timestamp, nonce and ciphertext.
    #[error("the message signature does not match")]
    InvalidSignature,
    /// The encrypted text is not valid base64.
    #[error("the encrypted message is not valid base64")]
    InvalidBase64(#[source] base64::DecodeError),
    /// The ciphertext is empty or not a whole number of AES blocks.
    #[error("the ciphertext is {len} bytes, not a positive multiple of {AES_BLOCK_BYTES}")]
    InvalidCiphertextLength {
        /// The length of the decoded ciphertext in bytes.
        len: usize,
    },
    /// The decrypted data does not end in valid PKCS#7 padding, which means
    /// it was tampered with or encrypted with another key.
    #[error("the decrypted message has invalid padding")]
    InvalidPadding,
    /// The decrypted data is too short for its length field, or the length
    /// field points past the end of the data.
    #[error("the decrypted message's length field is out of range")]
    MessageLengthOutOfRange,
    /// The decrypted message is not UTF-8 text.
    #[error("the decrypted message is not valid UTF-8")]
    InvalidUtf8,
    /// The message was encrypted for another app id or corp id.
    #[error("the decrypted message is for receive id {found:?}, not ours")]
    ReceiveIdMismatch {
        /// The receive id found in the message (lossily decoded if not UTF-8).
        found: String,
    },
}

/// Computes the signature WeChat sends when it verifies a callback URL and
/// with every plaintext-mode message: the lowercase hex SHA-1 of the token,
/// timestamp and nonce, sorted and concatenated.
pub fn url_signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sorted_sha1_hex([token, timestamp, nonce])
}

/// Checks a URL-verification `signature` in constant time.
pub fn verify_url_signature(token: &str, timestamp: &str, nonce: &str, signature: &str) -> bool {
    constant_time_eq(&url_signature(token, timestamp, nonce), signature)
}

/// The token, AES key and receive id of one Official Account or WeCom app,
/// ready to sign, verify, encrypt and decrypt its messages.
///
/// The receive id is the app id for an Official Account and the corp id for
/// a WeCom app (WeCom's third-party suites use the suite id, and some use an
/// empty string, so an empty receive id is accepted).
#[derive(Clone)]
pub struct MessageCrypto {
    token: String,
    key: [u8; AES_KEY_BYTES],
    receive_id: String,
}

impl fmt::Debug for MessageCrypto {
    // The token and the key are secrets, and Debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCrypto")
            .field("receive_id", &self.receive_id)
            .finish_non_exhaustive()
    }
}

impl MessageCrypto {
    /// Loads an app's credentials.
    ///
    /// `encoding_aes_key` is the 43-character EncodingAESKey from the
    /// platform's console; it must decode to a 32-byte AES key. The token
    /// must not be empty.
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, CryptoError> {
        if token.is_empty() {
            return Err(CryptoError::EmptyToken);
        }
        let key_chars = encoding_aes_key.chars().count();
        if key_chars != ENCODING_AES_KEY_CHARS {
            return Err(CryptoError::InvalidKeyLength { len: key_chars });
        }
        let decoded = ENCODING_AES_KEY_ENGINE
            .decode(encoding_aes_key)
            .map_err(|_| CryptoError::InvalidKeyEncoding)?;
        let key: [u8; AES_KEY_BYTES] = decoded
            .try_into()
            .map_err(|_| CryptoError::InvalidKeyEncoding)?;
        Ok(Self {
            token: token.to_owned(),
            key,
            receive_id: receive_id.to_owned(),
        })
    }

    /// Returns the token that signatures are computed with.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Returns the app id or corp id that messages must be addressed to.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// Computes the `msg_signature` of an encrypted message: the lowercase
    /// hex SHA-1 of the token, timestamp, nonce and ciphertext, sorted and
    /// concatenated.
    pub fn msg_signature(&self, timestamp: &str, nonce: &str, encrypted: &str) -> String {
        sorted_sha1_hex([self.token.as_str(), timestamp, nonce, encrypted])
    }

    /// Checks a `msg_signature` in constant time.
    pub fn verify_msg_signature(
        &self,
        timestamp: &str,
        nonce: &str,
        encrypted: &str,
        signature: &str,
    ) -> bool {
        constant_time_eq(&self.msg_signature(timestamp, nonce, encrypted), signature)
    }

    /// Checks the `msg_signature` and, only if it matches, decrypts the
    /// message. This is the order every caller should follow: it answers
    /// nobody without the token with anything but [`CryptoError::InvalidSignature`].
    ///
    /// WeCom's URL verification is this call on its `echostr`, answered with
    /// the plaintext.
    pub fn decrypt_verified(
        &self,
        timestamp: &str,
        nonce: &str,
        encrypted_base64: &str,
        signature: &str,
    ) -> Result<String, CryptoError> {
        if !self.verify_msg_signature(timestamp, nonce, encrypted_base64, signature) {
            return Err(CryptoError::InvalidSignature);
        }
        self.decrypt(encrypted_base64)
    }

    /// Decrypts the base64 text of an `Encrypt` element (or WeCom's `echostr`)
    /// and returns the message, having checked that it is addressed to our
    /// receive id.
    ///
    /// This does not check the signature; see [`Self::decrypt_verified`].
    pub fn decrypt(&self, encrypted_base64: &str) -> Result<String, CryptoError> {
        let mut data = STANDARD
            .decode(encrypted_base64)
            .map_err(CryptoError::InvalidBase64)?;
        if data.is_empty() || data.len() % AES_BLOCK_BYTES != 0 {
            return Err(CryptoError::InvalidCiphertextLength { len: data.len() });
        }

        let (blocks, _no_partial_block) = Array::slice_as_chunks_mut(data.as_mut_slice());
        Aes256CbcDec::new(&self.key.into(), &self.iv().into()).decrypt_blocks(blocks);

        let unpadded = strip_pkcs7_padding(&data)?;
        let Some((_random, rest)) = unpadded.split_at_checked(RANDOM_PREFIX_BYTES) else {
            return Err(CryptoError::MessageLengthOutOfRange);
        };
        let Some((length_field, rest)) = rest.split_first_chunk::<LENGTH_FIELD_BYTES>() else {
            return Err(CryptoError::MessageLengthOutOfRange);
        };
        let message_len = usize::try_from(u32::from_be_bytes(*length_field))
            .map_err(|_| CryptoError::MessageLengthOutOfRange)?;
        let Some((message, found_receive_id)) = rest.split_at_checked(message_len) else {
            return Err(CryptoError::MessageLengthOutOfRange);
        };

        // The receive id is checked before the text so that a message meant
        // for another app is reported as such, whatever it contains.
        if found_receive_id != self.receive_id.as_bytes() {
            return Err(CryptoError::ReceiveIdMismatch {
                found: String::from_utf8_lossy(found_receive_id).into_owned(),
            });
        }
        String::from_utf8(message.to_vec()).map_err(|_| CryptoError::InvalidUtf8)
    }

    /// Encrypts a message for a reply with a fresh random prefix and returns
    /// the base64 ciphertext.
    ///
    /// # Panics
    ///
    /// Panics if `plaintext` is 4 GiB or longer, which the protocol's 32-bit
    /// length field cannot describe (the platforms cap replies far below that).
    pub fn encrypt(&self, plaintext: &str) -> String {
        self.encrypt_with_random(plaintext, rand::random())
    }

    /// Encrypts a message with the given 16-byte random prefix and returns
    /// the base64 ciphertext. The prefix only makes equal replies encrypt
    /// differently; use [`Self::encrypt`] outside tests.
    ///
    /// # Panics
    ///
    /// Panics if `plaintext` is 4 GiB or longer, which the protocol's 32-bit
    /// length field cannot describe (the platforms cap replies far below that).
    pub fn encrypt_with_random(
        &self,
        plaintext: &str,
        random: [u8; RANDOM_PREFIX_BYTES],
    ) -> String {
        let message_len = u32::try_from(plaintext.len())
            .expect("a WeChat message must be shorter than 4 GiB to fit its length field");

        let unpadded_len =
            RANDOM_PREFIX_BYTES + LENGTH_FIELD_BYTES + plaintext.len() + self.receive_id.len();
        // PKCS#7 always adds at least one byte, a whole block when the data
        // already fills its last block.
        let pad_len = PAD_BLOCK_BYTES - unpadded_len % PAD_BLOCK_BYTES;
        // The pad length is 1 to 32, so it fits a byte.
        let pad_byte = pad_len as u8;

        let mut data = Vec::with_capacity(unpadded_len + pad_len);
        data.extend_from_slice(&random);
        data.extend_from_slice(&message_len.to_be_bytes());
        data.extend_from_slice(plaintext.as_bytes());
        data.extend_from_slice(self.receive_id.as_bytes());
        data.resize(unpadded_len + pad_len, pad_byte);

        let (blocks, _no_partial_block) = Array::slice_as_chunks_mut(data.as_mut_slice());
        Aes256CbcEnc::new(&self.key.into(), &self.iv().into()).encrypt_blocks(blocks);
        STANDARD.encode(&data)
    }

    /// Encrypts and signs a passive reply (such as [`super::xml::text_reply`])
    /// and returns the envelope XML to answer the callback with.
    pub fn encrypted_reply(&self, reply_xml: &str, timestamp: &str, nonce: &str) -> String {
        let encrypted = self.encrypt(reply_xml);
        let signature = self.msg_signature(timestamp, nonce, &encrypted);
        reply_envelope(&encrypted, &signature, timestamp, nonce)
    }

    /// The platforms use the first 16 bytes of the key as the CBC IV.
    fn iv(&self) -> [u8; AES_BLOCK_BYTES] {
        let mut iv = [0; AES_BLOCK_BYTES];
        iv.copy_from_slice(&self.key[..AES_BLOCK_BYTES]);
        iv
    }
}

/// Builds the XML envelope of an encrypted reply.
fn reply_envelope(encrypted: &str, signature: &str, timestamp: &str, nonce: &str) -> String {
    let mut xml = String::with_capacity(encrypted.len() + 200);
    xml.push_str("<xml><Encrypt>");
    push_cdata(&mut xml, encrypted);
    xml.push_str("</Encrypt><MsgSignature>");
    push_cdata(&mut xml, signature);
    xml.push_str("</MsgSignature><TimeStamp>");
    // The timestamp is digits in practice; escaping keeps a stray `<` or `&`
    // from breaking the document.
    xml.push_str(&quick_xml::escape::escape(timestamp));
    xml.push_str("</TimeStamp><Nonce>");
    push_cdata(&mut xml, nonce);
    xml.push_str("</Nonce></xml>");
    xml
}

/// Removes PKCS#7 padding to a 32-byte block, requiring a pad byte of 1 to 32
/// repeated as many times as its value.
fn strip_pkcs7_padding(data: &[u8]) -> Result<&[u8], CryptoError> {
    let Some(&pad_byte) = data.last() else {
        return Err(CryptoError::InvalidPadding);
    };
    let pad_len = usize::from(pad_byte);
    if !(1..=PAD_BLOCK_BYTES).contains(&pad_len) || pad_len > data.len() {
        return Err(CryptoError::InvalidPadding);
    }
    let (unpadded, padding) = data.split_at(data.len() - pad_len);
    if padding.iter().any(|&byte| byte != pad_byte) {
        return Err(CryptoError::InvalidPadding);
    }
    Ok(unpadded)
}

/// Sorts the parts, concatenates them and returns their SHA-1 in lowercase hex.
fn sorted_sha1_hex<const N: usize>(mut parts: [&str; N]) -> String {
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Compares two signatures without leaking, through timing, how much of a
/// forged one was right.
fn constant_time_eq(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::xml::{parse_envelope, parse_message};
    use proptest::prelude::*;

    // The WeCom vectors from wechatpy's test suite.
    const TOKEN: &str = "123456";
    const ENCODING_AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    const CORP_ID: &str = "wx49f0ab532d5d035a";
    const TIMESTAMP: &str = "1411525903";
    const NONCE: &str = "461056294";

    const INBOUND_ENVELOPE: &str = "<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>
<Encrypt><![CDATA[RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=]]></Encrypt>
<AgentID><![CDATA[1]]></AgentID>
</xml>";
    const INBOUND_SIGNATURE: &str = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d";

    const REPLY: &str = "<xml>
<MsgType><![CDATA[text]]></MsgType>
<Content><![CDATA[test]]></Content>
<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>
<ToUserName><![CDATA[messense]]></ToUserName>
<AgentID>1</AgentID>
<CreateTime>1411525903</CreateTime>
</xml>";
    const REPLY_RANDOM: [u8; 16] = *b"1234567890123456";
    const REPLY_ENCRYPTED: &str = "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3";
    const REPLY_SIGNATURE: &str = "407518b7649e86ef23978113f92d27afa9296533";

    // WeCom's URL verification vector from the same suite.
    const ECHO_TIMESTAMP: &str = "1411443780";
    const ECHO_NONCE: &str = "437374425";
    const ECHO_SIGNATURE: &str = "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96";
    const ECHO_STR: &str =
        "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q==";

    fn crypto() -> MessageCrypto {
        MessageCrypto::new(TOKEN, ENCODING_AES_KEY, CORP_ID).expect("the test key is valid")
    }

    /// Encrypts raw plaintext bytes, already laid out and padded by the
    /// test, to build deliberately malformed messages.
    fn encrypt_raw(crypto: &MessageCrypto, mut data: Vec<u8>) -> String {
        let (blocks, rest) = Array::slice_as_chunks_mut(data.as_mut_slice());
        assert!(rest.is_empty(), "test data must be whole blocks");
        Aes256CbcEnc::new(&crypto.key.into(), &crypto.iv().into()).encrypt_blocks(blocks);
        STANDARD.encode(&data)
    }

    /// Encrypts a correctly padded plaintext whose length field and body
    /// the test chooses freely.
    fn encrypt_layout(
        crypto: &MessageCrypto,
        length_field: u32,
        message: &[u8],
        receive_id: &[u8],
    ) -> String {
        let mut data = vec![0u8; RANDOM_PREFIX_BYTES];
        data.extend_from_slice(&length_field.to_be_bytes());
        data.extend_from_slice(message);
        data.extend_from_slice(receive_id);
        let pad_len = PAD_BLOCK_BYTES - data.len() % PAD_BLOCK_BYTES;
        data.resize(data.len() + pad_len, pad_len as u8);
        encrypt_raw(crypto, data)
    }

    #[test]
    fn url_signature_matches_the_documented_vector() {
        let signature = url_signature("test", "1410685589", "test");
        assert_eq!(signature, "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff");
        assert!(verify_url_signature(
            "test",
            "1410685589",
            "test",
            &signature
        ));
        assert!(!verify_url_signature(
            "test",
            "1410685589",
            "tesT",
            &signature
        ));
        assert!(!verify_url_signature("test", "1410685589", "test", ""));
        assert!(!verify_url_signature(
            "test",
            "1410685589",
            "test",
            &signature[..39]
        ));
    }

    #[test]
    fn inbound_vector_verifies_and_decrypts() {
        let crypto = crypto();
        let envelope = parse_envelope(INBOUND_ENVELOPE.as_bytes()).expect("envelope parses");
        assert_eq!(envelope.to_user_name.as_deref(), Some(CORP_ID));
        assert!(crypto.verify_msg_signature(
            TIMESTAMP,
            NONCE,
            &envelope.encrypt,
            INBOUND_SIGNATURE
        ));
        assert_eq!(
            crypto.msg_signature(TIMESTAMP, NONCE, &envelope.encrypt),
            INBOUND_SIGNATURE
        );

        let plaintext = crypto
            .decrypt_verified(TIMESTAMP, NONCE, &envelope.encrypt, INBOUND_SIGNATURE)
            .expect("vector decrypts");
        let message = parse_message(plaintext.as_bytes()).expect("decrypted message parses");
        assert_eq!(message.from_user_name, "messense");
        assert_eq!(message.to_user_name, CORP_ID);
        assert_eq!(message.agent_id.as_deref(), Some("1"));
        assert_eq!(
            message.kind,
            crate::wechat::xml::InboundKind::Text {
                content: "test".to_owned()
            }
        );
    }

    #[test]
    fn reply_vector_encrypts_to_the_expected_ciphertext_and_signature() {
        let crypto = crypto();
        let encrypted = crypto.encrypt_with_random(REPLY, REPLY_RANDOM);
        assert_eq!(encrypted, REPLY_ENCRYPTED);
        assert_eq!(
            crypto.msg_signature(TIMESTAMP, NONCE, &encrypted),
            REPLY_SIGNATURE
        );
        assert_eq!(crypto.decrypt(REPLY_ENCRYPTED).expect("decrypts"), REPLY);

        assert_eq!(
            reply_envelope(&encrypted, REPLY_SIGNATURE, TIMESTAMP, NONCE),
            format!(
                "<xml><Encrypt><![CDATA[{REPLY_ENCRYPTED}]]></Encrypt>\
                 <MsgSignature><![CDATA[{REPLY_SIGNATURE}]]></MsgSignature>\
                 <TimeStamp>{TIMESTAMP}</TimeStamp><Nonce><![CDATA[{NONCE}]]></Nonce></xml>"
            )
        );
    }

    #[test]
    fn wecom_url_verification_echostr_decrypts() {
        let crypto = crypto();
        let echo = crypto
            .decrypt_verified(ECHO_TIMESTAMP, ECHO_NONCE, ECHO_STR, ECHO_SIGNATURE)
            .expect("echostr decrypts");
        assert!(!echo.is_empty());

        // wechatpy's negative case: one digit of the nonce changed.
        let forged = crypto.decrypt_verified(ECHO_TIMESTAMP, "437374424", ECHO_STR, ECHO_SIGNATURE);
        assert!(matches!(forged, Err(CryptoError::InvalidSignature)));
    }

    #[test]
    fn encrypted_reply_round_trips_through_the_envelope() {
        let crypto = crypto();
        let envelope_xml = crypto.encrypted_reply(REPLY, TIMESTAMP, NONCE);
        let envelope = parse_envelope(envelope_xml.as_bytes()).expect("envelope parses");
        assert_eq!(envelope.to_user_name, None);

        let signature = crypto.msg_signature(TIMESTAMP, NONCE, &envelope.encrypt);
        assert!(envelope_xml.contains(&format!("<MsgSignature><![CDATA[{signature}]]>")));
        assert_eq!(
            crypto
                .decrypt_verified(TIMESTAMP, NONCE, &envelope.encrypt, &signature)
                .expect("reply decrypts"),
            REPLY
        );
        // A fresh random prefix makes two encryptions of one reply differ.
        assert_ne!(crypto.encrypt(REPLY), crypto.encrypt(REPLY));
    }

    #[test]
    fn a_message_for_another_receive_id_is_rejected() {
        let other =
            MessageCrypto::new(TOKEN, ENCODING_AES_KEY, "wx0000000000000000").expect("valid");
        let result = other.decrypt(REPLY_ENCRYPTED);
        match result {
            Err(CryptoError::ReceiveIdMismatch { found }) => assert_eq!(found, CORP_ID),
            other => panic!("expected a receive id mismatch, got {other:?}"),
        }
    }

    #[test]
    fn a_tampered_last_block_fails_the_padding_check() {
        let crypto = crypto();
        let mut ciphertext = STANDARD.decode(REPLY_ENCRYPTED).expect("base64");
        // Flipping a bit in the second-to-last block scrambles the padding
        // bytes in the last block under CBC.
        let target = ciphertext.len() - AES_BLOCK_BYTES - 1;
        ciphertext[target] ^= 0x01;
        let result = crypto.decrypt(&STANDARD.encode(&ciphertext));
        assert!(
            matches!(result, Err(CryptoError::InvalidPadding)),
            "{result:?}"
        );
    }

    #[test]
    fn malformed_padding_is_rejected() {
        let crypto = crypto();
        // A pad byte of 0, one above 32, and inconsistent pad bytes.
        for last_block in [[0u8; 32], [33u8; 32], {
            let mut block = [4u8; 32];
            block[29] = 3;
            block
        }] {
            let mut data = vec![b'x'; 32];
            data.extend_from_slice(&last_block);
            let result = crypto.decrypt(&encrypt_raw(&crypto, data));
            assert!(
                matches!(result, Err(CryptoError::InvalidPadding)),
                "{result:?}"
            );
        }
    }

    #[test]
    fn a_length_field_past_the_end_is_rejected() {
        let crypto = crypto();
        let claims_too_much = encrypt_layout(&crypto, 1000, b"short", CORP_ID.as_bytes());
        let result = crypto.decrypt(&claims_too_much);
        assert!(
            matches!(result, Err(CryptoError::MessageLengthOutOfRange)),
            "{result:?}"
        );

        // Too short to hold the random prefix and length field at all.
        let result = crypto.decrypt(&encrypt_raw(&crypto, vec![32u8; 32]));
        assert!(
            matches!(result, Err(CryptoError::MessageLengthOutOfRange)),
            "{result:?}"
        );
    }

    #[test]
    fn non_utf8_plaintext_is_rejected() {
        let crypto = crypto();
        let not_utf8 = encrypt_layout(&crypto, 2, &[0xff, 0xfe], CORP_ID.as_bytes());
        let result = crypto.decrypt(&not_utf8);
        assert!(
            matches!(result, Err(CryptoError::InvalidUtf8)),
            "{result:?}"
        );
    }

    #[test]
    fn bad_base64_and_bad_lengths_are_rejected() {
        let crypto = crypto();
        assert!(matches!(
            crypto.decrypt("not base64!"),
            Err(CryptoError::InvalidBase64(_))
        ));
        assert!(matches!(
            crypto.decrypt(""),
            Err(CryptoError::InvalidCiphertextLength { len: 0 })
        ));
        assert!(matches!(
            crypto.decrypt(&STANDARD.encode([0u8; 20])),
            Err(CryptoError::InvalidCiphertextLength { len: 20 })
        ));
    }

    #[test]
    fn keys_of_the_wrong_shape_are_rejected_without_echoing_them() {
        let short = &ENCODING_AES_KEY[..42];
        let error = MessageCrypto::new(TOKEN, short, CORP_ID).expect_err("too short");
        assert!(matches!(error, CryptoError::InvalidKeyLength { len: 42 }));
        assert!(!error.to_string().contains(short));

        let long = format!("{ENCODING_AES_KEY}A");
        assert!(matches!(
            MessageCrypto::new(TOKEN, &long, CORP_ID),
            Err(CryptoError::InvalidKeyLength { len: 44 })
        ));

        let not_base64 = format!("{}!", &ENCODING_AES_KEY[..42]);
        let error = MessageCrypto::new(TOKEN, &not_base64, CORP_ID).expect_err("bad char");
        assert!(matches!(error, CryptoError::InvalidKeyEncoding));
        assert!(!error.to_string().contains(&not_base64[..10]));

        assert!(matches!(
            MessageCrypto::new("", ENCODING_AES_KEY, CORP_ID),
            Err(CryptoError::EmptyToken)
        ));
    }

    #[test]
    fn debug_output_hides_the_secrets() {
        let debug = format!("{:?}", crypto());
        assert!(debug.contains(CORP_ID));
        assert!(!debug.contains(TOKEN));
        assert!(!debug.contains("key"));
    }

    proptest! {
        #[test]
        fn encrypt_then_decrypt_returns_the_plaintext(
            plaintext in any::<String>(),
            random in any::<[u8; 16]>(),
        ) {
            let crypto = crypto();
            let encrypted = crypto.encrypt_with_random(&plaintext, random);
            prop_assert_eq!(crypto.decrypt(&encrypted).expect("round trip"), plaintext);
        }

        #[test]
        fn decrypt_never_panics(input in any::<String>()) {
            let _ = crypto().decrypt(&input);
        }
    }
}
