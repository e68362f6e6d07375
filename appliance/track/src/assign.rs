//! Optimal assignment with a cost limit, as `lap.lapjv(cost, extend_cost=True, cost_limit=t)`:
//! choose the pairing that minimises the sum of matched costs plus `t/2` for every row and column
//! left unmatched. Equivalently, maximise the sum of `t - cost` over matched pairs with
//! `cost < t`. The input is sparse, only the admissible pairs (boxes that overlap): rows and
//! columns are split into connected components of those pairs, and each component is solved
//! exactly with the Hungarian algorithm. In tracking the components are tiny (neighbouring
//! objects), so 200 objects cost little more than 200 single matches.

/// The result: matched `(row, col)` pairs and what was left over, each sorted ascending.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub matches: Vec<(usize, usize)>,
    pub unmatched_rows: Vec<usize>,
    pub unmatched_cols: Vec<usize>,
}

/// A candidate pair `(row, col, cost)`. Pairs not listed, and listed ones with
/// `cost >= limit` (or NaN), are never matched. Each pair at most once.
pub type Edge = (usize, usize, f32);

pub fn assign(rows: usize, cols: usize, edges: &[Edge], limit: f32) -> Assignment {
    let edges: Vec<Edge> = edges.iter().copied().filter(|e| e.2 < limit).collect();

    // Union-find over rows (0..rows) and columns (rows..rows+cols).
    let mut parent: Vec<usize> = (0..rows + cols).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for &(r, c, _) in &edges {
        assert!(
            r < rows && c < cols,
            "edge ({r}, {c}) outside {rows}x{cols}"
        );
        let (a, b) = (find(&mut parent, r), find(&mut parent, rows + c));
        if a != b {
            parent[a] = b;
        }
    }
    // Each component: its edges, rows and columns.
    let mut component_of = vec![usize::MAX; rows + cols];
    let mut components: Vec<(Vec<Edge>, Vec<usize>, Vec<usize>)> = Vec::new();
    for &e in &edges {
        let root = find(&mut parent, e.0);
        if component_of[root] == usize::MAX {
            component_of[root] = components.len();
            components.push(Default::default());
        }
        components[component_of[root]].0.push(e);
    }
    for (comp_edges, comp_rows, comp_cols) in &mut components {
        comp_rows.extend(comp_edges.iter().map(|e| e.0));
        comp_rows.sort_unstable();
        comp_rows.dedup();
        comp_cols.extend(comp_edges.iter().map(|e| e.1));
        comp_cols.sort_unstable();
        comp_cols.dedup();
    }

    let mut out = Assignment::default();
    for (comp_edges, comp_rows, comp_cols) in components {
        if comp_rows.len() == 1 || comp_cols.len() == 1 {
            // A star: the single best edge is optimal.
            let best = comp_edges.iter().min_by(|a, b| a.2.total_cmp(&b.2));
            out.matches.extend(best.map(|e| (e.0, e.1)));
            continue;
        }
        // Dense weights within the component: how much better than leaving both unmatched.
        let transpose = comp_rows.len() > comp_cols.len();
        let (small, large) = if transpose {
            (&comp_cols, &comp_rows)
        } else {
            (&comp_rows, &comp_cols)
        };
        let local = |set: &[usize], x: usize| set.binary_search(&x).expect("in component");
        let mut weight = vec![0.0f32; small.len() * large.len()];
        for &(r, c, cost) in &comp_edges {
            let (i, j) = if transpose {
                (local(small, c), local(large, r))
            } else {
                (local(small, r), local(large, c))
            };
            weight[i * large.len() + j] = limit - cost;
        }
        let w = |i: usize, j: usize| weight[i * large.len() + j];
        for (i, j) in hungarian_max(small.len(), large.len(), w) {
            if w(i, j) > 0.0 {
                let pair = if transpose {
                    (large[j], small[i])
                } else {
                    (small[i], large[j])
                };
                out.matches.push(pair);
            }
        }
    }
    out.matches.sort_unstable();
    let mut row_used = vec![false; rows];
    let mut col_used = vec![false; cols];
    for &(r, c) in &out.matches {
        row_used[r] = true;
        col_used[c] = true;
    }
    out.unmatched_rows = (0..rows).filter(|&r| !row_used[r]).collect();
    out.unmatched_cols = (0..cols).filter(|&c| !col_used[c]).collect();
    out
}

