//! Thin-plate-spline grid geometry of deep-text-recognition-benchmark's TPS rectifier (after RARE, Shi et al. 2016),
//! without libtorch.
//!
//! The localization network predicts F source fiducials C' (x, y in [-1, 1]). The sampling grid is
//! `P' = P_hat * inv(delta_C) * [C'; 0]`; because the padded rows are zero, `P' = M * C'` for the constant
//! `n x F` matrix [`grid_matrix`] returns (n = H*W output pixels, x fastest). The tch network and the ONNX
//! exporter both use this one matrix, so the two cannot disagree on the geometry.

/// Target fiducials C (F x 2): x = linspace(-1, 1, F/2) on the top edge (y = -1) then the bottom edge (y = 1).
pub fn target_fiducials(f: usize) -> Vec<[f64; 2]> {
    let half = f / 2;
    let xs = linspace(-1.0, 1.0, half);
    xs.iter().map(|&x| [x, -1.0]).chain(xs.iter().map(|&x| [x, 1.0])).collect()
}

/// RARE's initial source fiducials, the bias of the localization network's last FC layer, flattened as
/// (x0, y0, x1, y1, ...): top y = linspace(0, -1, F/2), bottom y = linspace(1, 0, F/2).
pub fn initial_fiducials(f: usize) -> Vec<f64> {
    let half = f / 2;
    let xs = linspace(-1.0, 1.0, half);
    let top = linspace(0.0, -1.0, half);
    let bottom = linspace(1.0, 0.0, half);
    let mut out = Vec::with_capacity(2 * f);
    for (x, y) in xs.iter().zip(&top).chain(xs.iter().zip(&bottom)) {
        out.push(*x);
        out.push(*y);
    }
    out
}

/// Source fiducials equal to the target fiducials, flattened like [`initial_fiducials`]: the identity
/// transformation (the rectified image is the input resampled). RARE's layout above instead starts from a
/// sheared half-height crop (at the left end rows y in [0, 1] are sampled, at the right end y in [-1, 0]).
pub fn identity_fiducials(f: usize) -> Vec<f64> {
    target_fiducials(f).into_iter().flatten().collect()
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
}

/// Pixel centres of an H x W output in [-1, 1]: ((arange(-W, W, 2) + 1) / W, same for H), x fastest.
pub fn pixel_grid(h: usize, w: usize) -> Vec<[f64; 2]> {
    let gx: Vec<f64> = (0..w).map(|i| (-(w as f64) + 2.0 * i as f64 + 1.0) / w as f64).collect();
    let gy: Vec<f64> = (0..h).map(|i| (-(h as f64) + 2.0 * i as f64 + 1.0) / h as f64).collect();
    gy.iter().flat_map(|&y| gx.iter().map(move |&x| [x, y])).collect()
}

/// Inverts a square row-major matrix by Gauss-Jordan elimination with partial pivoting.
fn invert(n: usize, a: &[f64]) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| m[i * n + col].abs().total_cmp(&m[j * n + col].abs())).expect("non-empty");
        assert!(m[pivot * n + col].abs() > 1e-12, "TPS system is singular (fiducials must be distinct)");
        for k in 0..n {
            m.swap(col * n + k, pivot * n + k);
            inv.swap(col * n + k, pivot * n + k);
        }
        let d = m[col * n + col];
        for k in 0..n {
            m[col * n + k] /= d;
            inv[col * n + k] /= d;
        }
        for r in 0..n {
            if r != col {
                let factor = m[r * n + col];
                if factor != 0.0 {
                    for k in 0..n {
                        m[r * n + k] -= factor * m[col * n + k];
                        inv[r * n + k] -= factor * inv[col * n + k];
                    }
                }
            }
        }
    }
    inv
}

