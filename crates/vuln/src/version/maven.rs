//! Maven version order: `org.apache.maven.artifact.versioning.ComparableVersion` as shipped in maven-artifact 3.8.
//!
//! A version is lower-cased and split into a tree of lists at `-` (and at digit/letter transitions), items being
//! numbers or qualifiers. Qualifiers order `alpha < beta < milestone < rc = cr < snapshot < "" = ga = final =
//! release < sp < anything else` (unknown ones alphabetically); `a1`/`b1`/`m1` mean alpha/beta/milestone;
//! trailing zeros and empty qualifiers are dropped ("1.0.0" = "1", "1-ga" = "1"). Maven accepts every string,
//! so parsing refuses only the empty one. Digits are ASCII digits (Java's `Character.isDigit` also accepts other
//! Unicode digits). Must never panic on any input.

use std::cmp::Ordering;
use std::fmt;

use super::{VersionError, canonical_digits, cmp_digits};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Int(String),
    Str(String),
    List(Vec<Item>),
}

const QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];
const RELEASE_INDEX: &str = "5";

fn comparable_qualifier(q: &str) -> String {
    match QUALIFIERS.iter().position(|x| *x == q) {
        Some(i) => i.to_string(),
        None => format!("{}-{q}", QUALIFIERS.len()),
    }
}

fn string_item(value: &str, followed_by_digit: bool) -> Item {
    let value = match (followed_by_digit, value) {
        (true, "a") => "alpha",
        (true, "b") => "beta",
        (true, "m") => "milestone",
        (_, v) => v,
    };
    let value = match value {
        "ga" | "final" | "release" => "",
        "cr" => "rc",
        v => v,
    };
    Item::Str(value.to_owned())
}

fn parse_item(is_digit: bool, buf: &str) -> Item {
    if is_digit { Item::Int(canonical_digits(buf)) } else { string_item(buf, false) }
}

impl Item {
    fn is_null(&self) -> bool {
        match self {
            Item::Int(v) => v == "0",
            Item::Str(s) => s.is_empty(),
            Item::List(l) => l.is_empty(),
        }
    }

    /// `Item.compareTo(other)`, where `None` is Java's `null` (the shorter side of a list).
    fn compare(&self, other: Option<&Item>) -> Ordering {
        match (self, other) {
            (Item::Int(v), None) => {
                if v == "0" {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                }
            }
            (Item::Int(a), Some(Item::Int(b))) => cmp_digits(a, b),
            (Item::Int(_), Some(_)) => Ordering::Greater,
            (Item::Str(s), None) => comparable_qualifier(s).as_str().cmp(RELEASE_INDEX),
            (Item::Str(_), Some(Item::Int(_) | Item::List(_))) => Ordering::Less,
            (Item::Str(a), Some(Item::Str(b))) => comparable_qualifier(a).cmp(&comparable_qualifier(b)),
            (Item::List(l), None) => l.first().map_or(Ordering::Equal, |first| first.compare(None)),
            (Item::List(_), Some(Item::Int(_))) => Ordering::Less,
            (Item::List(_), Some(Item::Str(_))) => Ordering::Greater,
            (Item::List(a), Some(Item::List(b))) => {
                for i in 0..a.len().max(b.len()) {
                    let r = match (a.get(i), b.get(i)) {
                        (Some(l), r) => l.compare(r),
                        (None, Some(r)) => r.compare(None).reverse(),
                        (None, None) => Ordering::Equal,
                    };
                    if r != Ordering::Equal {
                        return r;
                    }
                }
                Ordering::Equal
            }
        }
    }
}

/// An arena of lists while parsing; `Node::List` points at another arena slot.
enum Node {
    Leaf(Item),
    List(usize),
}

struct Builder {
    lists: Vec<Vec<Node>>,
    stack: Vec<usize>,
    current: usize,
}

impl Builder {
    fn add(&mut self, item: Item) {
        self.lists[self.current].push(Node::Leaf(item));
    }