/// Maximum-weight assignment of every row of an `n x m` matrix (`n <= m`), O(n^2 m).
/// Shortest augmenting paths with potentials (Kuhn-Munkres / Jonker-Volgenant style).
fn hungarian_max(n: usize, m: usize, w: impl Fn(usize, usize) -> f32) -> Vec<(usize, usize)> {
    debug_assert!(n <= m);
    let cost = |i: usize, j: usize| -f64::from(w(i, j));
    // 1-based arrays, index 0 is the virtual start.
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0usize;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=m)
        .filter(|&j| p[j] != 0)
        .map(|j| (p[j] - 1, j - 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exhaustive reference: best total of (limit - cost) over all partial matchings.
    fn brute(cost: &[f32], rows: usize, cols: usize, limit: f32) -> f32 {
        fn go(r: usize, used: &mut Vec<bool>, c: &[f32], rows: usize, cols: usize, l: f32) -> f32 {
            if r == rows {
                return 0.0;
            }
            let mut best = go(r + 1, used, c, rows, cols, l);
            for j in 0..cols {
                let v = c[r * cols + j];
                if !used[j] && v < l {
                    used[j] = true;
                    best = best.max(l - v + go(r + 1, used, c, rows, cols, l));
                    used[j] = false;
                }
            }
            best
        }
        go(0, &mut vec![false; cols], cost, rows, cols, limit)
    }

    /// Every entry of a row-major dense matrix as an edge.
    fn dense(cost: &[f32], cols: usize) -> Vec<Edge> {
        cost.iter()
            .enumerate()
            .map(|(i, &c)| (i / cols, i % cols, c))
            .collect()
    }

    fn total(a: &Assignment, cost: &[f32], cols: usize, limit: f32) -> f32 {
        a.matches
            .iter()
            .map(|&(r, c)| limit - cost[r * cols + c])
            .sum()
    }

    #[test]
    fn prefers_the_global_optimum_over_greedy() {
        // Greedy would take (0,0)=0.1 and then (1,1)=0.75; optimal is (0,1)+(1,0).
        let cost = [0.1, 0.2, 0.15, 0.75];
        let a = assign(2, 2, &dense(&cost, 2), 0.8);
        assert_eq!(a.matches, vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn leaves_pairs_over_the_limit_unmatched() {
        let cost = [0.9, 0.95, 0.3, 0.99];
        let a = assign(2, 2, &dense(&cost, 2), 0.8);
        assert_eq!(a.matches, vec![(1, 0)]);
        assert_eq!(a.unmatched_rows, vec![0]);
        assert_eq!(a.unmatched_cols, vec![1]);
    }

    #[test]
    fn matches_exhaustive_search_on_random_matrices() {
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for _ in 0..300 {
            let rows = 1 + (rnd() * 6.0) as usize;
            let cols = 1 + (rnd() * 6.0) as usize;
            let cost: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
            let a = assign(rows, cols, &dense(&cost, cols), 0.6);
            let got = total(&a, &cost, cols, 0.6);
            let want = brute(&cost, rows, cols, 0.6);
            assert!(
                (got - want).abs() < 1e-4,
                "got {got} want {want} for {cost:?}"
            );
            let mut cs: Vec<_> = a.matches.iter().map(|m| m.1).collect();
            cs.sort_unstable();
            cs.dedup();
            assert_eq!(cs.len(), a.matches.len(), "column used twice");
            assert_eq!(a.matches.len() + a.unmatched_rows.len(), rows);
            assert_eq!(a.matches.len() + a.unmatched_cols.len(), cols);
        }
    }
}
