//! The CoRE Link Format (RFC 6690 §2) of LwM2M register bodies, and the object instances they
//! list.
//!
//! A register body such as `</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>,</19/0>,</19/1>` is
//! parsed by [`parse`] (or [`parse_bytes`] for the raw payload) into [`Link`]s, each a target
//! and its parameters, and [`lwm2m_objects`] then reads the LwM2M objects and object instances
//! out of them. The parser is bounded by a maximum input length and a maximum number of links,
//! both chosen by the caller, and reports every syntax error with its byte offset. It follows
//! the grammar of RFC 6690 §2, with one leniency real devices need: spaces, tabs and line breaks
//! are skipped around the `,` and `;` separators and at both ends.
//!
//! [`render`] writes links back in the same format; parsing what it renders gives the same
//! links.

#[cfg(test)]
mod tests;

use std::fmt;

/// A parameter value: a `ptoken` (`ct=11543`) or the content of a `quoted-string`
/// (`rt="oma.lwm2m"`, escapes removed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParamValue {
    /// An unquoted value.
    Token(String),
    /// A quoted value, without its quotes and with `\x` escapes resolved.
    Quoted(String),
}

impl ParamValue {
    /// The value's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Token(s) | Self::Quoted(s) => s,
        }
    }
}

/// One link parameter: `name`, `name=token` or `name="quoted"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkParam {
    /// The parameter name as sent (names compare case-insensitively).
    pub name: String,
    /// The value, absent for a bare name.
    pub value: Option<ParamValue>,
}

/// One link-value: `<target>` and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    /// The URI reference between `<` and `>`, e.g. `/3/0`.
    pub target: String,
    /// The parameters in the order sent.
    pub params: Vec<LinkParam>,
}

impl Link {
    /// The first parameter with this name (ASCII case-insensitive).
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&LinkParam> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The value of the first parameter with this name, if it has one.
    #[must_use]
    pub fn value(&self, name: &str) -> Option<&str> {
        self.param(name)?.value.as_ref().map(ParamValue::as_str)
    }

