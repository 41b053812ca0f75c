//! The XML of WeChat Official Account and WeCom callbacks: the encrypted
//! envelope, the inbound messages and events, and the passive text reply.
//!
//! Callback bodies are flat documents: a root `<xml>` element whose children
//! each hold one value, nearly always in a CDATA section. They are read here
//! into a map of field names to text and then interpreted, so unknown fields
//! (the platforms add new ones from time to time) are simply ignored.
//!
//! Bodies come from the network, so the reader refuses document type
//! declarations outright: with no DTD there is no way to declare an entity,
//! which rules out external entities (XXE) and entity expansion bombs, and
//! any reference other than the five predefined entities and character
//! references is an error.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use quick_xml::Reader;
use quick_xml::events::{BytesRef, Event as XmlEvent};

/// Why a callback body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// The body is not UTF-8, the only encoding the platforms send.
    #[error("the XML body is not valid UTF-8")]
    NotUtf8,
    /// The body is not well-formed XML.
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// The byte offset where reading stopped.
        position: u64,
        /// What was wrong there.
        message: String,
    },
    /// The body has a `<!DOCTYPE>`, which the platforms never send and which
    /// could declare entities.
    #[error("XML document type declarations are not allowed")]
    DoctypeNotAllowed,
    /// The body refers to an entity other than the five XML predefines.
    #[error("undeclared XML entity &{0};")]
    UnknownEntity(String),
    /// The root element is not `<xml>`.
    #[error("the root element is <{0}>, expected <xml>")]
    UnexpectedRoot(String),
    /// A field appears twice, which makes its value ambiguous.
    #[error("the field <{0}> appears more than once")]
    DuplicateField(String),
    /// A field the message kind requires is absent.
    #[error("the required field <{0}> is missing")]
    MissingField(&'static str),
    /// A numeric field does not hold a finite number.
    #[error("the field <{0}> is not a valid number")]
    InvalidNumber(&'static str),
}

/// The outer document of a safe-mode or compatible-mode callback.
///
/// In safe mode the body holds only `ToUserName` and `Encrypt` (WeCom adds
/// `AgentID`); in compatible mode it also carries the plaintext fields,
/// which are ignored here in favour of the authenticated ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The account the message is for, when the envelope names it.
    pub to_user_name: Option<String>,
    /// The base64 ciphertext, to be checked against `msg_signature` and
    /// decrypted with [`super::crypto::MessageCrypto`].
    pub encrypt: String,
}

/// A message or event pushed to the callback URL.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// Our account: the Official Account's original id, or the WeCom corp id.
    pub to_user_name: String,
    /// The sender's OpenID (Official Account) or UserID (WeCom).
    pub from_user_name: String,
    /// When the message was sent, in Unix seconds.
    pub create_time: i64,
    /// The platform's message id; events usually have none.
    pub msg_id: Option<String>,
    /// The WeCom app the message was sent to; absent for Official Accounts.
    pub agent_id: Option<String>,
    /// What was sent.
    pub kind: InboundKind,
}

/// The kinds of inbound message, by `MsgType`.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundKind {
    /// A text message (`text`).
    Text {
        /// The text the user typed.
        content: String,
    },
    /// A voice message (`voice`).
    Voice {
        /// The media id to download the recording with.
        media_id: String,
        /// The audio format, such as `amr` or `speex`.
        format: Option<String>,
        /// The platform's transcription, when speech recognition is on.
        recognition: Option<String>,
    },
    /// An image (`image`).
    Image {
        /// A link to the picture.
        pic_url: Option<String>,
        /// The media id to download the picture with.
        media_id: String,
    },
    /// A video (`video`).
    Video {
        /// The media id to download the video with.
        media_id: String,
        /// The media id of its thumbnail.
        thumb_media_id: Option<String>,
    },
    /// A short video (`shortvideo`).
    ShortVideo {
        /// The media id to download the video with.
        media_id: String,
        /// The media id of its thumbnail.
        thumb_media_id: Option<String>,
    },
    /// A location the user shared (`location`).
    Location {
        /// The latitude (`Location_X`).
        latitude: f64,
        /// The longitude (`Location_Y`).
        longitude: f64,
        /// The map zoom level.
        scale: Option<f64>,
        /// The place's name or address.
        label: Option<String>,
    },
    /// A shared link (`link`). Title and description are empty when absent.
    Link {
        /// The link's title.
        title: String,
        /// The link's description.
        description: String,
        /// The address linked to.
        url: String,
    },
    /// An event (`event`).
    Event(Event),
    /// A message type this crate does not interpret yet.
    Unknown {
        /// The `MsgType` as sent.
        msg_type: String,
    },
}