/// The constant matrix M (row-major, `(h*w) x f`) with `P' = M * C'` for an `h x w` output.
pub fn grid_matrix(f: usize, h: usize, w: usize) -> Vec<f64> {
    let c = target_fiducials(f);
    let n3 = f + 3;
    // delta_C = [[1, C, hat_C], [0, 0, 0, C^T], [0, 0, 0, 1...1]], hat_C = r^2 ln r with a zero diagonal.
    let mut delta = vec![0.0; n3 * n3];
    for i in 0..f {
        delta[i * n3] = 1.0;
        delta[i * n3 + 1] = c[i][0];
        delta[i * n3 + 2] = c[i][1];
        for j in 0..f {
            let r = ((c[i][0] - c[j][0]).powi(2) + (c[i][1] - c[j][1]).powi(2)).sqrt();
            delta[i * n3 + 3 + j] = if i == j { 0.0 } else { r * r * r.ln() };
        }
        delta[f * n3 + 3 + i] = c[i][0];
        delta[(f + 1) * n3 + 3 + i] = c[i][1];
        delta[(f + 2) * n3 + 3 + i] = 1.0;
    }
    let inv = invert(n3, &delta);
    let p = pixel_grid(h, w);
    let mut m = vec![0.0; p.len() * f];
    let mut p_hat = vec![0.0; n3];
    for (row, pt) in p.iter().enumerate() {
        p_hat[0] = 1.0;
        p_hat[1] = pt[0];
        p_hat[2] = pt[1];
        for j in 0..f {
            let r = ((pt[0] - c[j][0]).powi(2) + (pt[1] - c[j][1]).powi(2)).sqrt();
            p_hat[3 + j] = r * r * (r + 1e-6).ln();
        }
        for col in 0..f {
            m[row * f + col] = (0..n3).map(|k| p_hat[k] * inv[k * n3 + col]).sum();
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(m: &[f64], f: usize, src: &[[f64; 2]]) -> Vec<[f64; 2]> {
        m.chunks(f).map(|row| [0, 1].map(|d| row.iter().zip(src).map(|(a, s)| a * s[d]).sum())).collect()
    }

    #[test]
    fn initial_fiducials_match_rare() {
        let b = initial_fiducials(4);
        // x = [-1, 1]; top y = [0, -1]; bottom y = [1, 0].
        assert_eq!(b, vec![-1.0, 0.0, 1.0, -1.0, -1.0, 1.0, 1.0, 0.0]);
        assert_eq!(target_fiducials(4), vec![[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]);
    }

    #[test]
    fn pixel_centres_follow_the_reference() {
        // W = 4: (arange(-4, 4, 2) + 1) / 4 = [-0.75, -0.25, 0.25, 0.75]; H = 2: [-0.5, 0.5]; x fastest.
        let p = pixel_grid(2, 4);
        assert_eq!(p[0], [-0.75, -0.5]);
        assert_eq!(p[3], [0.75, -0.5]);
        assert_eq!(p[4], [-0.75, 0.5]);
    }

    #[test]
    fn identity_fiducials_give_the_identity_grid() {
        // With C' = C the spline is the identity map, so the grid is the pixel centres themselves
        // (up to the 1e-6 inside the log), and every row of M sums to 1 (constants are reproduced).
        let (f, h, w) = (20, 8, 25);
        let m = grid_matrix(f, h, w);
        let out = apply(&m, f, &target_fiducials(f));
        for (got, want) in out.iter().zip(pixel_grid(h, w)) {
            assert!((got[0] - want[0]).abs() < 1e-4 && (got[1] - want[1]).abs() < 1e-4, "{got:?} vs {want:?}");
        }
        for row in m.chunks(f) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn shifted_and_scaled_fiducials_move_the_grid_affinely() {
        // An affine change of the fiducials, x' = 0.5x + 0.1, y' = 0.8y - 0.2, is reproduced exactly by a
        // thin-plate spline: each pixel (x, y) samples from (0.5x + 0.1, 0.8y - 0.2).
        let (f, h, w) = (10, 4, 6);
        let m = grid_matrix(f, h, w);
        let src: Vec<[f64; 2]> = target_fiducials(f).iter().map(|c| [0.5 * c[0] + 0.1, 0.8 * c[1] - 0.2]).collect();
        for (got, p) in apply(&m, f, &src).iter().zip(pixel_grid(h, w)) {
            let want = [0.5 * p[0] + 0.1, 0.8 * p[1] - 0.2];
            assert!((got[0] - want[0]).abs() < 1e-4 && (got[1] - want[1]).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    }
}