    /// Whether the `rt` parameter (a space-separated list of resource types) holds `rt`.
    #[must_use]
    pub fn has_resource_type(&self, rt: &str) -> bool {
        self.value("rt")
            .is_some_and(|types| types.split_ascii_whitespace().any(|t| t == rt))
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.target)?;
        for param in &self.params {
            write!(f, ";{}", param.name)?;
            match &param.value {
                None => {}
                Some(ParamValue::Token(token)) => write!(f, "={token}")?,
                Some(ParamValue::Quoted(text)) => {
                    f.write_str("=\"")?;
                    for c in text.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

/// Writes links in the CoRE Link Format, separated by `,`.
#[must_use]
pub fn render(links: &[Link]) -> String {
    links
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a link-format document was refused. Offsets are byte offsets into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The input is longer than the caller's limit.
    #[error("link format of {len} bytes exceeds the {max}-byte limit")]
    TooLong {
        /// The input's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input holds more links than the caller's limit.
    #[error("link format holds more than {max} links")]
    TooManyLinks {
        /// The limit.
        max: usize,
    },
    /// The payload is not UTF-8.
    #[error("link format is not UTF-8 (valid up to byte {valid_up_to})")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A link does not start with `<`.
    #[error("expected '<' at byte {offset}")]
    ExpectedTarget {
        /// Where.
        offset: usize,
    },
    /// A target holds a character that is not allowed in a URI reference.
    #[error("character not allowed in a link target at byte {offset}")]
    BadTarget {
        /// Where.
        offset: usize,
    },
    /// A `<` without its `>`.
    #[error("link target opened at byte {offset} is not closed with '>'")]
    UnterminatedTarget {
        /// Where the target opened.
        offset: usize,
    },
    /// A `;` not followed by a parameter name.
    #[error("expected a parameter name at byte {offset}")]
    BadParamName {
        /// Where.
        offset: usize,
    },
    /// A `=` not followed by a token or a quoted string, or a control character in a quoted
    /// string.
    #[error("bad parameter value at byte {offset}")]
    BadParamValue {
        /// Where.
        offset: usize,
    },
    /// A quoted string without its closing `"`.
    #[error("quoted string opened at byte {offset} is not closed")]
    UnterminatedQuote {
        /// Where the string opened.
        offset: usize,
    },
    /// Something other than `,` or `;` after a link or parameter.
    #[error("unexpected {found:?} at byte {offset}; expected ',' or ';'")]
    UnexpectedChar {
        /// Where.
        offset: usize,
        /// The character found.
        found: char,
    },
}

/// Parses a link-format payload: [`parse`] after a UTF-8 check.
pub fn parse_bytes(input: &[u8], max_links: usize, max_len: usize) -> Result<Vec<Link>, LinkError> {
    if input.len() > max_len {
        return Err(LinkError::TooLong {
            len: input.len(),
            max: max_len,
        });
    }
    let text = std::str::from_utf8(input).map_err(|e| LinkError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    parse(text, max_links, max_len)
}

/// Parses a link-format document of at most `max_len` bytes and `max_links` links. An empty
/// document (or one of whitespace only) has no links. Never panics.
pub fn parse(input: &str, max_links: usize, max_len: usize) -> Result<Vec<Link>, LinkError> {
    if input.len() > max_len {
        return Err(LinkError::TooLong {
            len: input.len(),
            max: max_len,
        });
    }
    let mut parser = Parser { input, pos: 0 };
    let mut links = Vec::new();
    parser.skip_ws();
    if parser.at_end() {
        return Ok(links);
    }
    loop {
        if links.len() >= max_links {
            return Err(LinkError::TooManyLinks { max: max_links });
        }
        links.push(parser.link()?);
        parser.skip_ws();
        match parser.peek() {
            None => return Ok(links),
            Some(',') => {
                parser.bump(',');
                parser.skip_ws();
            }
            Some(found) => {
                return Err(LinkError::UnexpectedChar {
                    offset: parser.pos,
                    found,
                });
            }
        }
    }
}

/// Characters of an RFC 3986 URI reference: unreserved, reserved and `%`.
fn is_uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

/// `parmname` of RFC 5988 §5, plus `*` for `ext-name-star`.
fn is_parmname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$&+-.^_`|~*".contains(c)
}

/// `ptokenchar` of RFC 6690 §2.
fn is_ptoken_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'()*+-./:<=>?@[]^_`{|}~".contains(c)
}

#[derive(Debug)]
struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn bump(&mut self, c: char) {
        self.pos += c.len_utf8();
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek()
            && matches!(c, ' ' | '\t' | '\r' | '\n')
        {
            self.bump(c);
        }
    }

    /// Consumes the longest run of characters matching `pred` and returns it.
    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> &str {
        let start = self.pos;
        while let Some(c) = self.peek()
            && pred(c)
        {
            self.bump(c);
        }
        self.input.get(start..self.pos).unwrap_or_default()
    }

    fn link(&mut self) -> Result<Link, LinkError> {
        let open = self.pos;
        if self.peek() != Some('<') {
            return Err(LinkError::ExpectedTarget { offset: open });
        }
        self.bump('<');
        let target = self.take_while(is_uri_char).to_owned();
        match self.peek() {
            Some('>') => self.bump('>'),
            None => return Err(LinkError::UnterminatedTarget { offset: open }),
            Some(_) => return Err(LinkError::BadTarget { offset: self.pos }),
        }
        let mut params = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() != Some(';') {
                return Ok(Link { target, params });
            }
            self.bump(';');
            self.skip_ws();
            params.push(self.param()?);
        }
    }

    fn param(&mut self) -> Result<LinkParam, LinkError> {
        let at = self.pos;
        let name = self.take_while(is_parmname_char).to_owned();
        if name.is_empty() {
            return Err(LinkError::BadParamName { offset: at });
        }
        if self.peek() != Some('=') {
            return Ok(LinkParam { name, value: None });
        }
        self.bump('=');
        let value = if self.peek() == Some('"') {
            ParamValue::Quoted(self.quoted()?)
        } else {
            let at = self.pos;
            let token = self.take_while(is_ptoken_char).to_owned();
            if token.is_empty() {
                return Err(LinkError::BadParamValue { offset: at });
            }
            ParamValue::Token(token)
        };
        Ok(LinkParam {
            name,
            value: Some(value),
        })
    }

    /// A `quoted-string`, the cursor on its opening quote.
    fn quoted(&mut self) -> Result<String, LinkError> {
        let open = self.pos;
        self.bump('"');
        let mut text = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(LinkError::UnterminatedQuote { offset: open });
            };
            if c.is_control() && c != '\t' {
                return Err(LinkError::BadParamValue { offset: self.pos });
            }
            self.bump(c);
            match c {
                '"' => return Ok(text),
                '\\' => {
                    let Some(escaped) = self.peek() else {
                        return Err(LinkError::UnterminatedQuote { offset: open });
                    };
                    if escaped.is_control() && escaped != '\t' {
                        return Err(LinkError::BadParamValue { offset: self.pos });
                    }
                    self.bump(escaped);
                    text.push(escaped);
                }
                _ => text.push(c),
            }
        }
    }
}

/// An LwM2M object, or one instance of it, listed in a register or update body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectInstance {
    /// The object id (`/3` is the Device object).
    pub object: u16,
    /// The instance id, absent when the link names the object alone.
    pub instance: Option<u16>,
}

/// The LwM2M object ids and instance ids end at 65534; 65535 is reserved.
const MAX_LWM2M_ID: u16 = 65_534;

fn lwm2m_id(segment: &str) -> Option<u16> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse::<u16>().ok().filter(|&id| id <= MAX_LWM2M_ID)
}

/// The objects and object instances listed in an LwM2M register or update body, in the order
/// sent.
///
/// The link with `rt="oma.lwm2m"` names the root of the LwM2M objects (its target is the
/// alternate path, `/` by default, LwM2M 1.1 TS Core §6.2.1); it is skipped, as is `</>`, and
/// the other targets are read relative to it: `</lwm2m>;rt="oma.lwm2m",</lwm2m/3/0>` lists
/// instance 0 of object 3. Targets outside that root, or naming a resource rather than an
/// object or instance, or with an id that is not a decimal number up to 65534, are skipped.
#[must_use]
pub fn lwm2m_objects(links: &[Link]) -> Vec<ObjectInstance> {
    let root = links
        .iter()
        .find(|link| link.has_resource_type("oma.lwm2m"))
        .map(|link| link.target.trim_end_matches('/'))
        .unwrap_or_default();
    links
        .iter()
        .filter(|link| !link.has_resource_type("oma.lwm2m") && link.target != "/")
        .filter_map(|link| {
            let path = link.target.strip_prefix(root)?.strip_prefix('/')?;
            let mut segments = path.split('/');
            let object = lwm2m_id(segments.next()?)?;
            let instance = match segments.next() {
                None => None,
                Some(segment) => Some(lwm2m_id(segment)?),
            };
            if segments.next().is_some() {
                return None;
            }
            Some(ObjectInstance { object, instance })
        })
        .collect()
}
