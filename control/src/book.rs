//! Books: the collections of desired state that grow with the host — policy rules and published
//! ports — each kept as a text file beside the state, one item per line in the syntax the
//! user reads and writes.
//!
//! Hosts keep tens of thousands of them, so one change must not cost a pass over all of them:
//! adding an item appends one line, finding one is a substring search, and only removal
//! rewrites the file (bytes, no parsing). Inside the JSON state they made `control isolate`
//! parse and rewrite every rule, 13 ms at 10,000 rules (twice `iptables -I`), and `control
//! publish` every published port, 50 ms at 10,000.

use std::{
    collections::HashSet,
    fmt::Display,
    fs::{self, OpenOptions},
    os::unix::fs::FileExt,
    path::PathBuf,
    str::FromStr,
};

use crate::{
    error::{Context, Error, Result},
    state,
};

/// Items of a book: one line each, written with `Display` and read back with `FromStr`, in one
/// spelling only (so equal items are equal lines), never containing a newline.
pub trait Item: Display + FromStr<Err = Error> + PartialEq {}

impl<T: Display + FromStr<Err = Error> + PartialEq> Item for T {}

/// One book. Changes happen under the instance lock.
pub struct Book<T> {
    path: PathBuf,
    /// The file's content: whole lines, each ending in '\n'.
    text: String,
    _items: std::marker::PhantomData<T>,
}