    /// `list.add(list = new ListItem()); stack.push(list);`
    fn open(&mut self) {
        let id = self.lists.len();
        self.lists.push(Vec::new());
        self.lists[self.current].push(Node::List(id));
        self.current = id;
        self.stack.push(id);
    }

    fn is_null(&self, node: &Node) -> bool {
        match node {
            Node::Leaf(item) => item.is_null(),
            Node::List(id) => self.lists[*id].is_empty(),
        }
    }

    /// `ListItem.normalize()`: drop trailing null items, looking through trailing non-empty lists.
    fn normalize(&mut self, id: usize) {
        let mut i = self.lists[id].len();
        while i > 0 {
            i -= 1;
            if self.is_null(&self.lists[id][i]) {
                self.lists[id].remove(i);
            } else if matches!(self.lists[id][i], Node::Leaf(_)) {
                break;
            }
        }
    }

    fn build(&mut self, id: usize) -> Item {
        let nodes = std::mem::take(&mut self.lists[id]);
        Item::List(
            nodes
                .into_iter()
                .map(|n| match n {
                    Node::Leaf(item) => item,
                    Node::List(child) => self.build(child),
                })
                .collect(),
        )
    }
}

/// A parsed Maven version.
#[derive(Debug, Clone)]
pub struct Version {
    raw: String,
    items: Item,
}

impl Version {
    /// Parses like `new ComparableVersion(v)`; only the empty string is refused.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        if input.is_empty() {
            return Err(VersionError::new("maven", input, "empty version"));
        }
        let version = input.to_lowercase();
        let chars: Vec<(usize, char)> = version.char_indices().collect();
        let mut b = Builder { lists: vec![Vec::new()], stack: vec![0], current: 0 };
        let mut is_digit = false;
        let mut start = 0usize; // byte offset
        for (idx, &(pos, c)) in chars.iter().enumerate() {
            let next_pos = chars.get(idx + 1).map_or(version.len(), |&(p, _)| p);
            if c == '.' {
                if pos == start {
                    b.add(Item::Int("0".to_owned()));
                } else {
                    b.add(parse_item(is_digit, &version[start..pos]));
                }
                start = next_pos;
            } else if c == '-' {
                if pos == start {
                    b.add(Item::Int("0".to_owned()));
                } else {
                    b.add(parse_item(is_digit, &version[start..pos]));
                }
                start = next_pos;
                b.open();
            } else if c.is_ascii_digit() {
                if !is_digit && pos > start {
                    // 1.0.0.X1 < 1.0.0-X2: treat .X as -X for any string qualifier X.
                    if !b.lists[b.current].is_empty() {
                        b.open();
                    }
                    b.add(string_item(&version[start..pos], true));
                    start = pos;
                    b.open();
                }
                is_digit = true;
            } else {
                if is_digit && pos > start {
                    b.add(parse_item(true, &version[start..pos]));
                    start = pos;
                    b.open();
                }
                is_digit = false;
            }
        }
        if version.len() > start {
            if !is_digit && !b.lists[b.current].is_empty() {
                b.open();
            }
            b.add(parse_item(is_digit, &version[start..]));
        }
        while let Some(id) = b.stack.pop() {
            b.normalize(id);
        }
        let items = b.build(0);
        Ok(Version { raw: input.to_owned(), items })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.items.compare(Some(&other.items))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn qualifier_order() {
        let ordered = [
            "1-alpha",
            "1-alpha-1",
            "1-a2",
            "1-beta",
            "1-milestone",
            "1-rc",
            "1-snapshot",
            "1",
            "1-sp",
            "1-abc",
            "1-1",
            "1.0.1",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        for (a, b) in [("1.0.0", "1"), ("1-ga", "1"), ("1.0-final", "1"), ("1-cr1", "1-rc1"), ("1.0-1", "1-1")] {
            assert_eq!(v(a), v(b), "{a} = {b}");
        }
        assert!(Version::parse("").is_err());
    }
}
