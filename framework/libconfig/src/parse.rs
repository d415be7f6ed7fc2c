//! Document structure: settings, groups, lists, arrays and `@include`.
//!
//! Everything here is linear in the input: positions are computed with a forward-moving cursor
//! (node positions are taken in file order, before their children are parsed), and duplicate
//! setting names are found through a hash of each name instead of a scan of the group.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nom::bytes::complete::tag;
use nom::character::complete::{char, one_of};
use nom::Parser;

use crate::error::{Error, Location};
use crate::lex::{self, fail, PError, PErrorKind, PResult};
use crate::node::{Node, Value};
use crate::read::{decode_utf8, read_file, read_file_bytes, MAX_FILE_SIZE, MAX_TOTAL_SIZE};

/// Deepest `@include` chain accepted (the top-level file is depth 0).
pub const MAX_INCLUDE_DEPTH: usize = 10;
/// Deepest nesting of groups/lists/arrays accepted (keeps hostile input from exhausting the stack).
pub const MAX_NESTING: usize = 128;
/// Most files one document may include in total (nested includes and wildcard matches count).
pub const MAX_INCLUDE_FILES: usize = 256;

/// Parse a document held in memory. `origin` names it in errors and anchors relative
/// `@include` paths (its parent directory); it need not exist. Texts over [`MAX_FILE_SIZE`]
/// are refused.
pub fn parse_str(src: &str, origin: &Path) -> Result<Node, Error> {
    let size = src.len() as u64;
    if size > MAX_FILE_SIZE {
        return Err(Error::FileTooLarge {
            path: origin.to_path_buf(),
            size,
            limit: MAX_FILE_SIZE,
        });
    }
    let mut ctx = Ctx {
        stack: vec![canonical(origin)],
        root_dir: origin
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .to_path_buf(),
        total: size,
        files: 0,
        hasher: RandomState::new(),
    };
    Doc::new(src, Arc::from(origin), &mut ctx).document()
}

