//! A cursor over a rule's argument tokens, with iptables' negation forms.

use std::borrow::Cow;

/// Tokens that start something else than a module or target option: core options, `-m`, `-j`, `-g`.
const CORE: &[&str] = &[
    "-s",
    "--source",
    "--src",
    "-d",
    "--destination",
    "--dst",
    "-i",
    "--in-interface",
    "-o",
    "--out-interface",
    "-p",
    "--protocol",
    "-f",
    "--fragment",
];

const STRUCTURAL: &[&str] = &["-m", "--match", "-j", "--jump", "-g", "--goto"];

/// Whether `tok` is a core option (`-s`, `--dst`, `-p`, …).
pub(crate) fn is_core(tok: &str) -> bool {
    CORE.contains(&tok)
}

pub(crate) struct Cursor<'a> {
    toks: &'a [Cow<'a, str>],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(toks: &'a [Cow<'a, str>]) -> Self {
        Cursor { toks, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.pos).map(Cow::as_ref)
    }

    pub(crate) fn peek_at(&self, k: usize) -> Option<&'a str> {
        self.toks.get(self.pos + k).map(Cow::as_ref)
    }

    pub(crate) fn next(&mut self) -> Option<&'a str> {
        let t = self.peek();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    pub(crate) fn slice(&self, from: usize) -> Vec<String> {
        self.toks[from.min(self.pos)..self.pos]
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    /// Whether the cursor stands at the end or at the start of a core option, `-m`, `-j` or `-g`
    /// (possibly after `!`): the end of a module's or target's options.
    pub(crate) fn at_boundary(&self) -> bool {
        match self.peek() {
            None => true,
            Some("!") => self.peek_at(1).is_some_and(is_core),
            Some(t) => is_core(t) || STRUCTURAL.contains(&t),
        }
    }

    /// Skips tokens up to the next boundary.
    pub(crate) fn skip_to_boundary(&mut self) {
        while !self.at_boundary() {
            self.pos += 1;
        }
    }

    /// The next option as `(negated, "--name")` without consuming it, when the cursor stands at
    /// `[!] --name`.
    pub(crate) fn peek_option(&self) -> Option<(bool, &'a str)> {
        match self.peek()? {
            "!" => self
                .peek_at(1)
                .filter(|t| t.starts_with("--"))
                .map(|t| (true, t)),
            t if t.starts_with("--") => Some((false, t)),
            _ => None,
        }
    }

    /// Consumes what [`Cursor::peek_option`] returned.
    pub(crate) fn take_option(&mut self) {
        if self.peek() == Some("!") {
            self.pos += 1;
        }
        self.pos += 1;
    }

    /// The value of `opt`.
    pub(crate) fn value(&mut self, opt: &str) -> Result<&'a str, String> {
        self.next()
            .ok_or_else(|| format!("option `{opt}` requires a value"))
    }

    /// The value of a negatable option, also accepting the old intrapositioned form `--opt ! value`
    /// (iptables before 1.4.x printed a deprecation warning for it; 1.8 rejects it).
    pub(crate) fn value_neg(&mut self, opt: &str, negated: &mut bool) -> Result<&'a str, String> {
        let v = self.value(opt)?;
        if v == "!" {
            if *negated {
                return Err(format!("multiple `!` for `{opt}`"));
            }
            *negated = true;
            return self.value(opt);
        }
        Ok(v)
    }
}
