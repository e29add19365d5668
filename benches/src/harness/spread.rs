//! One metric's figures over the rounds of a `--rounds` run, and the
//! median and range the table and chart show of them.

/// One metric's figures from every round, for one switch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spread {
    /// The figure of each round that measured it, in round order.
    pub values: Vec<f64>,
    /// The ratio to the scenario's baseline in each round that measured
    /// both.
    pub ratios: Vec<f64>,
    /// weft's ratio to `weft-baseline` in each round that measured both
    /// (weft's spread only).
    pub weft_ratios: Vec<f64>,
}

/// The median of `values`; `None` when there are none. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The smallest and largest of `values`.
pub fn range(values: &[f64]) -> Option<(f64, f64)> {
    let min = values.iter().copied().reduce(f64::min)?;
    let max = values.iter().copied().reduce(f64::max)?;
    Some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(range(&[2.0, 0.5, 1.5]), Some((0.5, 2.0)));
        assert_eq!(range(&[]), None);
    }
}
