//! Validation rules written once, for the handler that enforces them and the OpenAPI
//! document that states them: each rule checks a value and renders its own JSON Schema, so
//! the document cannot promise what the server refuses (or the reverse). Handlers call
//! [`Text::check`] / [`Int::check`]; schema fields point at a `schema_with` function here
//! that renders the same constant.
//!
//! Lengths count Unicode scalar values, as JSON Schema's `minLength`/`maxLength` do.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;

use super::error::FieldError;

/// Which characters a text may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chars {
    /// `A-Z a-z 0-9 . _ -`: SIP usernames, skills.
    Token,
    /// Anything but control characters (Unicode category Cc: U+0000-U+001F,
    /// U+007F-U+009F), which have no place in names shown to people or put in headers.
    Printable,
}

impl Chars {
    fn allows(self, c: char) -> bool {
        match self {
            Chars::Token => c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
            Chars::Printable => !c.is_control(),
        }
    }

    /// The same set as an ECMA-262 pattern (JSON Schema's regex dialect).
    fn pattern(self) -> &'static str {
        match self {
            Chars::Token => "^[A-Za-z0-9._-]*$",
            Chars::Printable => "^[^\\x00-\\x1f\\x7f-\\x9f]*$",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Chars::Token => " from A-Z a-z 0-9 . _ -",
            Chars::Printable => ", no control characters",
        }
    }
}

/// A text field: `min..=max` characters from `chars`.
#[derive(Clone, Copy, Debug)]
pub struct Text {
    pub min: usize,
    pub max: usize,
    pub chars: Chars,
}

impl Text {
    pub const fn new(min: usize, max: usize, chars: Chars) -> Text {
        Text { min, max, chars }
    }

    pub fn is_valid(&self, v: &str) -> bool {
        let n = v.chars().count();
        (self.min..=self.max).contains(&n) && v.chars().all(|c| self.chars.allows(c))
    }

    /// What the rule asks, for the problem's message.
    pub fn message(&self) -> String {
        let len = if self.min == 0 {
            format!("at most {} characters", self.max)
        } else {
            format!("{}-{} characters", self.min, self.max)
        };
        format!("must be {len}{}", self.chars.describe())
    }

    /// Push a field error naming `field` unless `v` fits.
    pub fn check(&self, field: &str, v: &str, errors: &mut Vec<FieldError>) {
        if !self.is_valid(v) {
            errors.push(FieldError::new(field, self.message()));
        }
    }

    fn builder(&self, ty: SchemaType) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(ty)
            .min_length((self.min > 0).then_some(self.min))
            .max_length(Some(self.max))
            .pattern(Some(self.chars.pattern()))
    }

    /// `{"type": "string", "minLength", "maxLength", "pattern"}`.
    pub fn schema(&self) -> Schema {
        Schema::Object(self.builder(SchemaType::Type(Type::String)).build())
    }

    /// The same, also allowing `null`.
    pub fn nullable_schema(&self) -> Schema {
        Schema::Object(
            self.builder(SchemaType::from_iter([Type::String, Type::Null]))
                .build(),
        )
    }
}

/// An integer field: `min..=max`.
#[derive(Clone, Copy, Debug)]
pub struct Int {
    pub min: i64,
    pub max: i64,
}

impl Int {
    pub const fn new(min: i64, max: i64) -> Int {
        Int { min, max }
    }

    pub fn check(&self, field: &str, v: Option<i64>, errors: &mut Vec<FieldError>) {
        if let Some(v) = v {
            if !(self.min..=self.max).contains(&v) {
                errors.push(FieldError::new(
                    field,
                    format!("must be from {} to {}, got {v}", self.min, self.max),
                ));
            }
        }
    }

    fn builder(&self, ty: SchemaType) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(ty)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(self.min as f64))
            .maximum(Some(self.max as f64))
    }

    pub fn schema(&self) -> Schema {
        Schema::Object(self.builder(SchemaType::Type(Type::Integer)).build())
    }

    pub fn nullable_schema(&self) -> Schema {
        Schema::Object(
            self.builder(SchemaType::from_iter([Type::Integer, Type::Null]))
                .build(),
        )
    }
}

