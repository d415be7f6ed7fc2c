//! Tokens of the libconfig grammar, as nom parsers over `&str`.
//!
//! Every parser returns the remaining input, which is always a suffix of the document; the
//! structural layer turns that suffix back into a line and column.

use std::borrow::Cow;

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_until, take_while};
use nom::character::complete::{char, digit0, digit1, one_of, satisfy};
use nom::combinator::{not, opt, peek, recognize};
use nom::error::{ErrorKind, ParseError};
use nom::multi::many0_count;
use nom::sequence::pair;
use nom::{IResult, Parser};

use crate::error::Error;
use crate::node::Value;

/// What went wrong while lexing/parsing, and where (`at` is the remaining input).
#[derive(Debug)]
pub(crate) struct PError<'s> {
    pub at: &'s str,
    pub kind: PErrorKind,
}

#[derive(Debug)]
pub(crate) enum PErrorKind {
    /// A nom combinator failed (only surfaces if no better message was produced).
    Nom(ErrorKind),
    /// A grammar error with a human message.
    Message(Cow<'static, str>),
    /// An error already located elsewhere (an included file, a duplicate, an I/O failure).
    Located(Box<Error>),
}

impl<'s> ParseError<&'s str> for PError<'s> {
    fn from_error_kind(input: &'s str, kind: ErrorKind) -> Self {
        // Backtracking creates these constantly (every failed `alt` branch): keep them cheap.
        PError {
            at: input,
            kind: PErrorKind::Nom(kind),
        }
    }

    fn append(_: &'s str, _: ErrorKind, other: Self) -> Self {
        other
    }
}

pub(crate) type PResult<'s, T> = IResult<&'s str, T, PError<'s>>;

/// An unrecoverable error at `at`.
pub(crate) fn fail<'s, T>(at: &'s str, msg: impl Into<Cow<'static, str>>) -> PResult<'s, T> {
    Err(nom::Err::Failure(PError {
        at,
        kind: PErrorKind::Message(msg.into()),
    }))
}

fn line_comment(i: &str) -> PResult<'_, ()> {
    let (i, _) = alt((tag("#"), tag("//"))).parse(i)?;
    let (i, _) = take_while(|c| c != '\n').parse(i)?;
    Ok((i, ()))
}

fn block_comment(i: &str) -> PResult<'_, ()> {
    let (body, _) = tag("/*").parse(i)?;
    match take_until::<_, _, PError<'_>>("*/").parse(body) {
        Ok((rest, _)) => Ok((&rest[2..], ())),
        Err(_) => fail(i, "unterminated comment: expected '*/'"),
    }
}

fn whitespace(i: &str) -> PResult<'_, ()> {
    // libconfig also skips BEL and BS (`\a`, `\b`) between tokens.
    let (rest, ws) =
        take_while(|c: char| c.is_whitespace() || c == '\x07' || c == '\x08').parse(i)?;
    if ws.is_empty() {
        return Err(nom::Err::Error(PError::from_error_kind(
            i,
            ErrorKind::Space,
        )));
    }
    Ok((rest, ()))
}

/// Skip whitespace and comments.
pub(crate) fn skip(i: &str) -> PResult<'_, ()> {
    let (i, _) = many0_count(alt((whitespace, line_comment, block_comment))).parse(i)?;
    Ok((i, ()))
}

pub(crate) fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '*'
}

pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*')
}

/// A setting name: `[A-Za-z*][-A-Za-z0-9_*]*`.
pub(crate) fn name(i: &str) -> PResult<'_, &str> {
    recognize(pair(satisfy(is_name_start), take_while(is_name_char))).parse(i)
}

/// `true` / `false`, any case, not followed by a name character.
pub(crate) fn boolean(i: &str) -> PResult<'_, Value> {
    let (rest, b) = alt((
        tag_no_case("true").map(|_| true),
        tag_no_case("false").map(|_| false),
    ))
    .parse(i)?;
    let (rest, _) = not(satisfy(is_name_char)).parse(rest)?;
    Ok((rest, Value::Bool(b)))
}

fn exponent(i: &str) -> PResult<'_, &str> {
    recognize((one_of("eE"), opt(one_of("+-")), digit1)).parse(i)
}