/// The events pushed as `MsgType` `event`, by `Event`.
///
/// Event names are matched without regard to case: the Official Account
/// sends `CLICK` where WeCom sends `click`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The user followed the account; a QR-code follow carries the scene in
    /// the event key as `qrscene_…`.
    Subscribe {
        /// The QR-code scene, if any.
        event_key: Option<String>,
    },
    /// The user unfollowed the account.
    Unsubscribe,
    /// A follower scanned a parameterised QR code.
    Scan {
        /// The QR-code scene.
        event_key: Option<String>,
    },
    /// The user tapped a menu button that sends a key.
    Click {
        /// The button's key.
        event_key: String,
    },
    /// The user tapped a menu button that opens a page.
    View {
        /// The page's address (sent as the event key).
        url: String,
    },
    /// The user's location, reported when they open the chat.
    Location {
        /// The latitude.
        latitude: f64,
        /// The longitude.
        longitude: f64,
        /// The accuracy.
        precision: f64,
    },
    /// An event this crate does not interpret yet.
    Other {
        /// The `Event` as sent.
        event: String,
    },
}

impl Event {
    /// Returns the event's name as the Official Account spells it, or as
    /// sent for events this crate does not interpret.
    pub fn name(&self) -> &str {
        match self {
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Scan { .. } => "SCAN",
            Self::Click { .. } => "CLICK",
            Self::View { .. } => "VIEW",
            Self::Location { .. } => "LOCATION",
            Self::Other { event } => event,
        }
    }
}

impl InboundMessage {
    /// Returns a key that is the same for every retry of this message.
    ///
    /// The platforms retry a callback that is not answered in time, and
    /// recommend de-duplicating on `MsgId` for messages and on sender plus
    /// creation time for events, which have no id. The event name is added
    /// because one action can push several events in the same second.
    pub fn dedup_key(&self) -> String {
        if let Some(msg_id) = &self.msg_id {
            return msg_id.clone();
        }
        match &self.kind {
            InboundKind::Event(event) => {
                format!(
                    "{}#{}#{}",
                    self.from_user_name,
                    self.create_time,
                    event.name()
                )
            }
            _ => format!("{}#{}", self.from_user_name, self.create_time),
        }
    }
}

/// Reads the envelope of a safe-mode or compatible-mode callback body.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, XmlError> {
    let fields = Fields::parse(body)?;
    Ok(Envelope {
        to_user_name: fields.optional("ToUserName"),
        encrypt: fields.required("Encrypt")?,
    })
}

/// Reads a plaintext message or event, from a plaintext-mode body or from
/// the decrypted content of an envelope.
///
/// An unknown `MsgType` is returned as [`InboundKind::Unknown`] and an
/// unknown event as [`Event::Other`], so new platform features do not turn
/// into errors.
pub fn parse_message(body: &[u8]) -> Result<InboundMessage, XmlError> {
    let fields = Fields::parse(body)?;
    let to_user_name = fields.required("ToUserName")?;
    let from_user_name = fields.required("FromUserName")?;
    let create_time = fields
        .required("CreateTime")?
        .trim()
        .parse()
        .map_err(|_| XmlError::InvalidNumber("CreateTime"))?;
    // The Official Account spells it MsgId; some WeCom events use MsgID.
    let msg_id = fields
        .optional_trimmed("MsgId")
        .or_else(|| fields.optional_trimmed("MsgID"));
    let agent_id = fields.optional_trimmed("AgentID");

    let msg_type = fields.required("MsgType")?.trim().to_owned();
    let kind = match msg_type.to_ascii_lowercase().as_str() {
        "text" => InboundKind::Text {
            content: fields.required("Content")?,
        },
        "voice" => InboundKind::Voice {
            media_id: fields.required("MediaId")?,
            format: fields.optional("Format"),
            recognition: fields.optional("Recognition"),
        },
        "image" => InboundKind::Image {
            pic_url: fields.optional("PicUrl"),
            media_id: fields.required("MediaId")?,
        },
        "video" => InboundKind::Video {
            media_id: fields.required("MediaId")?,
            thumb_media_id: fields.optional("ThumbMediaId"),
        },
        "shortvideo" => InboundKind::ShortVideo {
            media_id: fields.required("MediaId")?,
            thumb_media_id: fields.optional("ThumbMediaId"),
        },
        "location" => InboundKind::Location {
            latitude: fields.required_f64("Location_X")?,
            longitude: fields.required_f64("Location_Y")?,
            scale: fields.optional_f64("Scale")?,
            label: fields.optional("Label"),
        },
        "link" => InboundKind::Link {
            title: fields.optional("Title").unwrap_or_default(),
            description: fields.optional("Description").unwrap_or_default(),
            url: fields.required("Url")?,
        },
        "event" => InboundKind::Event(parse_event(&fields)?),
        _ => InboundKind::Unknown { msg_type },
    };

    Ok(InboundMessage {
        to_user_name,
        from_user_name,
        create_time,
        msg_id,
        agent_id,
        kind,
    })
}

