//! A small line diff for unit files (drift reports and golden-file test failures).
//!
//! Unit files are a few dozen lines, so a plain longest-common-subsequence table is fast
//! enough and keeps this crate free of a diff dependency. The output is unified-style:
//! `-` lines are only in the old text, `+` lines only in the new one, and changes are
//! shown with up to two lines of context.

/// Diffs `old` against `new` line by line; returns "" when they are equal.
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j] = LCS length of a[i..] and b[j..]
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 2;
    let near_change = |k: usize| {
        let lo = k.saturating_sub(CONTEXT);
        let hi = (k + CONTEXT).min(ops.len() - 1);
        (lo..=hi).any(|m| ops[m].0 != ' ')
    };
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    let mut skipped = false;
    for (k, (tag, line)) in ops.iter().enumerate() {
        if *tag == ' ' && !near_change(k) {
            if !skipped {
                out.push_str("@@\n");
                skipped = true;
            }
            continue;
        }
        skipped = false;
        out.push(*tag);
        out.push_str(line);
        out.push('\n');
    }
    if old.ends_with('\n') != new.ends_with('\n') {
        out.push_str("\\ the files differ in their final newline\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y"), "");
    }

    #[test]
    fn changed_line_shows_minus_plus_with_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n";
        let new = "1\n2\n3\nfour\n5\n6\n7\n";
        let d = unified(old, new, "disk", "rendered");
        assert_eq!(d, "--- disk\n+++ rendered\n@@\n 2\n 3\n-4\n+four\n 5\n 6\n@@\n");
    }

    #[test]
    fn final_newline_difference_is_reported() {
        let d = unified("a\n", "a", "x", "y");
        assert!(d.contains("final newline"), "{d}");
    }
}