/// Read (with [`crate::read_file`]: regular files only, size-limited, UTF-8 checked) and
/// parse a file.
pub fn parse_file(path: &Path) -> Result<Node, Error> {
    let src = read_file(path)?;
    parse_str(&src, path)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// State shared by the top-level document and every file it includes.
struct Ctx {
    /// Files currently being read, outermost first (cycle and depth detection).
    stack: Vec<PathBuf>,
    /// Directory of the top-level file: libconfig's `include_dir`, tried for nested includes
    /// whose path does not exist next to the including file.
    root_dir: PathBuf,
    /// Bytes of all files read so far.
    total: u64,
    /// Files included so far.
    files: usize,
    hasher: RandomState,
}

/// The settings of one group while it is being parsed, with an index for duplicate names.
struct Members {
    items: Vec<(String, Node)>,
    /// Hash of a name → index of the first member with that hash.
    seen: HashMap<u64, usize>,
}

impl Members {
    fn new() -> Self {
        Members {
            items: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// The earlier member called `name`, if any.
    fn find(&self, hash: u64, name: &str) -> Option<&Node> {
        let &idx = self.seen.get(&hash)?;
        if self.items[idx].0 == name {
            return Some(&self.items[idx].1);
        }
        // Two names with one 64-bit hash: practically never; fall back to a scan.
        self.items.iter().find(|(k, _)| k == name).map(|(_, n)| n)
    }

    fn push(&mut self, hash: u64, name: String, node: Node) {
        if let Entry::Vacant(e) = self.seen.entry(hash) {
            e.insert(self.items.len());
        }
        self.items.push((name, node));
    }
}

/// Where the values of an `@include`d file go.
enum Dest<'o> {
    /// Settings of the enclosing group.
    Settings(&'o mut Members),
    /// Elements of the enclosing list or array (the file's elements are spliced in).
    Elements(&'o mut ElementState),
}

/// A list or array being parsed; survives across spliced `@include`s.
struct ElementState {
    items: Vec<Node>,
    /// Whether the next token must be a value (else a separator or the close).
    want_value: bool,
    close: char,
}

impl ElementState {
    fn kind(&self) -> &'static str {
        if self.close == ')' {
            "list"
        } else {
            "array"
        }
    }
}

/// The last computed position; positions are asked for in file order, so each call only
/// counts the characters since the previous one.
#[derive(Clone, Copy, Default)]
struct Cursor {
    offset: usize,
    line_idx: usize,
    /// Characters from the line start to `offset`.
    col: usize,
}

/// One source text being parsed (the top-level file or an included one).
struct Doc<'s, 'a> {
    src: &'s str,
    file: Arc<Path>,
    line_starts: Vec<usize>,
    ctx: &'a mut Ctx,
    /// Containers currently open around the parse position (across includes).
    nesting: usize,
    cursor: Cell<Cursor>,
}

fn located<'s, T>(at: &'s str, err: Error) -> PResult<'s, T> {
    Err(nom::Err::Failure(PError {
        at,
        kind: PErrorKind::Located(Box::new(err)),
    }))
}

impl<'s, 'a> Doc<'s, 'a> {
    fn new(src: &'s str, file: Arc<Path>, ctx: &'a mut Ctx) -> Self {
        let line_starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Doc {
            src,
            file,
            line_starts,
            ctx,
            nesting: 0,
            cursor: Cell::new(Cursor::default()),
        }
    }

    fn loc(&self, at: &str) -> Location {
        let offset = self.src.len().saturating_sub(at.len());
        let line_idx = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line_idx];
        let cur = self.cursor.get();
        let chars = |from: usize| self.src.get(from..offset).map_or(0, |s| s.chars().count());
        let col = if cur.line_idx == line_idx && cur.offset <= offset {
            cur.col + chars(cur.offset)
        } else {
            chars(start)
        };
        self.cursor.set(Cursor {
            offset,
            line_idx,
            col,
        });
        Location {
            file: self.file.clone(),
            line: u32::try_from(line_idx + 1).unwrap_or(u32::MAX),
            col: u32::try_from(col + 1).unwrap_or(u32::MAX),
        }
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
        let mut members = Members::new();
        let src = self.src;
        let at = self.loc(src);
        match self.settings(src, None, &mut members) {
            Ok(_) => Ok(Node::new(
                Value::Group(members.items),
                at.file,
                at.line,
                at.col,
            )),
            Err(e) => Err(self.to_error(e)),
        }
    }

    /// Settings until `close` (not consumed) or, for the root and included files, end of input.
    fn settings(
        &mut self,
        mut i: &'s str,
        close: Option<(char, &'s str)>,
        out: &mut Members,
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
                (i, _) = self.include(i, Dest::Settings(out))?;
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
            let l = self.loc(at);
            let (r, _) = lex::skip(r)?;
            let Ok((r, _)) = one_of::<_, _, PError<'_>>("=:").parse(r) else {
                return fail(
                    r,
                    format!("expected '=' or ':' after setting name \"{name}\""),
                );
            };
            let (r, _) = lex::skip(r)?;
            let (r, mut node) = self.value(r, Some(name))?;
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
            let hash = self.ctx.hasher.hash_one(name);
            if let Some(first) = out.find(hash, name) {
                return located(
                    at,
                    Error::DuplicateSetting {
                        at: l,
                        name: name.to_string(),
                        first_line: first.line,
                    },
                );
            }
            out.push(hash, name.to_string(), node);
        }
    }

    /// A value. Containers raise `self.nesting` while their contents are parsed.
    fn value(&mut self, i: &'s str, setting: Option<&str>) -> PResult<'s, Node> {
        match i.chars().next() {
            Some(open @ ('{' | '(' | '[')) => {
                let l = self.loc(i);
                if self.nesting >= MAX_NESTING {
                    return located(
                        i,
                        Error::TooDeep {
                            at: l,
                            limit: MAX_NESTING,
                        },
                    );
                }
                self.nesting += 1;
                let res = self.container(i, open);
                self.nesting -= 1;
                let (r, v) = res?;
                Ok((r, Node::new(v, l.file, l.line, l.col)))
            }
            Some('"') => {
                let l = self.loc(i);
                let (r, s) = lex::string(i)?;
                Ok((r, Node::new(Value::Str(s), l.file, l.line, l.col)))
            }
            _ => match nom::branch::alt((lex::boolean, lex::number)).parse(i) {
                Ok((r, v)) => {
                    let l = self.loc(i);
                    Ok((r, Node::new(v, l.file, l.line, l.col)))
                }
                Err(nom::Err::Error(_)) => match setting {
                    Some(name) => fail(i, format!("expected a value for setting \"{name}\"")),
                    None => fail(i, "expected a value"),
                },
                Err(e) => Err(e),
            },
        }
    }

    fn container(&mut self, i: &'s str, open: char) -> PResult<'s, Value> {
        let body = &i[1..];
        match open {
            '{' => {
                let mut members = Members::new();
                let (r, _) = self.settings(body, Some(('}', i)), &mut members)?;
                let (r, _) = char('}').parse(r)?;
                Ok((r, Value::Group(members.items)))
            }
            '(' => {
                let (r, items) = self.elements(body, i, ')')?;
                Ok((r, Value::List(items)))
            }
            _ => {
                let (r, items) = self.elements(body, i, ']')?;
                if let Some(bad) = items.iter().find(|n| !n.value.is_scalar()) {
                    return self.fail_at_node(
                        bad,
                        i,
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
                        return self.fail_at_node(
                            bad,
                            i,
                            format!(
                                "array elements must all have one type: expected {}, found {}",
                                first.value.type_name(),
                                bad.value.type_name()
                            ),
                        );
                    }
                }
                Ok((r, Value::Array(items)))
            }
        }
    }

    /// An error pointing at `node` (which may come from an included file).
    fn fail_at_node<T>(&self, node: &Node, fallback: &'s str, msg: String) -> PResult<'s, T> {
        if *node.file != *self.file {
            return located(
                fallback,
                Error::Syntax {
                    at: node.location(),
                    message: msg,
                },
            );
        }
        fail(self.at_of(node, fallback), msg)
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
    fn elements(&mut self, i: &'s str, open: &'s str, close: char) -> PResult<'s, Vec<Node>> {
        let mut state = ElementState {
            items: Vec::new(),
            want_value: true,
            close,
        };
        let (r, _) = self.element_run(i, Some(open), &mut state)?;
        Ok((r, state.items))
    }

    /// Elements until the close (`open` is `Some`) or the end of an included fragment.
    fn element_run(
        &mut self,
        mut i: &'s str,
        open: Option<&'s str>,
        st: &mut ElementState,
    ) -> PResult<'s, ()> {
        let close = st.close;
        let kind = st.kind();
        loop {
            (i, _) = lex::skip(i)?;
            if let Some(r) = i.strip_prefix(close) {
                if open.is_none() {
                    return fail(
                        i,
                        format!("unexpected '{close}': an included file cannot close the {kind}"),
                    );
                }
                return Ok((r, ()));
            }
            if i.is_empty() {
                return match open {
                    None => Ok((i, ())),
                    Some(open) => {
                        let line = self.loc(open).line;
                        fail(
                            i,
                            format!("unexpected end of file: expected '{close}' to close the {kind} opened at line {line}"),
                        )
                    }
                };
            }
            if i.starts_with("@include") {
                (i, _) = self.include(i, Dest::Elements(st))?;
                continue;
            }
            if st.want_value {
                let (r, node) = self.value(i, None)?;
                st.items.push(node);
                st.want_value = false;
                i = r;
            } else if let Some(r) = i.strip_prefix(',') {
                st.want_value = true;
                i = r;
            } else {
                return fail(i, format!("expected ',' or '{close}' in {kind}"));
            }
        }
    }

    /// `@include "file"` / `@include "dir/*.cfg"`: the files' settings are merged into the
    /// current group, or their elements spliced into the current list or array.
    fn include(&mut self, i: &'s str, mut into: Dest<'_>) -> PResult<'s, ()> {
        let (r, _) = tag("@include").parse(i)?;
        let (r, _) = lex::skip(r)?;
        if !r.starts_with('"') {
            return fail(r, "expected a quoted file name after @include");
        }
        let (r, name) = lex::string(r)?;
        let at = self.loc(i);
        // The stack holds the top-level file plus one entry per include level.
        if self.ctx.stack.len() > MAX_INCLUDE_DEPTH {
            return located(
                i,
                Error::IncludeDepth {
                    at,
                    limit: MAX_INCLUDE_DEPTH,
                },
            );
        }
        let files = match self.resolve(&name, &at) {
            Ok(f) => f,
            Err(e) => return located(i, e),
        };
        if files.len() > MAX_INCLUDE_FILES - self.ctx.files.min(MAX_INCLUDE_FILES) {
            return located(
                i,
                Error::TooManyIncludes {
                    at,
                    limit: MAX_INCLUDE_FILES,
                },
            );
        }
        for path in files {
            if let Err(e) = self.include_one(&path, &at, &mut into) {
                return located(i, e);
            }
        }
        Ok((r, ()))
    }

    /// The files an `@include` names: one path, or the sorted matches of a wildcard pattern
    /// (possibly none, as with glob(3)'s no-match). Relative paths are looked up next to the
    /// including file, then (for nested includes) next to the top-level file.
    fn resolve(&self, name: &str, at: &Location) -> Result<Vec<PathBuf>, Error> {
        let target = Path::new(name);
        let mut bases: Vec<PathBuf> = Vec::new();
        if target.is_absolute() {
            bases.push(PathBuf::new());
        } else {
            bases.push(
                self.file
                    .parent()
                    .unwrap_or_else(|| Path::new(""))
                    .to_path_buf(),
            );
            if self.ctx.stack.len() > 1 && bases[0] != self.ctx.root_dir {
                bases.push(self.ctx.root_dir.clone());
            }
        }
        let file_name = target.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let dir_part = target.parent().unwrap_or_else(|| Path::new(""));
        if !is_pattern(file_name) {
            if dir_part.to_str().is_some_and(is_pattern) {
                return Err(wildcard_dir(at, name));
            }
            let first = bases[0].join(target);
            for base in &bases {
                let p = base.join(target);
                if std::fs::symlink_metadata(&p).is_ok() {
                    return Ok(vec![p]);
                }
            }
            // Missing everywhere: report the path next to the including file.
            return Ok(vec![first]);
        }
        if dir_part.to_str().is_some_and(is_pattern) {
            return Err(wildcard_dir(at, name));
        }
        for base in &bases {
            let dir = base.join(dir_part);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Include {
                        at: at.clone(),
                        path: dir,
                        source,
                    })
                }
            };
            let mut names: Vec<String> = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| Error::Include {
                    at: at.clone(),
                    path: dir.clone(),
                    source,
                })?;
                let Ok(n) = entry.file_name().into_string() else {
                    continue;
                };
                // glob(3): a leading '.' must be matched explicitly.
                if n.starts_with('.') && !file_name.starts_with('.') {
                    continue;
                }
                if wildcard_match(file_name.as_bytes(), n.as_bytes()) {
                    names.push(n);
                    if names.len() > MAX_INCLUDE_FILES {
                        return Err(Error::TooManyIncludes {
                            at: at.clone(),
                            limit: MAX_INCLUDE_FILES,
                        });
                    }
                }
            }
            if !names.is_empty() {
                names.sort_unstable();
                return Ok(names.into_iter().map(|n| dir.join(n)).collect());
            }
        }
        Ok(Vec::new())
    }

    fn include_one(
        &mut self,
        path: &Path,
        at: &Location,
        into: &mut Dest<'_>,
    ) -> Result<(), Error> {
        let canon = canonical(path);
        if self.ctx.stack.contains(&canon) {
            return Err(Error::IncludeCycle {
                at: at.clone(),
                path: path.to_path_buf(),
            });
        }
        if self.ctx.files >= MAX_INCLUDE_FILES {
            return Err(Error::TooManyIncludes {
                at: at.clone(),
                limit: MAX_INCLUDE_FILES,
            });
        }
        let remaining = MAX_TOTAL_SIZE.saturating_sub(self.ctx.total);
        let refused = |source: Error| Error::IncludeRefused {
            at: at.clone(),
            source: Box::new(source),
        };
        let bytes = match read_file_bytes(path, MAX_FILE_SIZE.min(remaining)) {
            Ok(b) => b,
            Err(Error::Read { source, .. }) => {
                return Err(Error::Include {
                    at: at.clone(),
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(Error::FileTooLarge { size, .. }) if size <= MAX_FILE_SIZE => {
                return Err(refused(Error::TotalTooLarge {
                    path: path.to_path_buf(),
                    limit: MAX_TOTAL_SIZE,
                }))
            }
            Err(Error::FileTooLarge { size, .. }) => {
                return Err(refused(Error::FileTooLarge {
                    path: path.to_path_buf(),
                    size,
                    limit: MAX_FILE_SIZE,
                }))
            }
            Err(e) => return Err(refused(e)),
        };
        self.ctx.total += bytes.len() as u64;
        self.ctx.files += 1;
        let text = decode_utf8(bytes, path)?;
        self.ctx.stack.push(canon);
        let nesting = self.nesting;
        let result = {
            let mut sub = Doc::new(&text, Arc::from(path), self.ctx);
            sub.nesting = nesting;
            let res = match into {
                Dest::Settings(out) => sub.settings(&text, None, out),
                Dest::Elements(st) => sub.element_run(&text, None, st),
            };
            res.map(|_| ()).map_err(|e| sub.to_error(e))
        };
        self.ctx.stack.pop();
        result
    }
}

fn wildcard_dir(at: &Location, name: &str) -> Error {
    Error::Syntax {
        at: at.clone(),
        message: format!(
            "@include \"{name}\": wildcards are only supported in the file name, not in directories"
        ),
    }
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// fnmatch(3)-style match of one file name: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`/`[^x]`.
/// Backtracks only to the last `*`, so it is O(pattern × name) at worst.
fn wildcard_match(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pat.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match class_match(&pat[p..], name[n]) {
                Some((true, len)) => Some(p + len),
                Some((false, _)) => None,
                // An unclosed '[' is a literal character.
                None => (name[n] == b'[').then_some(p + 1),
            },
            Some(&c) => (c == name[n]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(np) => {
                p = np;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Match `c` against the bracket expression at the start of `pat`; returns whether it matched
/// and the expression's length, or `None` if the bracket is not closed.
fn class_match(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &lo = pat.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pat[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        let m = |p: &str, n: &str| wildcard_match(p.as_bytes(), n.as_bytes());
        assert!(m("book*.cfg", "book1.cfg"));
        assert!(m("book*.cfg", "book.cfg"));
        assert!(!m("book*.cfg", "book1.cfgx"));
        assert!(m("*", "anything"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("[ab]*", "b1"));
        assert!(!m("[!ab]*", "b1"));
        assert!(m("[a-c]x", "bx"));
        assert!(m("*.c*f*g", "x.conf.cfg"));
        assert!(m("[x", "[x"));
        assert!(m("[]]", "]"));
    }
}