fn parse_event(fields: &Fields) -> Result<Event, XmlError> {
    let event = fields.required("Event")?.trim().to_owned();
    Ok(match event.to_ascii_lowercase().as_str() {
        "subscribe" => Event::Subscribe {
            event_key: fields.optional("EventKey"),
        },
        "unsubscribe" => Event::Unsubscribe,
        "scan" => Event::Scan {
            event_key: fields.optional("EventKey"),
        },
        "click" => Event::Click {
            event_key: fields.required("EventKey")?,
        },
        "view" => Event::View {
            url: fields.required("EventKey")?,
        },
        "location" => Event::Location {
            latitude: fields.required_f64("Latitude")?,
            longitude: fields.required_f64("Longitude")?,
            precision: fields.required_f64("Precision")?,
        },
        _ => Event::Other { event },
    })
}

/// Builds the passive reply that answers a message with text.
///
/// Every string goes into a CDATA section. A `]]>` inside one would end the
/// section early, so it is split across two sections; a carriage return is
/// written as a character reference between sections, because XML parsers
/// turn a literal one into a line feed; and characters XML 1.0 cannot carry
/// at all (most control characters) are dropped.
pub fn text_reply(to_user: &str, from_user: &str, create_time: i64, content: &str) -> String {
    let mut xml = String::with_capacity(content.len() + to_user.len() + from_user.len() + 200);
    xml.push_str("<xml><ToUserName>");
    push_cdata(&mut xml, to_user);
    xml.push_str("</ToUserName><FromUserName>");
    push_cdata(&mut xml, from_user);
    xml.push_str("</FromUserName><CreateTime>");
    xml.push_str(&create_time.to_string());
    xml.push_str("</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>");
    push_cdata(&mut xml, content);
    xml.push_str("</Content></xml>");
    xml
}

/// Appends `text` as element content in CDATA sections, so that it reads
/// back exactly as given (less any characters XML cannot represent).
pub(crate) fn push_cdata(out: &mut String, text: &str) {
    const OPEN: &str = "<![CDATA[";
    const CLOSE: &str = "]]>";
    out.push_str(OPEN);
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        if rest.starts_with(CLOSE) {
            // `]]` closes this section and `>` opens the next one.
            out.push_str("]]");
            out.push_str(CLOSE);
            out.push_str(OPEN);
            out.push('>');
            rest = &rest[CLOSE.len()..];
            continue;
        }
        if ch == '\r' {
            out.push_str(CLOSE);
            out.push_str("&#13;");
            out.push_str(OPEN);
        } else if is_xml_char(ch) {
            out.push(ch);
        }
        rest = &rest[ch.len_utf8()..];
    }
    out.push_str(CLOSE);
}