/// Integer (decimal, hex `0x`, binary `0b` or octal `0o`; optional sign; optional `L`/`LL`)
/// or float.
pub(crate) fn number(i: &str) -> PResult<'_, Value> {
    let (after_sign, sign) = opt(one_of("+-")).parse(i)?;
    let negative = sign == Some('-');

    let radix = [
        ("0x", 16, "hexadecimal"),
        ("0X", 16, "hexadecimal"),
        ("0b", 2, "binary"),
        ("0B", 2, "binary"),
        ("0o", 8, "octal"),
        ("0O", 8, "octal"),
    ]
    .into_iter()
    .find(|(p, _, _)| after_sign.starts_with(p));
    let (rest, value) = if let Some((prefix, radix, what)) = radix {
        let digits_at = &after_sign[2..];
        let end = digits_at
            .find(|c: char| !c.is_digit(radix))
            .unwrap_or(digits_at.len());
        let (digits, rest) = digits_at.split_at(end);
        if digits.is_empty() {
            return fail(
                digits_at,
                format!("expected {what} digits after '{prefix}'"),
            );
        }
        let Ok(bits) = u64::from_str_radix(digits, radix) else {
            return fail(i, format!("{what} integer does not fit in 64 bits"));
        };
        // Prefixed literals are bit patterns: 0xFFFFFFFFFFFFFFFF is -1 as in libconfig.
        let v = bits as i64;
        let (rest, _) = int_suffix(rest)?;
        (
            rest,
            Value::Int(if negative { v.wrapping_neg() } else { v }),
        )
    } else {
        let (rest, mantissa) = alt((
            recognize((digit1, opt((char('.'), digit0)))),
            recognize((char('.'), digit1)),
        ))
        .parse(after_sign)?;
        let (rest, exp) = opt(exponent).parse(rest)?;
        let text = &i[..i.len() - rest.len()];
        if mantissa.contains('.') || exp.is_some() {
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() => (rest, Value::Float(f)),
                _ => return fail(i, format!("float {text} is out of range")),
            }
        } else {
            // Decimal even with leading zeros, as libconfig's strtoll(.., 10).
            let Ok(v) = text.parse::<i64>() else {
                return fail(i, format!("integer {text} does not fit in 64 bits"));
            };
            let (rest, _) = int_suffix(rest)?;
            (rest, Value::Int(v))
        }
    };
    if peek(satisfy::<_, _, PError<'_>>(|c| is_name_char(c) || c == '.'))
        .parse(rest)
        .is_ok()
    {
        return fail(i, "invalid number");
    }
    Ok((rest, value))
}

fn int_suffix(i: &str) -> PResult<'_, ()> {
    let (i, _) = opt(alt((tag("LL"), tag("L")))).parse(i)?;
    Ok((i, ()))
}

/// One `"..."` literal, with libconfig's scanner rules: `\a \b \f \n \r \t \v \\ \"` and
/// `\xHH` (exactly two hex digits, may produce non-UTF-8 bytes) are escapes; a backslash before
/// anything else is kept literally (`"grep 'a\|b'"` is `grep 'a\|b'`).
fn string_literal<'s>(i: &'s str, out: &mut Vec<u8>) -> PResult<'s, ()> {
    let (body, _) = char('"').parse(i)?;
    let bytes = body.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        // Copy the run up to the next quote or backslash in one go.
        let run = bytes[pos..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\')
            .unwrap_or(bytes.len() - pos);
        out.extend_from_slice(&bytes[pos..pos + run]);
        pos += run;
        match bytes.get(pos) {
            Some(b'"') => return Ok((&body[pos + 1..], ())),
            Some(_) => {
                let escaped = match bytes.get(pos + 1) {
                    Some(b'a') => Some(0x07),
                    Some(b'b') => Some(0x08),
                    Some(b'f') => Some(0x0c),
                    Some(b'n') => Some(b'\n'),
                    Some(b'r') => Some(b'\r'),
                    Some(b't') => Some(b'\t'),
                    Some(b'v') => Some(0x0b),
                    Some(b'\\') => Some(b'\\'),
                    Some(b'"') => Some(b'"'),
                    _ => None,
                };
                if let Some(b) = escaped {
                    out.push(b);
                    pos += 2;
                    continue;
                }
                let hex = bytes.get(pos + 1..pos + 4).filter(|h| {
                    matches!(h[0], b'x' | b'X') && h[1..].iter().all(u8::is_ascii_hexdigit)
                });
                if let Some(h) = hex {
                    let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(digit(h[1]) << 4 | digit(h[2]));
                    pos += 4;
                    continue;
                }
                if pos + 1 >= bytes.len() {
                    break;
                }
                // Unknown escape: libconfig keeps the backslash and reads on.
                out.push(b'\\');
                pos += 1;
            }
            None => break,
        }
    }
    fail(i, "unterminated string")
}

/// One or more adjacent string literals (whitespace/comments between them), joined.
pub(crate) fn string(i: &str) -> PResult<'_, String> {
    let mut bytes = Vec::new();
    let (mut rest, _) = string_literal(i, &mut bytes)?;
    loop {
        let (next, _) = skip(rest)?;
        if !next.starts_with('"') {
            break;
        }
        let (after, _) = string_literal(next, &mut bytes)?;
        rest = after;
    }
    match String::from_utf8(bytes) {
        Ok(s) => Ok((rest, s)),
        Err(_) => fail(i, "string is not valid UTF-8 after resolving '\\x' escapes"),
    }
}
