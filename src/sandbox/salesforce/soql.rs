//! A SOQL subset: tokenizer and recursive-descent parser (pure; no schema).
//!
//! ```text
//! query   := SELECT item (, item)* FROM name [WHERE cond] [GROUP BY name]
//!            [ORDER BY order (, order)*] [LIMIT n] [OFFSET n]
//! item    := COUNT ( [name] ) [alias] | name
//! cond    := unary ((AND | OR) unary)*        -- one connective per level, as in SOQL
//! unary   := NOT unary | ( cond ) | name op value | name [NOT] IN ( value (, value)* )
//!          | name LIKE 'pattern'
//! op      := = | != | <> | < | <= | > | >=
//! value   := 'text' | number | TRUE | FALSE | NULL | YYYY-MM-DD | YYYY-MM-DDThh:mm:ss(Z|±hh:mm)
//!          | TODAY | YESTERDAY | TOMORROW | LAST_N_DAYS:n | NEXT_N_DAYS:n
//! order   := name [ASC | DESC] [NULLS FIRST | NULLS LAST]
//! ```
//!
//! Keywords are matched without case. Errors carry the character offset they point at,
//! so the caller can render Salesforce's `ERROR at Row:1:Column:N` message.

use chrono::{DateTime, NaiveDate, Utc};

use super::schema::{parse_date, parse_datetime};

/// A parse failure at a character offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: usize,
    pub message: String,
}

/// A name and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub text: String,
    pub pos: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    pub select: Vec<SelectItem>,
    pub from: Name,
    pub filter: Option<Cond>,
    pub group_by: Option<Name>,
    pub order_by: Vec<Order>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SelectItem {
    Field(Name),
    /// `COUNT()` (no field) or `COUNT(field)`, with an optional alias.
    Count {
        field: Option<Name>,
        alias: Option<String>,
        pos: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Compare {
        field: Name,
        op: Op,
        value: Literal,
        pos: usize,
    },
    In {
        field: Name,
        negated: bool,
        values: Vec<Literal>,
        pos: usize,
    },
    Like {
        field: Name,
        pattern: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A date range a relative date literal stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relative {
    Today,
    Yesterday,
    Tomorrow,
    LastNDays(u32),
    NextNDays(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Text(String),
    /// As written, so integers stay exact.
    Number(String),
    Bool(bool),
    Null,
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    Relative(Relative),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Order {
    pub field: Name,
    pub descending: bool,
    /// Salesforce's default: nulls first ascending, last descending.
    pub nulls_first: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Text(String),
    Number(String),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    Comma,
    Open,
    Close,
    Colon,
    Op(Op),
    End,
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    tok: Tok,
    pos: usize,
    /// The token as written, for "unexpected token" messages.
    raw: String,
}

/// Words that cannot name a field or an alias.
const RESERVED: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "LIMIT", "OFFSET", "GROUP", "BY",
    "ORDER", "ASC", "DESC", "NULLS", "NULL", "TRUE", "FALSE", "HAVING", "INCLUDES", "EXCLUDES",
    "WITH", "USING", "FOR",
];

fn tokenize(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let simple = match c {
            ',' => Some(Tok::Comma),
            '(' => Some(Tok::Open),
            ')' => Some(Tok::Close),
            ':' => Some(Tok::Colon),
            '=' => Some(Tok::Op(Op::Eq)),
            _ => None,
        };
        if let Some(tok) = simple {
            i += 1;
            tokens.push(Token {
                tok,
                pos: start,
                raw: c.to_string(),
            });
            continue;
        }
        let tok = match c {
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Op(Op::Ne)
            }
            '<' => {
                i += 1;
                match chars.get(i) {
                    Some('=') => {
                        i += 1;
                        Tok::Op(Op::Le)
                    }
                    Some('>') => {
                        i += 1;
                        Tok::Op(Op::Ne)
                    }
                    _ => Tok::Op(Op::Lt),
                }
            }
            '>' => {
                i += 1;
                if chars.get(i) == Some(&'=') {
                    i += 1;
                    Tok::Op(Op::Ge)
                } else {
                    Tok::Op(Op::Gt)
                }
            }
            '\'' => {
                i += 1;
                let mut value = String::new();
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(SyntaxError {
                                pos: start,
                                message: "unterminated string literal".to_owned(),
                            });
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let escaped = match chars.get(i + 1) {
                                Some('n') => '\n',
                                Some('r') => '\r',
                                Some('t') => '\t',
                                Some('b') => '\u{8}',
                                Some('f') => '\u{c}',
                                Some(c @ ('\'' | '"' | '\\')) => *c,
                                // LIKE wildcards stay escaped for the pattern matcher.
                                Some(c @ ('_' | '%')) => {
                                    value.push('\\');
                                    *c
                                }
                                _ => {
                                    return Err(SyntaxError {
                                        pos: i,
                                        message: "Invalid string literal: illegal escape sequence"
                                            .to_owned(),
                                    });
                                }
                            };
                            value.push(escaped);
                            i += 2;
                        }
                        Some(c) => {
                            value.push(*c);
                            i += 1;
                        }
                    }
                }
                Tok::Text(value)
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+')
                    && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                i += 1;
                while chars.get(i).is_some_and(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | ':' | '.')
                }) {
                    i += 1;
                }
                let raw: String = chars[start..i].iter().collect();
                classify_number(&raw).ok_or_else(|| SyntaxError {
                    pos: start,
                    message: format!("unexpected token: '{raw}'"),
                })?
            }
            c if c.is_alphabetic() || c == '_' => {
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                {
                    i += 1;
                }
                Tok::Word(chars[start..i].iter().collect())
            }
            other => {
                return Err(SyntaxError {
                    pos: start,
                    message: format!("unexpected token: '{other}'"),
                });
            }
        };
        tokens.push(Token {
            tok,
            pos: start,
            raw: chars[start..i].iter().collect(),
        });
    }
    tokens.push(Token {
        tok: Tok::End,
        pos: chars.len(),
        raw: "<EOF>".to_owned(),
    });
    Ok(tokens)
}