/// Whether XML 1.0 allows the character anywhere in a document.
fn is_xml_char(ch: char) -> bool {
    matches!(ch, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The text of each child of the root `<xml>` element, by element name.
struct Fields(HashMap<String, String>);

impl Fields {
    /// Reads a callback body, checking it is a single well-formed `<xml>`
    /// element with no DTD.
    fn parse(body: &[u8]) -> Result<Self, XmlError> {
        let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
        // Some proxies and test tools prepend a byte order mark; it is not
        // content, and left in it would read as text before the root.
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        let mut reader = Reader::from_str(text);
        reader.config_mut().enable_all_checks(true);

        let mut fields = HashMap::new();
        // How many elements are open: 1 inside <xml>, 2 inside a field.
        let mut depth = 0usize;
        let mut root_seen = false;
        let mut field: Option<(String, String)> = None;

        loop {
            let event = reader.read_event().map_err(|error| XmlError::Malformed {
                position: reader.error_position(),
                message: error.to_string(),
            })?;
            let malformed = |message: &str| XmlError::Malformed {
                position: reader.buffer_position(),
                message: message.to_owned(),
            };
            match event {
                XmlEvent::DocType(_) => return Err(XmlError::DoctypeNotAllowed),
                XmlEvent::Start(_) | XmlEvent::Empty(_) if depth == 0 && root_seen => {
                    return Err(malformed("more than one root element"));
                }
                XmlEvent::Start(start) => {
                    let name = start.name().as_ref().to_owned();
                    match depth {
                        0 if name != "xml" => return Err(XmlError::UnexpectedRoot(name)),
                        0 => root_seen = true,
                        1 => field = Some((name, String::new())),
                        // Nested structures (such as a menu's picture list)
                        // are skipped: no field read here lives in them.
                        _ => {}
                    }
                    depth += 1;
                }
                XmlEvent::Empty(start) => {
                    let name = start.name().as_ref().to_owned();
                    match depth {
                        0 if name != "xml" => return Err(XmlError::UnexpectedRoot(name)),
                        0 => root_seen = true,
                        1 => insert_field(&mut fields, name, String::new())?,
                        _ => {}
                    }
                }
                XmlEvent::End(_) => {
                    depth = depth.saturating_sub(1);
                    if depth == 1
                        && let Some((name, value)) = field.take()
                    {
                        insert_field(&mut fields, name, value)?;
                    }
                }
                XmlEvent::Text(text) => {
                    if depth == 0 && !text.trim().is_empty() {
                        return Err(malformed("text outside the root element"));
                    }
                    if depth == 2
                        && let Some((_, value)) = &mut field
                    {
                        value.push_str(&text.xml10_content());
                    }
                }
                XmlEvent::CData(cdata) => {
                    if depth == 0 {
                        return Err(malformed("CDATA outside the root element"));
                    }
                    if depth == 2
                        && let Some((_, value)) = &mut field
                    {
                        value.push_str(&cdata.xml10_content());
                    }
                }
                XmlEvent::GeneralRef(reference) => {
                    let resolved = resolve_reference(&reference, reader.buffer_position())?;
                    if depth == 0 {
                        return Err(malformed("a reference outside the root element"));
                    }
                    if depth == 2
                        && let Some((_, value)) = &mut field
                    {
                        value.push(resolved);
                    }
                }
                XmlEvent::Eof => {
                    if !root_seen {
                        return Err(malformed("no root element"));
                    }
                    if depth != 0 {
                        return Err(malformed("the document ends inside an element"));
                    }
                    return Ok(Self(fields));
                }
                XmlEvent::Comment(_) | XmlEvent::Decl(_) | XmlEvent::PI(_) => {}
            }
        }
    }

    /// Returns a field's text as sent, or `MissingField` if it is absent.
    fn required(&self, name: &'static str) -> Result<String, XmlError> {
        self.0
            .get(name)
            .cloned()
            .ok_or(XmlError::MissingField(name))
    }

    /// Returns a field's text, treating an empty field as absent (the
    /// platforms send `<EventKey><![CDATA[]]></EventKey>` for "no key").
    fn optional(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|value| !value.is_empty()).cloned()
    }

    /// Returns an identifier-like field with surrounding whitespace removed,
    /// treating an empty field as absent.
    fn optional_trimmed(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    }

    fn required_f64(&self, name: &'static str) -> Result<f64, XmlError> {
        let value = self.0.get(name).ok_or(XmlError::MissingField(name))?;
        parse_finite_f64(value, name)
    }

    fn optional_f64(&self, name: &'static str) -> Result<Option<f64>, XmlError> {
        match self.0.get(name).map(|value| value.trim()) {
            None | Some("") => Ok(None),
            Some(value) => parse_finite_f64(value, name).map(Some),
        }
    }
}

fn insert_field(
    fields: &mut HashMap<String, String>,
    name: String,
    value: String,
) -> Result<(), XmlError> {
    match fields.entry(name) {
        Entry::Occupied(entry) => Err(XmlError::DuplicateField(entry.key().clone())),
        Entry::Vacant(entry) => {
            entry.insert(value);
            Ok(())
        }
    }
}

fn parse_finite_f64(value: &str, name: &'static str) -> Result<f64, XmlError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
        .ok_or(XmlError::InvalidNumber(name))
}

/// Resolves a character reference or one of the five predefined entities.
/// No other entity can exist, since document type declarations are refused.
fn resolve_reference(reference: &BytesRef<'_>, position: u64) -> Result<char, XmlError> {
    let invalid_char_ref = || XmlError::Malformed {
        position,
        message: format!("invalid character reference &{};", &**reference),
    };
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(ch)) if is_xml_char(ch) => Ok(ch),
            _ => Err(invalid_char_ref()),
        };
    }
    let predefined = quick_xml::escape::resolve_xml_entity(reference);
    // The predefined entities each stand for a single character.
    match predefined.and_then(|text| text.chars().next()) {
        Some(ch) => Ok(ch),
        None => Err(XmlError::UnknownEntity(
            reference.chars().take(64).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(xml: &str) -> InboundMessage {
        match parse_message(xml.as_bytes()) {
            Ok(message) => message,
            Err(error) => panic!("sample should parse: {error}\n{xml}"),
        }
    }

    fn event_of(xml: &str) -> Event {
        match parse(xml).kind {
            InboundKind::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    // The samples below are written as in the platforms' documentation,
    // whitespace included.

    #[test]
    fn parses_a_text_message() {
        let message = parse(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[fromUser]]></FromUserName>
  <CreateTime>1348831860</CreateTime>
  <MsgType><![CDATA[text]]></MsgType>
  <Content><![CDATA[this is a test]]></Content>
  <MsgId>1234567890123456</MsgId>
  <MsgDataId>xxxx</MsgDataId>
  <Idx>xxxx</Idx>
</xml>",
        );
        assert_eq!(
            message,
            InboundMessage {
                to_user_name: "toUser".to_owned(),
                from_user_name: "fromUser".to_owned(),
                create_time: 1_348_831_860,
                msg_id: Some("1234567890123456".to_owned()),
                agent_id: None,
                kind: InboundKind::Text {
                    content: "this is a test".to_owned()
                },
            }
        );
        assert_eq!(message.dedup_key(), "1234567890123456");
    }

    #[test]
    fn parses_an_image_message() {
        let message = parse(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[fromUser]]></FromUserName>
  <CreateTime>1348831860</CreateTime>
  <MsgType><![CDATA[image]]></MsgType>
  <PicUrl><![CDATA[this is a url]]></PicUrl>
  <MediaId><![CDATA[media_id]]></MediaId>
  <MsgId>1234567890123456</MsgId>
</xml>",
        );
        assert_eq!(
            message.kind,
            InboundKind::Image {
                pic_url: Some("this is a url".to_owned()),
                media_id: "media_id".to_owned()
            }
        );
    }

    #[test]
    fn parses_a_voice_message_with_recognition() {
        let message = parse(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[fromUser]]></FromUserName>
  <CreateTime>1357290913</CreateTime>
  <MsgType><![CDATA[voice]]></MsgType>
  <MediaId><![CDATA[media_id]]></MediaId>
  <Format><![CDATA[Format]]></Format>
  <Recognition><![CDATA[腾讯微信团队]]></Recognition>
  <MsgId>1234567890123456</MsgId>
</xml>",
        );
        assert_eq!(
            message.kind,
            InboundKind::Voice {
                media_id: "media_id".to_owned(),
                format: Some("Format".to_owned()),
                recognition: Some("腾讯微信团队".to_owned()),
            }
        );
    }

    #[test]
    fn parses_video_and_short_video_messages() {
        let video = parse(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[fromUser]]></FromUserName>
  <CreateTime>1357290913</CreateTime>
  <MsgType><![CDATA[video]]></MsgType>
  <MediaId><![CDATA[media_id]]></MediaId>
  <ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId>
  <MsgId>1234567890123456</MsgId>
</xml>",
        );
        assert_eq!(
            video.kind,
            InboundKind::Video {
                media_id: "media_id".to_owned(),
                thumb_media_id: Some("thumb_media_id".to_owned())
            }
        );

        let short_video = parse(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[fromUser]]></FromUserName>
  <CreateTime>1357290913</CreateTime>
  <MsgType><![CDATA[shortvideo]]></MsgType>
  <MediaId><![CDATA[media_id]]></MediaId>
  <ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId>
  <MsgId>1234567890123456</MsgId>
</xml>",
        );
        assert_eq!(
            short_video.kind,
            InboundKind::ShortVideo {
                media_id: "media_id".to_owned(),
                thumb_media_id: Some("thumb_media_id".to_owned())
            }
        );
    }

    #[test]
    fn parses_a_location_message() {
        let message = parse(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[fromUser]]></FromUserName>
  <CreateTime>1351776360</CreateTime>
  <MsgType><![CDATA[location]]></MsgType>
  <Location_X>23.134521</Location_X>
  <Location_Y>113.358803</Location_Y>
  <Scale>20</Scale>
  <Label><![CDATA[位置信息]]></Label>
  <MsgId>1234567890123456</MsgId>
</xml>",
        );
        assert_eq!(
            message.kind,
            InboundKind::Location {
                latitude: 23.134521,
                longitude: 113.358803,
                scale: Some(20.0),
                label: Some("位置信息".to_owned()),
            }
        );
    }

    #[test]
    fn parses_a_link_message() {
        let message = parse(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[fromUser]]></FromUserName>
  <CreateTime>1351776360</CreateTime>
  <MsgType><![CDATA[link]]></MsgType>
  <Title><![CDATA[公众平台官网链接]]></Title>
  <Description><![CDATA[公众平台官网链接]]></Description>
  <Url><![CDATA[url]]></Url>
  <MsgId>1234567890123456</MsgId>
</xml>",
        );
        assert_eq!(
            message.kind,
            InboundKind::Link {
                title: "公众平台官网链接".to_owned(),
                description: "公众平台官网链接".to_owned(),
                url: "url".to_owned(),
            }
        );
    }

    #[test]
    fn parses_subscribe_and_unsubscribe_events() {
        let subscribe = parse(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[FromUser]]></FromUserName>
  <CreateTime>123456789</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[subscribe]]></Event>
