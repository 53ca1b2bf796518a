//! The condition language: tokens, a recursive-descent parser, and the syntax tree.

use std::fmt;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    /// Whether an ordering satisfies the operator (`None` = incomparable, e.g. NaN: false).
    pub fn holds(self, ord: Option<std::cmp::Ordering>) -> bool {
        use std::cmp::Ordering::*;
        matches!(
            (self, ord),
            (Cmp::Eq, Some(Equal))
                | (Cmp::Ne, Some(Less | Greater))
                | (Cmp::Lt, Some(Less))
                | (Cmp::Le, Some(Less | Equal))
                | (Cmp::Gt, Some(Greater))
                | (Cmp::Ge, Some(Greater | Equal))
        )
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(i) => write!(f, "integer {i}"),
            Literal::Float(x) => write!(f, "number {x}"),
            Literal::Text(s) => write!(f, "text '{s}'"),
            Literal::Bool(b) => write!(f, "boolean {b}"),
        }
    }
}

/// A condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `column is null` (`true` = `is not null`).
    IsNull(String, bool),
    Compare(String, Cmp, Literal),
}

impl Expr {
    /// Columns the condition names, in order of first appearance.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect(out);
                b.collect(out);
            }
            Expr::Not(a) => a.collect(out),
            Expr::IsNull(c, _) | Expr::Compare(c, _, _) => {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Word(String), // and, or, not, is, null, true, false (lowercased)
    Lit(Literal),
    Op(Cmp),
    Open,
    Close,
}

const WORDS: [&str; 7] = ["and", "or", "not", "is", "null", "true", "false"];

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let token = match c {
            '(' => {
                i += 1;
                Token::Open
            }
            ')' => {
                i += 1;
                Token::Close
            }
            '\'' | '"' | '`' => {
                let close = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| format!("unterminated {c} starting at character {}", i + 1))?;
                let s: String = chars[i + 1..i + 1 + close].iter().collect();
                i += close + 2;
                if c == '`' {
                    Token::Ident(s)
                } else {
                    Token::Lit(Literal::Text(s))
                }
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => (Cmp::Eq, 2),
                    ('=', _) => (Cmp::Eq, 1),
                    ('!', Some('=')) => (Cmp::Ne, 2),
                    ('<', Some('>')) => (Cmp::Ne, 2),
                    ('<', Some('=')) => (Cmp::Le, 2),
                    ('<', _) => (Cmp::Lt, 1),
                    ('>', Some('=')) => (Cmp::Ge, 2),
                    ('>', _) => (Cmp::Gt, 1),
                    _ => return Err(format!("unexpected `{c}` at character {}", i + 1)),
                };
                i += len;
                Token::Op(op)
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || matches!(chars[i], '.' | '-' | '+' | '_'))
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().filter(|&&c| c != '_').collect();
                if let Ok(v) = s.parse::<i64>() {
                    Token::Lit(Literal::Int(v))
                } else if let Ok(v) = s.parse::<f64>() {
                    Token::Lit(Literal::Float(v))
                } else {
                    return Err(format!("`{s}` at character {} is not a number", start + 1));
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.'))
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                let lower = s.to_ascii_lowercase();
                if WORDS.contains(&lower.as_str()) {
                    Token::Word(lower)
                } else {
                    Token::Ident(s)
                }
            }
            c => return Err(format!("unexpected `{c}` at character {}", i + 1)),
        };
        out.push((start + 1, token));
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> String {
        match self.tokens.get(self.pos) {
            Some((p, _)) => format!("at character {p}"),
            None => "at the end".into(),
        }
    }

    fn word(&mut self, w: &str) -> bool {
        if self.peek() == Some(&Token::Word(w.into())) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.word("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.word("and") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.word("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let at = self.at();
        match self.tokens.get(self.pos).map(|(_, t)| t.clone()) {
            Some(Token::Open) => {
                self.pos += 1;
                let e = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(format!("expected `)` {}", self.at()));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Token::Ident(name)) => {
                self.pos += 1;
                if self.word("is") {
                    let negated = self.word("not");
                    if !self.word("null") {
                        return Err(format!("expected `null` after `is` {}", self.at()));
                    }
                    return Ok(Expr::IsNull(name, negated));
                }
                let Some(Token::Op(op)) = self.peek().cloned() else {
                    // A bare (boolean) column.
                    return Ok(Expr::Compare(name, Cmp::Eq, Literal::Bool(true)));
                };
                self.pos += 1;
                let lit = match self.tokens.get(self.pos).map(|(_, t)| t.clone()) {
                    Some(Token::Lit(l)) => l,
                    Some(Token::Word(w)) if w == "true" || w == "false" => {
                        Literal::Bool(w == "true")
                    }
                    Some(Token::Word(w)) if w == "null" => {
                        return Err(format!(
                            "comparing with null is never true; write `{name} is null` {}",
                            self.at()
                        ))
                    }
                    _ => return Err(format!("expected a literal {}", self.at())),
                };
                self.pos += 1;
                Ok(Expr::Compare(name, op, lit))
            }
            Some(t) => Err(format!("expected a column name or `(` {at}, found {t:?}")),
            None => Err("the condition is empty or ends too early".into()),
        }
    }
}

/// Parses a condition.
pub fn parse(text: &str) -> Result<Expr, String> {
    let mut p = Parser {
        tokens: tokenize(text)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos != p.tokens.len() {
        return Err(format!("unexpected text {}", p.at()));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_nulls() {
        let e = parse("a > 1 or b = 'x' and not c is null").unwrap();
        let want = Expr::Or(
            Box::new(Expr::Compare("a".into(), Cmp::Gt, Literal::Int(1))),
            Box::new(Expr::And(
                Box::new(Expr::Compare(
                    "b".into(),
                    Cmp::Eq,
                    Literal::Text("x".into()),
                )),
                Box::new(Expr::Not(Box::new(Expr::IsNull("c".into(), false)))),
            )),
        );
        assert_eq!(e, want);
        assert_eq!(e.columns(), vec!["a", "b", "c"]);
    }

    #[test]
    fn errors_say_where() {
        assert!(parse("a >").unwrap_err().contains("at the end"));
        assert!(parse("a > 1 b").unwrap_err().contains("character 7"));
        assert!(parse("a = null").unwrap_err().contains("is null"));
        assert!(parse("(a > 1").unwrap_err().contains("expected `)`"));
    }
}
