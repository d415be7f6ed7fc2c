//! Document structure: settings, groups, lists, arrays and `@include`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::character::complete::{char, one_of};
use nom::Parser;

use crate::error::{Error, Location};
use crate::lex::{self, fail, PError, PErrorKind, PResult};
use crate::node::{Node, Value};

/// Deepest `@include` chain accepted (the top-level file is depth 0).
pub const MAX_INCLUDE_DEPTH: usize = 10;
/// Deepest nesting of groups/lists/arrays accepted (keeps hostile input from exhausting the stack).
pub const MAX_NESTING: usize = 128;

/// Parse a document held in memory. `origin` names it in errors and anchors relative
/// `@include` paths (its parent directory); it need not exist.
pub fn parse_str(src: &str, origin: &Path) -> Result<Node, Error> {
    let mut stack = vec![canonical(origin)];
    Doc::new(src, Arc::from(origin), &mut stack).document()
}

/// Read and parse a file.
pub fn parse_file(path: &Path) -> Result<Node, Error> {
    let src = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&src, path)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// One source text being parsed (the top-level file or an included one).
struct Doc<'s, 'a> {
    src: &'s str,
    file: Arc<Path>,
    line_starts: Vec<usize>,
    /// Files currently being read, outermost first (cycle and depth detection).
    include_stack: &'a mut Vec<PathBuf>,
    /// Containers currently open around the parse position (across includes).
    nesting: usize,
}

fn located<'s, T>(at: &'s str, err: Error) -> PResult<'s, T> {
    Err(nom::Err::Failure(PError {
        at,
        kind: PErrorKind::Located(Box::new(err)),
    }))
}

impl<'s, 'a> Doc<'s, 'a> {
    fn new(src: &'s str, file: Arc<Path>, include_stack: &'a mut Vec<PathBuf>) -> Self {
        let line_starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Doc {
            src,
            file,
            line_starts,
            include_stack,
            nesting: 0,
        }
    }