</xml>",
        );
        assert_eq!(subscribe.msg_id, None);
        assert_eq!(
            subscribe.kind,
            InboundKind::Event(Event::Subscribe { event_key: None })
        );
        assert_eq!(subscribe.dedup_key(), "FromUser#123456789#subscribe");

        let qr_subscribe = event_of(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[FromUser]]></FromUserName>
  <CreateTime>123456789</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[subscribe]]></Event>
  <EventKey><![CDATA[qrscene_123123]]></EventKey>
  <Ticket><![CDATA[TICKET]]></Ticket>
</xml>",
        );
        assert_eq!(
            qr_subscribe,
            Event::Subscribe {
                event_key: Some("qrscene_123123".to_owned())
            }
        );

        let unsubscribe = event_of(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[FromUser]]></FromUserName>
  <CreateTime>123456789</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[unsubscribe]]></Event>
</xml>",
        );
        assert_eq!(unsubscribe, Event::Unsubscribe);
    }

    #[test]
    fn parses_scan_click_and_view_events() {
        let scan = event_of(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[FromUser]]></FromUserName>
  <CreateTime>123456789</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[SCAN]]></Event>
  <EventKey><![CDATA[SCENE_VALUE]]></EventKey>
  <Ticket><![CDATA[TICKET]]></Ticket>