impl<T: Item> Book<T> {
    pub fn load(path: PathBuf) -> Result<Self> {
        let mut text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(Error::Other(anyhow::anyhow!(
                    "reading {}: {e}",
                    path.display()
                )));
            }
        };
        // A command killed inside its one-line append leaves a line without its newline. That
        // item was never acknowledged, and a prefix of an item can be another valid item
        // ("isolate a" of "isolate a b"): drop it.
        if !text.is_empty() && !text.ends_with('\n') {
            let keep = text.rfind('\n').map_or(0, |i| i + 1);
            text.truncate(keep);
        }
        Ok(Self {
            path,
            text,
            _items: std::marker::PhantomData,
        })
    }

    pub fn len(&self) -> usize {
        self.text.bytes().filter(|b| *b == b'\n').count()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Whether the book holds `item`, found as its exact line.
    pub fn contains(&self, item: &T) -> bool {
        let line = item.to_string();
        self.text
            .strip_prefix(line.as_str())
            .is_some_and(|rest| rest.starts_with('\n'))
            || self.text.contains(&format!("\n{line}\n"))
    }

    /// The lines, for many membership tests at once.
    pub fn lines(&self) -> HashSet<&str> {
        self.text.lines().collect()
    }

    fn parse(&self, i: usize, line: &str) -> Result<T> {
        line.parse().map_err(|e: Error| Error::CorruptState {
            path: self.path.clone(),
            reason: format!("line {}: {e}", i + 1),
        })
    }

    /// Every item, in the order they were added.
    pub fn items(&self) -> Result<Vec<T>> {
        self.matching("", |_| true)
    }

    /// The items whose line contains `hint` and that `pred` accepts. Only lines holding the
    /// hint are parsed: with a word of the item as the hint, a search costs a scan of the text.
    pub fn matching(&self, hint: &str, pred: impl Fn(&T) -> bool) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for (i, line) in self.text.lines().enumerate() {
            if line.contains(hint) {
                let item = self.parse(i, line)?;
                if pred(&item) {
                    out.push(item);
                }
            }
        }
        Ok(out)
    }

    /// Adds one item: a single durable write, whatever the size of the book.
    pub fn append(&mut self, item: &T) -> Result<()> {
        let line = format!("{item}\n");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .ctx(|| format!("opening {}", self.path.display()))?;
        // Written at the end of what was loaded: that cuts off a torn line left on disk.
        let end = self.text.len() as u64;
        f.set_len(end)
            .and_then(|()| f.write_all_at(line.as_bytes(), end))
            .and_then(|()| f.sync_data())
            .ctx(|| format!("appending to {}", self.path.display()))?;
        self.text.push_str(&line);
        Ok(())
    }

    /// Adds many items in one atomic replacement (all or none survive a crash).
    pub fn extend(&mut self, items: &[T]) -> Result<()> {
        let mut text = self.text.clone();
        for item in items {
            text.push_str(&item.to_string());
            text.push('\n');
        }
        self.replace(text)
    }

    fn replace(&mut self, text: String) -> Result<()> {
        state::write_atomic(&self.path, text.as_bytes(), true)?;
        self.text = text;
        Ok(())
    }

    /// Keeps the items `keep` accepts, parsing only the lines that contain `hint`; returns how
    /// many went.
    pub fn retain(&mut self, hint: &str, keep: impl Fn(&T) -> bool) -> Result<usize> {
        let mut text = String::with_capacity(self.text.len());
        let mut gone = 0;
        for (i, line) in self.text.lines().enumerate() {
            if !line.contains(hint) || keep(&self.parse(i, line)?) {
                text.push_str(line);
                text.push('\n');
            } else {
                gone += 1;
            }
        }
        if gone > 0 {
            self.replace(text)?;
        }
        Ok(gone)
    }

    /// Removes one item by its line; returns whether it was there.
    pub fn remove(&mut self, item: &T) -> Result<bool> {
        let line = item.to_string();
        let Some(at) = self.text.lines().position(|l| l == line) else {
            return Ok(false);
        };
        let text: String = self
            .text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .flat_map(|(_, l)| [l, "\n"])
            .collect();
        self.replace(text)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A toy item: a word.
    #[derive(Debug, PartialEq)]
    struct Word(String);
    impl std::fmt::Display for Word {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl FromStr for Word {
        type Err = Error;
        fn from_str(s: &str) -> Result<Self> {
            if s.is_empty() || s.contains(' ') {
                return Err(Error::invalid(format!("not a word: {s:?}")));
            }
            Ok(Word(s.to_string()))
        }
    }
    fn w(s: &str) -> Word {
        Word(s.to_string())
    }

    #[test]
    fn appends_finds_and_removes_lines() {
        let d = tempfile::tempdir().unwrap();
        let mut b: Book<Word> = Book::load(d.path().join("book")).unwrap();
        assert!(b.is_empty());
        b.append(&w("ab")).unwrap();
        b.extend(&[w("a"), w("abc")]).unwrap();
        assert_eq!(b.len(), 3);
        assert!(b.contains(&w("ab")) && b.contains(&w("a")) && b.contains(&w("abc")));
        assert!(!b.contains(&w("b")) && !b.contains(&w("bc")));
        assert_eq!(b.matching("b", |_| true).unwrap(), vec![w("ab"), w("abc")]);
        assert!(b.remove(&w("ab")).unwrap());
        assert!(!b.remove(&w("ab")).unwrap());
        assert_eq!(b.retain("c", |x| x.0 != "abc").unwrap(), 1);
        let b: Book<Word> = Book::load(d.path().join("book")).unwrap();
        assert_eq!(b.items().unwrap(), vec![w("a")]);
    }

    #[test]
    fn a_torn_append_is_dropped_and_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("book");
        let mut b: Book<Word> = Book::load(path.clone()).unwrap();
        b.append(&w("first")).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"sec").unwrap();
        let mut b: Book<Word> = Book::load(path.clone()).unwrap();
        assert_eq!(b.items().unwrap(), vec![w("first")]);
        b.append(&w("third")).unwrap();
        let b: Book<Word> = Book::load(path).unwrap();
        assert_eq!(b.items().unwrap(), vec![w("first"), w("third")]);
    }

    #[test]
    fn a_bad_line_is_reported_as_corrupt_state() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("book");
        std::fs::write(&path, "good\nnot good\n").unwrap();
        let b: Book<Word> = Book::load(path).unwrap();
        let e = b.items().unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
