//! Bounds on Cedar text, checked before Cedar sees it. Cedar's parser
//! recurses once per bracket and `if` with stack frames of tens of KiB
//! (more in debug builds), so a few hundred `(` overflow a thread's stack
//! and abort the process; its dropping, validation and evaluation recurse
//! once per level of the expression tree (the last two stop at a recursion
//! limit, but then skip the policy as if it did not apply). One pass over
//! the text, outside string literals and comments, bounds both:
//!
//! * **nesting**: brackets `(`, `[`, `{` and `if` expressions open at once,
//!   at most [`MAX_NESTING`]. An `if` counts until the end of the list
//!   element or bracket it is in, as far as its `else` branch may reach.
//! * **depth**: an upper bound on the depth of the expression tree, at most
//!   [`MAX_DEPTH`]. Every operator (`&&`, `||`, comparisons, `+`, `-`, `*`,
//!   `!`, `.`, `has`, `like`, `in`, `is`, `if`) in a list element may sit
//!   above everything else in it, and every bracket adds a level, so the
//!   bound is, along the deepest path of brackets, the operators of each
//!   element on the path plus one per bracket.

/// How many brackets and `if` expressions may be open at once.
pub const MAX_NESTING: usize = 16;
/// The largest bound on an expression tree's depth.
pub const MAX_DEPTH: usize = 64;

/// Why `text` is too deep for Cedar, if it is.
pub fn problem(text: &str) -> Option<String> {
    match scan(text) {
        Bounds { nesting, .. } if nesting > MAX_NESTING => Some(format!(
            "nests brackets and `if` expressions more than {MAX_NESTING} deep; \
             at most {MAX_NESTING} levels are allowed"
        )),
        Bounds { depth, .. } if depth > MAX_DEPTH => Some(format!(
            "is an expression up to {depth} operators deep; at most {MAX_DEPTH} are allowed \
             (split long chains, or test membership with a set: [\"a\", \"b\"].contains(x))"
        )),
        _ => None,
    }
}

/// What [`scan`] measured; it stops counting once a limit is passed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    nesting: usize,
    depth: usize,
}

/// An open bracket (or the text as a whole) while scanning.
#[derive(Debug, Default)]
struct Group {
    /// Operators in the current element.
    operators: usize,
    /// `if`s in the current element.
    ifs: usize,
    /// The deepest bracket nested in the current element.
    deepest_child: usize,
    /// The deepest element of the group so far.
    deepest_element: usize,
}

impl Group {
    /// Ends the current element at `,` or `;` (or the group's end).
    fn end_element(&mut self) {
        let element = self.operators + self.deepest_child;
        self.deepest_element = self.deepest_element.max(element);
        *self = Group {
            deepest_element: self.deepest_element,
            ..Group::default()
        };
    }
}

fn is_operator_word(word: &str) -> bool {
    matches!(word, "has" | "like" | "in" | "is")
}

fn scan(text: &str) -> Bounds {
    let bytes = text.as_bytes();
    let mut groups = vec![Group::default()];
    let mut bounds = Bounds::default();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        match c {
            b'"' => {
                // A string literal: `\` escapes the next byte.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if next == Some(b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => groups.push(Group::default()),
            b')' | b']' | b'}' if groups.len() > 1 => {
                let mut group = groups.pop().expect("more than one group");
                group.end_element();
                let parent = groups.last_mut().expect("the text's own group");
                parent.deepest_child = parent.deepest_child.max(group.deepest_element + 1);
            }
            b',' | b';' => groups.last_mut().expect("a group").end_element(),
            b'&' | b'|' | b'=' if next == Some(c) => {
                groups.last_mut().expect("a group").operators += 1;
                i += 1;
            }
            b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'.' => {
                groups.last_mut().expect("a group").operators += 1;
                if next == Some(b'=') {
                    i += 1;
                }
            }
            c if c == b'_' || c.is_ascii_alphabetic() => {
                let start = i;
                while i + 1 < bytes.len()
                    && (bytes[i + 1] == b'_' || bytes[i + 1].is_ascii_alphanumeric())
                {
                    i += 1;
                }
                let word = &text[start..=i];
                let group = groups.last_mut().expect("a group");
                if word == "if" {
                    group.operators += 1;
                    group.ifs += 1;
                } else if is_operator_word(word) {
                    group.operators += 1;
                }
            }
            _ => {}
        }
        i += 1;
        let nesting = groups.len() - 1 + groups.iter().map(|g| g.ifs).sum::<usize>();
        bounds.nesting = bounds.nesting.max(nesting);
        if bounds.nesting > MAX_NESTING {
            return bounds;
        }
    }
    while groups.len() > 1 {
        // Unclosed brackets: Cedar reports the syntax error; measure what
        // is there.
        let mut group = groups.pop().expect("more than one group");
        group.end_element();
        let parent = groups.last_mut().expect("the text's own group");
        parent.deepest_child = parent.deepest_child.max(group.deepest_element + 1);
    }
    let mut text_group = groups.pop().expect("the text's own group");
    text_group.end_element();
    bounds.depth = text_group.deepest_element;
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        scan(text).depth
    }

    fn nesting(text: &str) -> usize {
        scan(text).nesting
    }

    #[test]
    fn realistic_conditions_are_shallow() {
        let condition =
            r#"principal.attributes.department == "Sales" && principal.attributes.level >= 3"#;
        assert_eq!(depth(condition), 7);
        assert_eq!(nesting(condition), 0);
        assert_eq!(problem(condition), None);
        let set = r#"["Sales", "Legal", "HR"].contains(principal.attributes.department)"#;
        assert_eq!(depth(set), 4);
        assert_eq!(nesting(set), 1);
    }

    #[test]
    fn brackets_and_ifs_nest() {
        assert_eq!(
            nesting(&format!("{}true{}", "(".repeat(5), ")".repeat(5))),
            5
        );
        assert_eq!(nesting("[[1], [2]]"), 2);
        assert_eq!(nesting("{a: {b: 1}}"), 2);
        assert_eq!(nesting("if a then if b then 1 else 2 else 3"), 2);
        // An `if` ends with its list element.
        assert_eq!(nesting("[if a then 1 else 2, if b then 1 else 2]"), 2);
        assert!(problem(&format!("{}true{}", "(".repeat(128), ")".repeat(128))).is_some());
        assert!(problem(&"[".repeat(300)).is_some());
        assert!(problem(&"{a:".repeat(300)).is_some());
        assert!(problem(&"if true then ".repeat(20)).is_some());
    }

    #[test]
    fn operator_chains_deepen_the_tree() {
        assert_eq!(depth(&format!("true{}", " && true".repeat(10))), 10);
        assert_eq!(depth(&format!("principal{}", ".a".repeat(10))), 10);
        assert_eq!(depth(&format!("{}true", "!".repeat(10))), 10);
        assert_eq!(depth("1 + 2 * 3 - 4"), 3);
        // Each bracket adds a level to the operators around it.
        assert_eq!(depth("a && (b && (c && d))"), 5);
        // List elements are siblings.
        assert_eq!(depth("[a && b, c && d, e && f]"), 2);
        assert!(problem(&format!("{}true", "!".repeat(10_000))).is_some());
        assert!(problem(&format!("true{}", " && true".repeat(100))).is_some());
    }

    #[test]
    fn strings_and_comments_do_not_count() {
        let text = "principal.name == \"((((( && \\\" ]]]]\" // (((( && &&\n && true";
        assert_eq!(nesting(text), 0);
        assert_eq!(depth(text), 3);
        assert_eq!(depth("principal.inHouse && principal.isActive"), 3);
    }
}