</xml>",
        );
        assert_eq!(
            scan,
            Event::Scan {
                event_key: Some("SCENE_VALUE".to_owned())
            }
        );

        let click = event_of(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[FromUser]]></FromUserName>
  <CreateTime>123456789</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[CLICK]]></Event>
  <EventKey><![CDATA[EVENTKEY]]></EventKey>
</xml>",
        );
        assert_eq!(
            click,
            Event::Click {
                event_key: "EVENTKEY".to_owned()
            }
        );

        let view = event_of(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[FromUser]]></FromUserName>
  <CreateTime>123456789</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[VIEW]]></Event>
  <EventKey><![CDATA[www.qq.com]]></EventKey>
</xml>",
        );
        assert_eq!(
            view,
            Event::View {
                url: "www.qq.com".to_owned()
            }
        );
    }

    #[test]
    fn parses_a_location_event() {
        let location = event_of(
            "<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[fromUser]]></FromUserName>
  <CreateTime>123456789</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[LOCATION]]></Event>
  <Latitude>23.137466</Latitude>
  <Longitude>113.352425</Longitude>
  <Precision>119.385040</Precision>
</xml>",
        );
        assert_eq!(
            location,
            Event::Location {
                latitude: 23.137466,
                longitude: 113.352425,
                precision: 119.38504,
            }
        );
    }

    #[test]
    fn parses_a_wecom_text_message_with_agent_id() {
        let message = parse(
            "<xml>
   <ToUserName><![CDATA[toUser]]></ToUserName>
   <FromUserName><![CDATA[fromUser]]></FromUserName>
   <CreateTime>1348831860</CreateTime>
   <MsgType><![CDATA[text]]></MsgType>
   <Content><![CDATA[this is a test]]></Content>
   <MsgId>1234567890123456</MsgId>
   <AgentID>1</AgentID>
</xml>",
        );
        assert_eq!(message.agent_id.as_deref(), Some("1"));
        assert_eq!(message.msg_id.as_deref(), Some("1234567890123456"));
    }

    #[test]
    fn wecom_events_use_lowercase_names_and_msg_id_in_capitals() {
        let message = parse(
            "<xml><ToUserName><![CDATA[corp]]></ToUserName><FromUserName><![CDATA[user]]></FromUserName>\
             <CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[click]]></Event>\
             <EventKey><![CDATA[k]]></EventKey><AgentID>7</AgentID></xml>",
        );
        assert_eq!(
            message.kind,
            InboundKind::Event(Event::Click {
                event_key: "k".to_owned()
            })
        );
        assert_eq!(message.dedup_key(), "user#1#CLICK");

        let with_capital_id = parse(
            "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>\
             <MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>200163836</MsgID></xml>",
        );
        assert_eq!(
            with_capital_id.kind,
            InboundKind::Event(Event::Other {
                event: "TEMPLATESENDJOBFINISH".to_owned()
            })
        );
        assert_eq!(with_capital_id.dedup_key(), "200163836");
    }

    #[test]
    fn an_unknown_message_type_is_not_an_error() {
        let message = parse(
            "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>5</CreateTime>\
             <MsgType><![CDATA[miniprogrampage]]></MsgType><Title>t</Title></xml>",
        );
        assert_eq!(
            message.kind,
            InboundKind::Unknown {
                msg_type: "miniprogrampage".to_owned()
            }
        );
        assert_eq!(message.dedup_key(), "b#5");
    }

    #[test]
    fn nested_elements_and_escapes_are_handled() {
        let message = parse(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><!-- pushed -->\
             <xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>5</CreateTime>\
             <MsgType>text</MsgType><Content>1 &lt; 2 &amp;&#x4e2d;&#25991;<![CDATA[ & <b>]]></Content>\
             <ScanCodeInfo><ScanType>qrcode</ScanType><Content>nested</Content></ScanCodeInfo></xml>",
        );
        assert_eq!(
            message.kind,
            InboundKind::Text {
                content: "1 < 2 &中文 & <b>".to_owned()
            }
        );
    }

    #[test]
    fn parses_envelopes() {
        let wecom = parse_envelope(
            b"<xml>\n   <ToUserName><![CDATA[toUser]]></ToUserName>\n   <AgentID><![CDATA[toAgentID]]></AgentID>\n   <Encrypt><![CDATA[msg_encrypt]]></Encrypt>\n</xml>",
        )
        .expect("envelope parses");
        assert_eq!(
            wecom,
            Envelope {
                to_user_name: Some("toUser".to_owned()),
                encrypt: "msg_encrypt".to_owned()
            }
        );

        let compatible = parse_envelope(
            b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName>\
              <CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content>\
              <MsgId>9</MsgId><Encrypt><![CDATA[abc=]]></Encrypt></xml>",
        )
        .expect("compatible-mode body parses");
        assert_eq!(compatible.encrypt, "abc=");

        let with_bom = parse_envelope("\u{FEFF}<xml><Encrypt>e</Encrypt></xml>".as_bytes());
        assert_eq!(with_bom.expect("a leading BOM is skipped").encrypt, "e");

        let plaintext = parse_envelope(b"<xml><ToUserName>a</ToUserName></xml>");
        assert!(matches!(plaintext, Err(XmlError::MissingField("Encrypt"))));
    }

    #[test]
    fn missing_required_fields_are_named() {
        let result = parse_message(
            b"<xml><ToUserName>a</ToUserName><CreateTime>1</CreateTime>\
              <MsgType>text</MsgType><Content>x</Content></xml>",
        );
        assert!(matches!(
            result,
            Err(XmlError::MissingField("FromUserName"))
        ));
        assert!(result.is_err_and(|error| error.to_string().contains("FromUserName")));

        let no_content = parse_message(
            b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>\
              <CreateTime>1</CreateTime><MsgType>text</MsgType></xml>",
        );
        assert!(matches!(no_content, Err(XmlError::MissingField("Content"))));

        let bad_time = parse_message(
            b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>\
              <CreateTime>soon</CreateTime><MsgType>text</MsgType><Content>x</Content></xml>",
        );
        assert!(matches!(
            bad_time,
            Err(XmlError::InvalidNumber("CreateTime"))
        ));

        let bad_latitude = parse_message(
            b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>\
              <MsgType>location</MsgType><Location_X>NaN</Location_X><Location_Y>1</Location_Y></xml>",
        );
        assert!(matches!(
            bad_latitude,
            Err(XmlError::InvalidNumber("Location_X"))
        ));
    }

    #[test]
    fn malformed_documents_are_rejected() {
        let cases: &[&[u8]] = &[
            b"",
            b"   ",
            b"<xml><ToUserName>a</FromUserName></xml>",
            b"<xml><ToUserName>a</ToUserName>",
            b"<xml></xml><xml></xml>",
            b"<xml></xml>trailing",
            b"</xml>",
            b"<xml><Content><![CDATA[unterminated</Content></xml>",
        ];
        for &case in cases {
            let result = parse_message(case);
            assert!(
                matches!(result, Err(XmlError::Malformed { .. })),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(case)
            );
        }
        assert!(matches!(
            parse_message(b"<html></html>"),
            Err(XmlError::UnexpectedRoot(root)) if root == "html"
        ));
        assert!(matches!(
            parse_message(b"<xml><MsgType>a</MsgType><MsgType>b</MsgType></xml>"),
            Err(XmlError::DuplicateField(field)) if field == "MsgType"
        ));
    }

    #[test]
    fn non_utf8_bodies_are_rejected() {
        let mut body = b"<xml><Content>".to_vec();
        body.extend_from_slice(&[0xc4, 0xe3]); // GBK, not UTF-8
        body.extend_from_slice(b"</Content></xml>");
        assert!(matches!(parse_message(&body), Err(XmlError::NotUtf8)));
        assert!(matches!(parse_envelope(&body), Err(XmlError::NotUtf8)));
    }

    #[test]
    fn doctypes_and_entities_are_rejected() {
        let xxe = b"<?xml version=\"1.0\"?>\
            <!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\
            <xml><ToUserName>a</ToUserName><FromUserName>&xxe;</FromUserName>\
            <CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content></xml>";
        assert!(matches!(
            parse_message(xxe),
            Err(XmlError::DoctypeNotAllowed)
        ));

        let bomb = b"<!DOCTYPE xml [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>\
            <xml><Encrypt>&b;</Encrypt></xml>";
        assert!(matches!(
            parse_envelope(bomb),
            Err(XmlError::DoctypeNotAllowed)
        ));

        let undeclared = b"<xml><Encrypt>&nbsp;</Encrypt></xml>";
        assert!(matches!(
            parse_envelope(undeclared),
            Err(XmlError::UnknownEntity(name)) if name == "nbsp"
        ));

        let illegal_char_ref = b"<xml><Encrypt>&#0;</Encrypt></xml>";
        assert!(matches!(
            parse_envelope(illegal_char_ref),
            Err(XmlError::Malformed { .. })
        ));
    }

    #[test]
    fn text_reply_has_the_documented_shape() {
        assert_eq!(
            text_reply("toUser", "fromUser", 12345678, "你好"),
            "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
             <FromUserName><![CDATA[fromUser]]></FromUserName>\
             <CreateTime>12345678</CreateTime><MsgType><![CDATA[text]]></MsgType>\
             <Content><![CDATA[你好]]></Content></xml>"
        );
    }

    #[test]
    fn text_reply_splits_cdata_terminators() {
        let xml = text_reply("a", "b", 1, "x]]>y]]]>>z");
        assert!(xml.contains("<Content><![CDATA[x]]]]><![CDATA[>y]]]]]><![CDATA[>>z]]></Content>"));
        assert_eq!(
            parse(&xml).kind,
            InboundKind::Text {
                content: "x]]>y]]]>>z".to_owned()
            }
        );
    }

    /// Reads the `Content` element of a document with nothing but quick-xml,
    /// as an independent check on what `text_reply` writes.
    fn content_via_quick_xml(xml: &str) -> String {
        let mut reader = Reader::from_str(xml);
        let mut in_content = false;
        let mut content = String::new();
        loop {
            match reader
                .read_event()
                .expect("text_reply writes well-formed XML")
            {
                XmlEvent::Start(start) => in_content = start.name().as_ref() == "Content",
                XmlEvent::End(_) => in_content = false,
                XmlEvent::CData(cdata) if in_content => content.push_str(&cdata.xml10_content()),
                XmlEvent::Text(text) if in_content => content.push_str(&text.xml10_content()),
                XmlEvent::GeneralRef(reference) if in_content => {
                    let ch = reference
                        .resolve_char_ref()
                        .expect("valid")
                        .expect("char ref");
                    content.push(ch);
                }
                XmlEvent::Eof => return content,
                _ => {}
            }
        }
    }

    proptest! {
        #[test]
        fn parse_message_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_message(&body);
            let _ = parse_envelope(&body);
        }

        #[test]
        fn parse_message_never_panics_on_near_miss_xml(
            body in "<xml>(<[A-Za-z_]{1,8}>[^<]{0,8}(<!\\[CDATA\\[[^\\]]{0,8}\\]\\]>)?</[A-Za-z_]{1,8}>|&[a-z#0-9]{0,5};?|<!DOCTYPE|\\]\\]>){0,8}(</xml>)?"
        ) {
            let _ = parse_message(body.as_bytes());
        }

        #[test]
        fn text_reply_content_reads_back(
            content in proptest::string::string_regex("([\\]>\r\n]|[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x{FFFE}\\x{FFFF}]){0,64}")
                .expect("valid regex"),
            to_user in "[a-zA-Z0-9_\\-]{1,32}",
            create_time in any::<i64>(),
        ) {
            let xml = text_reply(&to_user, "gh_account", create_time, &content);
            prop_assert_eq!(content_via_quick_xml(&xml), content.clone());

            let message = parse_message(xml.as_bytes()).expect("text_reply output parses");
            prop_assert_eq!(message.to_user_name, to_user);
            prop_assert_eq!(message.create_time, create_time);
            prop_assert_eq!(message.kind, InboundKind::Text { content });
        }

        #[test]
        fn text_reply_drops_only_what_xml_cannot_carry(content in any::<String>()) {
            let xml = text_reply("a", "b", 0, &content);
            let expected: String = content.chars().filter(|&ch| is_xml_char(ch)).collect();
            prop_assert_eq!(content_via_quick_xml(&xml), expected.clone());
            let message = parse_message(xml.as_bytes()).expect("text_reply output parses");
            prop_assert_eq!(message.kind, InboundKind::Text { content: expected });
        }
    }
}
