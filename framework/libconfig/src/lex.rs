//! Tokens of the libconfig grammar, as nom parsers over `&str`.
//!
//! Every parser returns the remaining input, which is always a suffix of the document; the
//! structural layer turns that suffix back into a line and column.

use std::borrow::Cow;

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_until, take_while};
use nom::character::complete::{char, digit0, digit1, hex_digit1, one_of, satisfy};
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
    let (rest, ws) = take_while(char::is_whitespace).parse(i)?;
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

/// Integer (decimal or hex, optional sign, optional `L`/`LL`) or float.
pub(crate) fn number(i: &str) -> PResult<'_, Value> {
    let (after_sign, sign) = opt(one_of("+-")).parse(i)?;
    let negative = sign == Some('-');

    let hex: PResult<'_, &str> = alt((tag("0x"), tag("0X"))).parse(after_sign);
    let (rest, value) = if let Ok((digits_at, _)) = hex {
        let Ok((rest, digits)) = hex_digit1::<_, PError<'_>>(digits_at) else {
            return fail(digits_at, "expected hexadecimal digits after '0x'");
        };
        let Ok(bits) = u64::from_str_radix(digits, 16) else {
            return fail(i, "hexadecimal integer does not fit in 64 bits");
        };
        // Hex literals are bit patterns: 0xFFFFFFFFFFFFFFFF is -1 as in libconfig.
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

/// One `"..."` literal; escapes resolved into raw bytes (`\xHH` may produce non-UTF-8 bytes).
fn string_literal<'s>(i: &'s str, out: &mut Vec<u8>) -> PResult<'s, ()> {
    let (body, _) = char('"').parse(i)?;
    let mut chars = body.char_indices();
    while let Some((pos, c)) = chars.next() {
        match c {
            '"' => return Ok((&body[pos + 1..], ())),
            '\\' => {
                let esc = &body[pos..];
                match chars.next() {
                    Some((_, '\\')) => out.push(b'\\'),
                    Some((_, '"')) => out.push(b'"'),
                    Some((_, 'n')) => out.push(b'\n'),
                    Some((_, 'r')) => out.push(b'\r'),
                    Some((_, 't')) => out.push(b'\t'),
                    Some((_, 'f')) => out.push(0x0c),
                    Some((_, 'x')) => {
                        let hex = body
                            .get(pos + 2..pos + 4)
                            .filter(|h| h.len() == 2 && h.bytes().all(|b| b.is_ascii_hexdigit()));
                        let Some(hex) = hex else {
                            return fail(
                                esc,
                                "invalid escape: expected two hex digits after '\\x'",
                            );
                        };
                        out.push(u8::from_str_radix(hex, 16).unwrap_or_default());
                        chars.next();
                        chars.next();
                    }
                    Some((_, other)) => {
                        return fail(
                            esc,
                            format!("invalid escape sequence '\\{other}' in string"),
                        )
                    }
                    None => return fail(i, "unterminated string"),
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
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
