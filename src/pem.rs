//! A lenient PEM reader for key files as merchants really have them.
//!
//! RFC 7468's strict form (64-column lines, LF, nothing around the block) is what
//! x509-cert's decoder wants, but downloaded and copied files come with 76-column lines,
//! CRLF, the whole base64 on one line, surrounding blank lines or an explanatory text
//! before the `-----BEGIN` line. This reader accepts all of those and nothing looser:
//!
//! - text outside the blocks is ignored (RFC 7468 §5.2 allows explanatory text);
//! - each `-----BEGIN X-----` needs an `-----END X-----` with the same label;
//! - between them, only base64 and ASCII whitespace; PEM headers such as `Proc-Type:`
//!   (an encrypted key) are refused;
//! - the base64 must decode (padding may be left out).

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use crate::error::ConfigError;

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// Standard alphabet, padding optional: some tools drop it.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One PEM block: its label and the DER it holds (wiped on drop: it may be a private key).
pub(crate) struct Block {
    pub(crate) label: String,
    pub(crate) der: Zeroizing<Vec<u8>>,
}

/// Every PEM block in `input`, in order.
///
/// # Errors
/// [`ConfigError::InvalidPem`] with the reason if there is no block or a block is broken.
pub(crate) fn parse_all(input: &[u8]) -> Result<Vec<Block>, ConfigError> {
    let mut blocks = Vec::new();
    let mut rest = input;
    while let Some(start) = find(rest, BEGIN) {
        let (block, after) = parse_block(&rest[start + BEGIN.len()..])?;
        blocks.push(block);
        rest = after;
    }
    if blocks.is_empty() {
        return Err(invalid(if find(input, END).is_some() {
            "an -----END line without its -----BEGIN line"
        } else {
            "no -----BEGIN line found"
        }));
    }
    Ok(blocks)
}

/// One block, from just after `-----BEGIN `; returns it and the input after its END line.
fn parse_block(input: &[u8]) -> Result<(Block, &[u8]), ConfigError> {
    let label_end =
        find(input, DASHES).ok_or_else(|| invalid("the -----BEGIN line does not end in -----"))?;
    let label = &input[..label_end];
    if label.is_empty() || !label.iter().all(|&b| b.is_ascii_graphic() || b == b' ') {
        return Err(invalid("the -----BEGIN line has no valid label"));
    }
    let body_and_rest = &input[label_end + DASHES.len()..];
    let body_end = find(body_and_rest, END)
        .ok_or_else(|| invalid("a -----BEGIN line without its -----END line"))?;
    let body = &body_and_rest[..body_end];
    let after_end = &body_and_rest[body_end + END.len()..];
    let end_label_end = find(after_end, DASHES)
        .ok_or_else(|| invalid("the -----END line does not end in -----"))?;
    if &after_end[..end_label_end] != label {
        return Err(invalid(
            "the -----END label does not match the -----BEGIN label",
        ));
    }
    let rest = &after_end[end_label_end + DASHES.len()..];
    if body.contains(&b':') {
        return Err(invalid(
            "the block has headers (Proc-Type, DEK-Info…): an encrypted or legacy pem",
        ));
    }
    let base64: Zeroizing<Vec<u8>> = Zeroizing::new(
        body.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    if base64.is_empty() {
        return Err(invalid(
            "the block between -----BEGIN and -----END is empty",
        ));
    }
    let der = LENIENT
        .decode(base64.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| invalid("the text between -----BEGIN and -----END is not base64"))?;
    // The label was checked to be printable ASCII above.
    let label = String::from_utf8_lossy(label).into_owned();
    Ok((Block { label, der }, rest))
}

fn invalid(reason: &'static str) -> ConfigError {
    ConfigError::InvalidPem { reason }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(input: &str) -> &'static str {
        match parse_all(input.as_bytes()) {
            Err(ConfigError::InvalidPem { reason }) => reason,
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("{input:?} parsed"),
        }
    }

    #[test]
    fn a_block_is_read_whatever_its_line_breaks() {
        for text in [
            "-----BEGIN X-----\nAAEC\nAw==\n-----END X-----\n",
            "-----BEGIN X-----\r\nAAECAw==\r\n-----END X-----\r\n",
            "-----BEGIN X-----AAECAw==-----END X-----",
            "  \n\tsubject=whatever\n-----BEGIN X-----\n  AAECAw\n-----END X-----\n\n\n",
        ] {
            let blocks = parse_all(text.as_bytes()).unwrap();
            assert_eq!(blocks.len(), 1, "{text:?}");
            assert_eq!(blocks[0].label, "X");
            assert_eq!(blocks[0].der.as_slice(), &[0, 1, 2, 3]);
        }
    }

    #[test]
    fn several_blocks_are_read_in_order() {
        let text = "-----BEGIN A-----\nAA==\n-----END A-----\ntext\n-----BEGIN B B-----\nAQ==\n-----END B B-----\n";
        let blocks = parse_all(text.as_bytes()).unwrap();
        let labels: Vec<&str> = blocks.iter().map(|block| block.label.as_str()).collect();
        assert_eq!(labels, ["A", "B B"]);
        assert_eq!(blocks[1].der.as_slice(), &[1]);
    }

    #[test]
    fn broken_blocks_are_refused_with_their_reason() {
        assert_eq!(reason(""), "no -----BEGIN line found");
        assert_eq!(reason("MIIB"), "no -----BEGIN line found");
        assert_eq!(
            reason("AA==\n-----END X-----"),
            "an -----END line without its -----BEGIN line"
        );
        assert_eq!(
            reason("-----BEGIN X-----\nAA==\n"),
            "a -----BEGIN line without its -----END line"
        );
        assert_eq!(
            reason("-----BEGIN X-----\nAA==\n-----END Y-----"),
            "the -----END label does not match the -----BEGIN label"
        );
        assert_eq!(
            reason("-----BEGIN X-----\n-----END X-----"),
            "the block between -----BEGIN and -----END is empty"
        );
        assert_eq!(
            reason("-----BEGIN X-----\nAA*=\n-----END X-----"),
            "the text between -----BEGIN and -----END is not base64"
        );
        assert_eq!(
            reason("-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\n\nAA==\n-----END X-----"),
            "the block has headers (Proc-Type, DEK-Info…): an encrypted or legacy pem"
        );
        assert_eq!(
            reason("-----BEGIN -----\nAA==\n-----END -----"),
            "the -----BEGIN line has no valid label"
        );
        assert_eq!(
            reason("-----BEGIN X"),
            "the -----BEGIN line does not end in -----"
        );
    }

    #[test]
    fn a_later_broken_block_fails_the_whole_file() {
        let text = "-----BEGIN A-----\nAA==\n-----END A-----\n-----BEGIN B-----\n";
        assert!(parse_all(text.as_bytes()).is_err());
    }
}