    fn loc(&self, at: &str) -> Location {
        let offset = self.src.len().saturating_sub(at.len());
        let line_idx = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line_idx];
        let col = self.src.get(start..offset).map_or(0, |s| s.chars().count());
        Location {
            file: self.file.clone(),
            line: u32::try_from(line_idx + 1).unwrap_or(u32::MAX),
            col: u32::try_from(col + 1).unwrap_or(u32::MAX),
        }
    }

    fn node(&self, at: &str, value: Value) -> Node {
        let l = self.loc(at);
        Node::new(value, l.file, l.line, l.col)
    }

    fn to_error(&self, e: nom::Err<PError<'s>>) -> Error {
        match e {
            nom::Err::Error(p) | nom::Err::Failure(p) => match p.kind {
                PErrorKind::Nom(kind) => Error::Syntax {
                    at: self.loc(p.at),
                    message: format!("syntax error ({})", kind.description()),
                },
                PErrorKind::Message(m) => Error::Syntax {
                    at: self.loc(p.at),
                    message: m.into_owned(),
                },
                PErrorKind::Located(err) => *err,
            },
            nom::Err::Incomplete(_) => Error::Syntax {
                at: self.loc(""),
                message: "unexpected end of input".into(),
            },
        }
    }

    fn document(mut self) -> Result<Node, Error> {
        let mut members = Vec::new();
        let src = self.src;
        match self.settings(src, None, &mut members) {
            Ok(_) => Ok(self.node(src, Value::Group(members))),
            Err(e) => Err(self.to_error(e)),
        }
    }

    /// Settings until `close` (not consumed) or, for the root, end of input.
    fn settings(
        &mut self,
        mut i: &'s str,
        close: Option<(char, &'s str)>,
        out: &mut Vec<(String, Node)>,
    ) -> PResult<'s, ()> {
        loop {
            (i, _) = lex::skip(i)?;
            let next = i.chars().next();
            match (next, close) {
                (None, None) => return Ok((i, ())),
                (None, Some((c, open))) => {
                    let line = self.loc(open).line;
                    return fail(
                        i,
                        format!("unexpected end of file: expected '{c}' to close the group opened at line {line}"),
                    );
                }
                (Some(n), Some((c, _))) if n == c => return Ok((i, ())),
                _ => {}
            }
            if i.starts_with("@include") {
                (i, _) = self.include(i, out)?;
                continue;
            }
            let at = i;
            let Ok((r, name)) = lex::name(i) else {
                let msg: Cow<'static, str> = match next {
                    Some(c @ ('}' | ')' | ']')) => format!("unexpected '{c}'").into(),
                    _ => "expected a setting name".into(),
                };
                return fail(i, msg);
            };
            let (r, _) = lex::skip(r)?;
            let Ok((r, _)) = one_of::<_, _, PError<'_>>("=:").parse(r) else {
                return fail(
                    r,
                    format!("expected '=' or ':' after setting name \"{name}\""),
                );
            };
            let (r, _) = lex::skip(r)?;
            let (r, mut node) = self.value(r, Some(name))?;
            let l = self.loc(at);
            node.line = l.line;
            node.col = l.col;

            let (after_ws, _) = lex::skip(r)?;
            i = match one_of::<_, _, PError<'_>>(";,").parse(after_ws) {
                Ok((r, _)) => r,
                Err(_) => {
                    let ok_next = match after_ws.chars().next() {
                        None => close.is_none(),
                        Some(c) => {
                            close.is_some_and(|(cl, _)| cl == c)
                                || lex::is_name_start(c)
                                || c == '@'
                        }
                    };
                    if !ok_next {
                        return fail(
                            after_ws,
                            format!("expected ';' or ',' after setting \"{name}\""),
                        );
                    }
                    r
                }
            };
            if let Some((_, first)) = out.iter().find(|(k, _)| k == name) {
                return located(
                    at,
                    Error::DuplicateSetting {
                        at: l,
                        name: name.to_string(),
                        first_line: first.line,
                    },
                );
            }
            out.push((name.to_string(), node));
        }
    }

    /// A value. Containers raise `self.nesting` while their contents are parsed.
    fn value(&mut self, i: &'s str, setting: Option<&str>) -> PResult<'s, Node> {
        match i.chars().next() {
            Some(open @ ('{' | '(' | '[')) => {
                if self.nesting >= MAX_NESTING {
                    let at = self.loc(i);
                    return located(
                        i,
                        Error::TooDeep {
                            at,
                            limit: MAX_NESTING,
                        },
                    );
                }
                self.nesting += 1;
                let res = self.container(i, open);
                self.nesting -= 1;
                res
            }
            Some('"') => {
                let (r, s) = lex::string(i)?;
                Ok((r, self.node(i, Value::Str(s))))
            }
            _ => match alt((lex::boolean, lex::number)).parse(i) {
                Ok((r, v)) => Ok((r, self.node(i, v))),
                Err(nom::Err::Error(_)) => match setting {
                    Some(name) => fail(i, format!("expected a value for setting \"{name}\"")),
                    None => fail(i, "expected a value"),
                },
                Err(e) => Err(e),
            },
        }
    }

    fn container(&mut self, i: &'s str, open: char) -> PResult<'s, Node> {
        let body = &i[1..];
        match open {
            '{' => {
                let mut members = Vec::new();
                let (r, _) = self.settings(body, Some(('}', i)), &mut members)?;
                let (r, _) = char('}').parse(r)?;
                Ok((r, self.node(i, Value::Group(members))))
            }
            '(' => {
                let (r, items) = self.elements(body, i, ')')?;
                Ok((r, self.node(i, Value::List(items))))
            }
            _ => {
                let (r, items) = self.elements(body, i, ']')?;
                if let Some(bad) = items.iter().find(|n| !n.value.is_scalar()) {
                    let at = self.at_of(bad, i);
                    return fail(
                        at,
                        format!(
                            "array elements must be scalars, found a {}",
                            bad.value.type_name()
                        ),
                    );
                }
                if let Some(first) = items.first() {
                    let want = std::mem::discriminant(&first.value);
                    if let Some(bad) = items
                        .iter()
                        .find(|n| std::mem::discriminant(&n.value) != want)
                    {
                        let at = self.at_of(bad, i);
                        return fail(
                            at,
                            format!(
                                "array elements must all have one type: expected {}, found {}",
                                first.value.type_name(),
                                bad.value.type_name()
                            ),
                        );
                    }
                }
                Ok((r, self.node(i, Value::Array(items))))
            }
        }
    }

    /// Recover the remaining-input suffix that starts at a node (for pointing errors at it).
    fn at_of(&self, node: &Node, fallback: &'s str) -> &'s str {
        let Some(start) = self.line_starts.get(node.line as usize - 1) else {
            return fallback;
        };
        let line = &self.src[*start..];
        let byte = line
            .char_indices()
            .nth(node.col as usize - 1)
            .map_or(line.len(), |(b, _)| b);
        &line[byte..]
    }

    /// Comma-separated values up to `close` (consumed); a trailing comma is accepted.
    fn elements(&mut self, mut i: &'s str, open: &'s str, close: char) -> PResult<'s, Vec<Node>> {
        let kind = if close == ')' { "list" } else { "array" };
        let mut items = Vec::new();
        loop {
            (i, _) = lex::skip(i)?;
            if let Some(r) = i.strip_prefix(close) {
                return Ok((r, items));
            }
            if i.is_empty() {
                let line = self.loc(open).line;
                return fail(
                    i,
                    format!("unexpected end of file: expected '{close}' to close the {kind} opened at line {line}"),
                );
            }
            let (r, node) = self.value(i, None)?;
            items.push(node);
            let (r, _) = lex::skip(r)?;
            if let Some(r) = r.strip_prefix(close) {
                return Ok((r, items));
            }
            match r.strip_prefix(',') {
                Some(r) => i = r,
                None if r.is_empty() => {
                    let line = self.loc(open).line;
                    return fail(
                        r,
                        format!("unexpected end of file: expected '{close}' to close the {kind} opened at line {line}"),
                    );
                }
                None => return fail(r, format!("expected ',' or '{close}' in {kind}")),
            }
        }
    }

    /// `@include "file"`: the file's settings are merged into the current group.
    fn include(&mut self, i: &'s str, out: &mut Vec<(String, Node)>) -> PResult<'s, ()> {
        let (r, _) = tag("@include").parse(i)?;
        let (r, _) = lex::skip(r)?;
        if !r.starts_with('"') {
            return fail(r, "expected a quoted file name after @include");
        }
        let (r, name) = lex::string(r)?;
        let at = self.loc(i);
        let target = Path::new(&name);
        let resolved = if target.is_absolute() {
            target.to_path_buf()
        } else {
            self.file
                .parent()
                .unwrap_or_else(|| Path::new(""))
                .join(target)
        };
        // The stack holds the top-level file plus one entry per include level.
        if self.include_stack.len() > MAX_INCLUDE_DEPTH {
            return located(
                i,
                Error::IncludeDepth {
                    at,
                    limit: MAX_INCLUDE_DEPTH,
                },
            );
        }
        let canon = canonical(&resolved);
        if self.include_stack.contains(&canon) {
            return located(i, Error::IncludeCycle { at, path: resolved });
        }
        // Only regular files: a device such as /dev/zero would never end.
        let text = match std::fs::metadata(&resolved).and_then(|m| {
            if m.is_file() {
                std::fs::read_to_string(&resolved)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a regular file",
                ))
            }
        }) {
            Ok(t) => t,
            Err(source) => {
                return located(
                    i,
                    Error::Include {
                        at,
                        path: resolved,
                        source,
                    },
                )
            }
        };
        self.include_stack.push(canon);
        let result = {
            let mut sub = Doc::new(&text, Arc::from(resolved.as_path()), self.include_stack);
            sub.nesting = self.nesting;
            let res = sub.settings(&text, None, out);
            res.map(|_| ()).map_err(|e| sub.to_error(e))
        };
        self.include_stack.pop();
        match result {
            Ok(()) => Ok((r, ())),
            Err(e) => located(i, e),
        }
    }
}