/// A number, a date or a date-time literal.
fn classify_number(raw: &str) -> Option<Tok> {
    if let Some(date) = parse_date(raw) {
        return Some(Tok::Date(date));
    }
    if raw.contains('T') {
        // SOQL date-times need a zone: `Z` or an offset.
        return parse_datetime(raw).map(Tok::DateTime);
    }
    let digits = raw.strip_prefix(['-', '+']).unwrap_or(raw);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next()?;
    let fraction = parts.next();
    let ok = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| Tok::Number(raw.to_owned()))
}

/// Parses one SOQL statement.
pub(crate) fn parse(text: &str) -> Result<Query, SyntaxError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, at: 0 };
    parser.query()
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        token
    }

    fn unexpected(&self) -> SyntaxError {
        let token = self.peek();
        SyntaxError {
            pos: token.pos,
            message: format!("unexpected token: '{}'", token.raw),
        }
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), SyntaxError> {
        if self.is_keyword(keyword) {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), SyntaxError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// A field or object name (not a reserved word).
    fn name(&mut self) -> Result<Name, SyntaxError> {
        match &self.peek().tok {
            Tok::Word(word) if !is_reserved(word) => {
                let name = Name {
                    text: word.clone(),
                    pos: self.peek().pos,
                };
                self.next();
                Ok(name)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn integer(&mut self) -> Result<u64, SyntaxError> {
        match &self.peek().tok {
            Tok::Number(n) => {
                let value = n.parse::<u64>().map_err(|_| self.unexpected())?;
                self.next();
                Ok(value)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn query(&mut self) -> Result<Query, SyntaxError> {
        self.keyword("SELECT")?;
        let mut select = vec![self.select_item()?];
        while self.eat(&Tok::Comma) {
            select.push(self.select_item()?);
        }
        self.keyword("FROM")?;
        let from = self.name()?;
        let filter = if self.is_keyword("WHERE") {
            self.next();
            Some(self.condition()?)
        } else {
            None
        };
        let group_by = if self.is_keyword("GROUP") {
            self.next();
            self.keyword("BY")?;
            Some(self.name()?)
        } else {
            None
        };
        let mut order_by = Vec::new();
        if self.is_keyword("ORDER") {
            self.next();
            self.keyword("BY")?;
            order_by.push(self.order()?);
            while self.eat(&Tok::Comma) {
                order_by.push(self.order()?);
            }
        }
        let limit = if self.is_keyword("LIMIT") {
            self.next();
            Some(self.integer()?)
        } else {
            None
        };
        let offset = if self.is_keyword("OFFSET") {
            self.next();
            Some(self.integer()?)
        } else {
            None
        };
        if self.peek().tok != Tok::End {
            return Err(self.unexpected());
        }
        Ok(Query {
            select,
            from,
            filter,
            group_by,
            order_by,
            limit,
            offset,
        })
    }

    fn select_item(&mut self) -> Result<SelectItem, SyntaxError> {
        let is_count = self.is_keyword("COUNT")
            && self.tokens.get(self.at + 1).map(|t| &t.tok) == Some(&Tok::Open);
        if !is_count {
            return self.name().map(SelectItem::Field);
        }
        let pos = self.next().pos;
        self.expect(&Tok::Open)?;
        let field = if self.peek().tok == Tok::Close {
            None
        } else {
            Some(self.name()?)
        };
        self.expect(&Tok::Close)?;
        let alias = match &self.peek().tok {
            Tok::Word(word) if !is_reserved(word) => {
                let alias = word.clone();
                self.next();
                Some(alias)
            }
            _ => None,
        };
        Ok(SelectItem::Count { field, alias, pos })
    }

    fn order(&mut self) -> Result<Order, SyntaxError> {
        let field = self.name()?;
        let descending = if self.is_keyword("DESC") {
            self.next();
            true
        } else {
            if self.is_keyword("ASC") {
                self.next();
            }
            false
        };
        let nulls_first = if self.is_keyword("NULLS") {
            self.next();
            if self.is_keyword("FIRST") {
                self.next();
                true
            } else {
                self.keyword("LAST")?;
                false
            }
        } else {
            !descending
        };
        Ok(Order {
            field,
            descending,
            nulls_first,
        })
    }

    /// Terms joined by one kind of connective; mixing AND and OR needs parentheses.
    fn condition(&mut self) -> Result<Cond, SyntaxError> {
        let first = self.unary()?;
        let mut terms = vec![first];
        let mut connective: Option<bool> = None; // Some(true) = AND
        loop {
            let and = if self.is_keyword("AND") {
                true
            } else if self.is_keyword("OR") {
                false
            } else {
                break;
            };
            if connective.is_some_and(|c| c != and) {
                return Err(self.unexpected());
            }
            connective = Some(and);
            self.next();
            terms.push(self.unary()?);
        }
        Ok(match (connective, terms.len()) {
            (_, 1) => terms.remove(0),
            (Some(true), _) => Cond::And(terms),
            _ => Cond::Or(terms),
        })
    }

    fn unary(&mut self) -> Result<Cond, SyntaxError> {
        if self.is_keyword("NOT") {
            self.next();
            return Ok(Cond::Not(Box::new(self.unary()?)));
        }
        if self.eat(&Tok::Open) {
            let inner = self.condition()?;
            self.expect(&Tok::Close)?;
            return Ok(inner);
        }
        let field = self.name()?;
        let pos = self.peek().pos;
        if let Tok::Op(op) = self.peek().tok {
            self.next();
            let value = self.literal()?;
            return Ok(Cond::Compare {
                field,
                op,
                value,
                pos,
            });
        }
        let negated = if self.is_keyword("NOT") {
            self.next();
            true
        } else {
            false
        };
        if self.is_keyword("IN") {
            self.next();
            self.expect(&Tok::Open)?;
            let mut values = vec![self.literal()?];
            while self.eat(&Tok::Comma) {
                values.push(self.literal()?);
            }
            self.expect(&Tok::Close)?;
            return Ok(Cond::In {
                field,
                negated,
                values,
                pos,
            });
        }
        if !negated && self.is_keyword("LIKE") {
            self.next();
            return match self.next().tok {
                Tok::Text(pattern) => Ok(Cond::Like { field, pattern }),
                _ => {
                    self.at -= 1;
                    Err(self.unexpected())
                }
            };
        }
        Err(self.unexpected())
    }

    fn literal(&mut self) -> Result<Literal, SyntaxError> {
        let token = self.peek().clone();
        let literal = match &token.tok {
            Tok::Text(text) => Literal::Text(text.clone()),
            Tok::Number(n) => Literal::Number(n.clone()),
            Tok::Date(d) => Literal::Date(*d),
            Tok::DateTime(at) => Literal::DateTime(*at),
            Tok::Word(word) => match word.to_ascii_uppercase().as_str() {
                "TRUE" => Literal::Bool(true),
                "FALSE" => Literal::Bool(false),
                "NULL" => Literal::Null,
                "TODAY" => Literal::Relative(Relative::Today),
                "YESTERDAY" => Literal::Relative(Relative::Yesterday),
                "TOMORROW" => Literal::Relative(Relative::Tomorrow),
                upper @ ("LAST_N_DAYS" | "NEXT_N_DAYS") => {
                    let last = upper == "LAST_N_DAYS";
                    self.next();
                    self.expect(&Tok::Colon)?;
                    let n = self.integer()?;
                    let n = u32::try_from(n).map_err(|_| SyntaxError {
                        pos: token.pos,
                        message: format!("unexpected token: '{n}'"),
                    })?;
                    return Ok(Literal::Relative(if last {
                        Relative::LastNDays(n)
                    } else {
                        Relative::NextNDays(n)
                    }));
                }
                _ => return Err(self.unexpected()),
            },
            _ => return Err(self.unexpected()),
        };
        self.next();
        Ok(literal)
    }
}

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str, pos: usize) -> Name {
        Name {
            text: text.to_owned(),
            pos,
        }
    }

    #[test]
    fn parses_the_supported_shapes() {
        let query = parse(
            "select Id, Email FROM Lead WHERE OwnerId = '005x' AND (IsConverted = false OR Rating != null) AND Status NOT IN ('A','B') ORDER BY Email DESC LIMIT 10 OFFSET 5",
        )
        .expect("parses");
        assert_eq!(
            query.select,
            [
                SelectItem::Field(name("Id", 7)),
                SelectItem::Field(name("Email", 11))
            ]
        );
        assert_eq!(query.from, name("Lead", 22));
        let Some(Cond::And(terms)) = &query.filter else {
            panic!("an AND: {:?}", query.filter)
        };
        assert_eq!(terms.len(), 3);
        assert!(matches!(&terms[1], Cond::Or(or) if or.len() == 2));
        assert!(matches!(&terms[2], Cond::In { negated: true, values, .. } if values.len() == 2));
        assert!(query.order_by[0].descending);
        assert!(!query.order_by[0].nulls_first);
        assert_eq!((query.limit, query.offset), (Some(10), Some(5)));
    }

    #[test]
    fn parses_counts_and_groups() {
        let query =
            parse("SELECT OwnerId, COUNT(Id) n FROM Lead GROUP BY OwnerId").expect("parses");
        assert!(matches!(
            &query.select[1],
            SelectItem::Count { field: Some(f), alias: Some(a), .. } if f.text == "Id" && a == "n"
        ));
        assert_eq!(query.group_by.map(|g| g.text), Some("OwnerId".to_owned()));
        let query = parse("SELECT COUNT() FROM Lead").expect("parses");
        assert!(matches!(
            &query.select[0],
            SelectItem::Count {
                field: None,
                alias: None,
                ..
            }
        ));
    }

    #[test]
    fn literals() {
        let query = parse(
            "SELECT Id FROM Task WHERE ActivityDate = 2024-03-01 AND CreatedDate > 2024-03-01T10:00:00Z AND CreatedDate = LAST_N_DAYS:7 AND X__c = -1.5 AND Subject = 'it\\'s'",
        )
        .expect("parses");
        let Some(Cond::And(terms)) = query.filter else {
            panic!("an AND")
        };
        let values: Vec<&Literal> = terms
            .iter()
            .map(|t| match t {
                Cond::Compare { value, .. } => value,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            values[0],
            &Literal::Date(NaiveDate::from_ymd_opt(2024, 3, 1).expect("date"))
        );
        assert!(matches!(values[1], Literal::DateTime(_)));
        assert_eq!(values[2], &Literal::Relative(Relative::LastNDays(7)));
        assert_eq!(values[3], &Literal::Number("-1.5".into()));
        assert_eq!(values[4], &Literal::Text("it's".into()));
    }

    #[test]
    fn errors_point_at_the_token() {
        let error = parse("SELECT Id FRM Lead").expect_err("malformed");
        assert_eq!(error.pos, 10);
        assert_eq!(error.message, "unexpected token: 'FRM'");
        let error = parse("SELECT Id FROM Lead WHERE A = 1 AND B = 2 OR C = 3").expect_err("mixed");
        assert_eq!(error.message, "unexpected token: 'OR'");
        let error = parse("SELECT Id FROM Lead WHERE Name = 'x").expect_err("unterminated");
        assert_eq!(error.pos, 33);
        let error = parse("SELECT Id FROM Lead LIMIT").expect_err("no number");
        assert_eq!(error.message, "unexpected token: '<EOF>'");
        assert!(parse("SELECT FROM Lead").is_err());
        assert!(parse("SELECT Id FROM Lead WHERE").is_err());
        assert!(parse("SELECT Id, FROM Lead").is_err());
    }
}