/// A number in E.164: `+`, then 8 to 15 digits, the first not 0.
#[derive(Clone, Copy, Debug)]
pub struct E164;

impl E164 {
    pub const PATTERN: &'static str = "^\\+[1-9][0-9]{7,14}$";

    pub fn is_valid(v: &str) -> bool {
        let digits = v.strip_prefix('+').unwrap_or("");
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    }

    pub fn check(field: &str, v: &str, errors: &mut Vec<FieldError>) {
        if !E164::is_valid(v) {
            errors.push(FieldError::new(
                field,
                format!("must be an E.164 number such as +14155550100, got {v:?}"),
            ));
        }
    }

    fn builder(ty: SchemaType) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(ty)
            .pattern(Some(E164::PATTERN))
            .examples([serde_json::json!("+14155550100")])
    }

    pub fn schema() -> Schema {
        Schema::Object(E164::builder(SchemaType::Type(Type::String)).build())
    }

    pub fn nullable_schema() -> Schema {
        Schema::Object(E164::builder(SchemaType::from_iter([Type::String, Type::Null])).build())
    }
}

/// An array of at most `max_items` texts, each following `item`.
pub fn text_array(item: &Text, max_items: usize, nullable: bool) -> Schema {
    let ty = if nullable {
        SchemaType::from_iter([Type::Array, Type::Null])
    } else {
        SchemaType::Type(Type::Array)
    };
    Schema::Array(
        ArrayBuilder::new()
            .schema_type(ty)
            .items(RefOr::T(item.schema()))
            .max_items(Some(max_items))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn text_counts_characters_and_checks_the_set() {
        let t = Text::new(1, 3, Chars::Token);
        assert!(t.is_valid("a.b"));
        assert!(!t.is_valid(""));
        assert!(!t.is_valid("abcd"));
        assert!(!t.is_valid("a b"));
        let p = Text::new(1, 2, Chars::Printable);
        assert!(p.is_valid("éé"), "two characters, four bytes");
        assert!(!p.is_valid("a\u{85}"), "C1 control");
        assert!(!p.is_valid("a\n"));
    }

    #[test]
    fn schema_states_the_rule() {
        let s = serde_json::to_value(Text::new(1, 64, Chars::Token).schema()).unwrap();
        assert_eq!(s["minLength"], 1);
        assert_eq!(s["maxLength"], 64);
        assert_eq!(s["pattern"], "^[A-Za-z0-9._-]*$");
        let n = serde_json::to_value(Int::new(1, 100).nullable_schema()).unwrap();
        assert_eq!(n["minimum"], 1);
        assert_eq!(n["maximum"], 100);
        assert_eq!(n["type"], serde_json::json!(["integer", "null"]));
    }

    #[test]
    fn e164() {
        for ok in ["+14155550100", "+12345678", "+123456789012345"] {
            assert!(E164::is_valid(ok), "{ok}");
        }
        for bad in [
            "14155550100",
            "+04155550100",
            "+1234567",
            "+1234567890123456",
            "+1415555010a",
            "+",
        ] {
            assert!(!E164::is_valid(bad), "{bad}");
        }
        assert_eq!(E164::PATTERN, "^\\+[1-9][0-9]{7,14}$");
    }

    /// The patterns and the checks agree on every character of the Basic Multilingual
    /// Plane's first block boundaries (the pattern is interpreted here by hand: it is a
    /// single negated or plain class).
    #[test]
    fn patterns_match_the_checks() {
        for c in (0u32..0x300).filter_map(char::from_u32) {
            let token = c.is_ascii_alphanumeric() || ".-_".contains(c);
            assert_eq!(Chars::Token.allows(c), token, "{c:?}");
            let cc = (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32));
            assert_eq!(Chars::Printable.allows(c), !cc, "{c:?}");
        }
    }
}
