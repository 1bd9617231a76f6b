//! Counting outcomes and printing the table.

use super::*;

/// Pass / mismatch / unsupported counts of one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub mismatch: usize,
    pub unsupported: usize,
    /// Time spent on this side, summed over the worker threads.
    pub seconds: f64,
}

impl Counts {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::Mismatch(_) => self.mismatch += 1,
            Outcome::Unsupported(_) => self.unsupported += 1,
        }
    }

    /// Cases counted.
    pub fn total(&self) -> usize {
        self.pass + self.mismatch + self.unsupported
    }
}

/// The counts of a run and the cases where the two sides disagree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub native: Counts,
    pub component: Counts,
    /// Passes that needed the constant-input retry (native, component).
    pub passed_with_constant_inputs: (usize, usize),
    /// Cases native tract passes but the component does not, with the component's outcome.
    pub lost: Vec<(String, Outcome)>,
    /// Cases the component passes but native tract does not, with native's outcome.
    pub gained: Vec<(String, Outcome)>,
}

impl Summary {
    /// Counts `results`.
    pub fn of(results: &[CaseResult]) -> Summary {
        let mut s = Summary::default();
        for r in results {
            s.native.add(&r.native);
            s.component.add(&r.component);
            s.native.seconds += r.native_seconds;
            s.component.seconds += r.component_seconds;
            if r.constant_inputs {
                s.passed_with_constant_inputs.0 += usize::from(r.native.is_pass());
                s.passed_with_constant_inputs.1 += usize::from(r.component.is_pass());
            }
            if r.native.is_pass() && !r.component.is_pass() {
                s.lost.push((r.name.clone(), r.component.clone()));
            }
            if r.component.is_pass() && !r.native.is_pass() {
                s.gained.push((r.name.clone(), r.native.clone()));
            }
        }
        s
    }

    /// The counts as a text table, plus the number of lost cases.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<10} {:>6} {:>9} {:>12} {:>6} {:>9}\n",
            "", "pass", "mismatch", "unsupported", "total", "seconds"
        );
        for (label, c) in [("native", self.native), ("component", self.component)] {
            out += &format!(
                "{label:<10} {:>6} {:>9} {:>12} {:>6} {:>9.1}\n",
                c.pass,
                c.mismatch,
                c.unsupported,
                c.total(),
                c.seconds
            );
        }
        out += &format!(
            "passes needing constant inputs: native {}, component {}\n",
            self.passed_with_constant_inputs.0, self.passed_with_constant_inputs.1
        );
        out += &format!("lost (native passes, component does not): {}\n", self.lost.len());
        if !self.gained.is_empty() {
            out += &format!(
                "gained (component passes, native does not): {}\n",
                self.gained.len()
            );
        }
        out
    }
}

/// The first line of a message, shortened to `max` characters, for one-line listings.
pub fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() <= max {
        line.to_string()
    } else {
        format!("{}…", line.chars().take(max).collect::<String>())
    }
}
