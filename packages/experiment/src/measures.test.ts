import { CholeskyDecomposition, Matrix, QrDecomposition, SingularValueDecomposition } from 'ml-matrix';
import { describe, expect, it } from 'vitest';
import { type Features, MinibatchCka, features, linearCka, logEvidence, logme, spearman } from './measures.ts';

/** A seeded normal generator (mulberry32 + Box–Muller), so each case is the same every run. */
function normals(seed: number): () => number {
  let state = seed >>> 0;
  const uniform = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

function randomFeatures(rows: number, cols: number, seed: number): Features {
  const next = normals(seed);
  return features(rows, cols, Array.from({ length: rows * cols }, next));
}

const toMatrix = (f: Features): Matrix =>
  new Matrix(Array.from({ length: f.rows }, (_, i) => Array.from(f.data.subarray(i * f.cols, (i + 1) * f.cols))));
const fromMatrix = (m: Matrix): Features => features(m.rows, m.columns, m.to1DArray());

/** The textbook form: HSIC = tr(HKH HLH) with H = I − 11ᵀ/n built explicitly. */
function referenceCka(x: Features, y: Features): number {
  const n = x.rows;
  const h = Matrix.eye(n).sub(Matrix.ones(n, n).div(n));
  const k = toMatrix(x).mmul(toMatrix(x).transpose());
  const l = toMatrix(y).mmul(toMatrix(y).transpose());
  const hkh = h.mmul(k).mmul(h);
  const hlh = h.mmul(l).mmul(h);
  const hsic = (a: Matrix, b: Matrix): number => a.mmul(b).trace();
  return hsic(hkh, hlh) / Math.sqrt(hsic(hkh, hkh) * hsic(hlh, hlh));
}

describe('linear CKA', () => {
  const x = randomFeatures(40, 6, 1);
  const y = randomFeatures(40, 9, 2);

  it('is 1 for identical representations', () => {
    expect(linearCka(x, x)).toBeCloseTo(1, 12);
  });

  it('matches the explicit centered-Gram computation', () => {
    expect(linearCka(x, y)).toBeCloseTo(referenceCka(x, y), 10);
    // Unrelated noise with few examples is far from 1 but not 0.
    expect(linearCka(x, y)).toBeLessThan(0.6);
  });

  it('is unchanged by an orthogonal rotation and by isotropic scaling', () => {
    const q = new QrDecomposition(toMatrix(randomFeatures(6, 6, 3))).orthogonalMatrix;
    const rotated = fromMatrix(toMatrix(x).mmul(q));
    expect(rotated.data[0]).not.toBeCloseTo(x.data[0]!, 3);
    expect(linearCka(rotated, y)).toBeCloseTo(linearCka(x, y), 10);
    const scaled = fromMatrix(toMatrix(x).mul(7.5));
    expect(linearCka(scaled, y)).toBeCloseTo(linearCka(x, y), 10);
    // …but not by an anisotropic scaling: the invariance tests above can fail.
    const stretched = fromMatrix(toMatrix(x).mmul(Matrix.diag([10, 1, 1, 1, 1, 0.1])));
    expect(Math.abs(linearCka(stretched, y) - linearCka(x, y))).toBeGreaterThan(1e-3);
  });

  it('rejects representations of different images', () => {
    expect(() => linearCka(x, randomFeatures(39, 6, 4))).toThrow(/40 and 39 examples/);
  });
});

describe('minibatch CKA', () => {
  it('approaches full CKA as batches accumulate', () => {
    // y = a noisy linear map of x: a CKA well inside (0, 1).
    const rows = 3000;
    const x = randomFeatures(rows, 8, 5);
    const noise = randomFeatures(rows, 5, 6);
    const map = toMatrix(randomFeatures(8, 5, 7));
    const y = fromMatrix(toMatrix(x).mmul(map).add(toMatrix(noise).mul(3)));
    const full = linearCka(x, y);
    expect(full).toBeGreaterThan(0.2);
    expect(full).toBeLessThan(0.9);
    const slice = (f: Features, from: number, to: number): Features =>
      features(to - from, f.cols, f.data.subarray(from * f.cols, to * f.cols));
    const minibatch = new MinibatchCka();
    for (let from = 0; from < rows; from += 150) minibatch.add(slice(x, from, from + 150), slice(y, from, from + 150));
    expect(minibatch.count).toBe(20);
    expect(Math.abs(minibatch.value() - full)).toBeLessThan(0.03);
    // A single small batch is a much worse estimate than twenty.
    const one = new MinibatchCka();
    one.add(slice(x, 0, 10), slice(y, 0, 10));
    expect(Math.abs(one.value() - full)).toBeGreaterThan(Math.abs(minibatch.value() - full));
  });
});

/** The evidence from its definition: A = αI + βFᵀF, m = βA⁻¹Fᵀy, log|A| by Cholesky. */
function referenceEvidence(f: Matrix, y: Matrix, alpha: number, beta: number): number {
  const n = f.rows;
  const d = f.columns;
  const a = Matrix.eye(d).mul(alpha).add(f.transpose().mmul(f).mul(beta));
  const cholesky = new CholeskyDecomposition(a);
  const m = cholesky.solve(f.transpose().mmul(y)).mul(beta);
  const residual = f.mmul(m).sub(y).norm() ** 2;
  const mm = m.norm() ** 2;
  let logDet = 0;
  const lower = cholesky.lowerTriangularMatrix;
  for (let i = 0; i < d; i++) logDet += 2 * Math.log(lower.get(i, i));
  return (
    ((n / 2) * Math.log(beta) +
      (d / 2) * Math.log(alpha) -
      (n / 2) * Math.log(2 * Math.PI) -
      (beta / 2) * residual -
      (alpha / 2) * mm -
      logDet / 2) /
    n
  );
}

function oneHot(labels: number[], c: number): Matrix {
  return new Matrix(labels.map((label) => [label === c ? 1 : 0]));
}

describe('LogME', () => {
  const rows = 60;
  const labels = Array.from({ length: rows }, (_, i) => i % 3);
  const noise = randomFeatures(rows, 5, 8);
  // Class means far apart plus a little noise: linearly separable.
  const separable = features(
    rows,
    5,
    Array.from({ length: rows * 5 }, (_, k) => (Math.floor(k / 5) % 3 === k % 5 ? 4 : 0) + 0.3 * noise.data[k]!),
  );

  it('ranks a linearly separable feature set above noise', () => {
    expect(logme(separable, labels)).toBeGreaterThan(logme(noise, labels) + 0.5);
  });

  it('reaches the maximum of the evidence that a grid search over α and β finds', () => {
    for (const f of [separable, noise]) {
      const fm = toMatrix(f);
      let gridTotal = 0;
      for (let c = 0; c < 3; c++) {
        let best = -Infinity;
        for (let la = -6; la <= 6; la += 0.25)
          for (let lb = -6; lb <= 6; lb += 0.25)
            best = Math.max(best, referenceEvidence(fm, oneHot(labels, c), Math.exp(la), Math.exp(lb)));
        gridTotal += best;
      }
      const grid = gridTotal / 3;
      // The fixed point is a maximum: no grid point beats it, and the grid's best is close.
      expect(logme(f, labels)).toBeGreaterThanOrEqual(grid - 1e-9);
      expect(logme(f, labels) - grid).toBeLessThan(1e-2);
    }
  });

  it('computes the evidence from the spectrum as the direct formula does, tall or wide', () => {
    for (const f of [separable, randomFeatures(6, 10, 9)]) {
      const fm = toMatrix(f);
      const y = oneHot(labels.slice(0, f.rows), 1);
      // s and z from ml-matrix's SVD, independently of measures.ts's eigen-decomposition.
      const svd = new SingularValueDecomposition(fm, { autoTranspose: true });
      const s: number[] = [];
      const z: number[] = [];
      svd.diagonal.forEach((sigma, i) => {
        if (sigma <= svd.diagonal[0]! * 1e-8) return;
        s.push(sigma * sigma);
        z.push(svd.leftSingularVectors.getColumnVector(i).transpose().mmul(y).get(0, 0));
      });
      for (const [alpha, beta] of [
        [0.7, 2.5],
        [3, 0.05],
      ] as const) {
        const fromSpectrum = logEvidence(alpha, beta, { s, z, yy: y.norm() ** 2, n: f.rows, d: f.cols });
        expect(fromSpectrum).toBeCloseTo(referenceEvidence(fm, y, alpha, beta), 9);
      }
    }
  });

  it('gives the noise-only evidence for all-zero features (a dead layer), not NaN', () => {
    const dead = features(rows, 5, new Float64Array(rows * 5));
    // m = 0, so the best β is n/‖y‖² for each class column (20 ones of 60).
    const beta = rows / 20;
    const expected = 0.5 * Math.log(beta) - 0.5 * Math.log(2 * Math.PI) - (beta * 20) / (2 * rows);
    expect(logme(dead, labels)).toBeCloseTo(expected, 9);
  });

  it('gives a finite value when there are more features than examples', () => {
    const wide = randomFeatures(6, 10, 10);
    expect(Number.isFinite(logme(wide, [0, 1, 0, 1, 0, 1]))).toBe(true);
  });
});

describe('spearman', () => {
  it('is ±1 for monotone relations and Pearson on mean ranks with ties', () => {
    expect(spearman([1, 2, 3, 4], [10, 20, 35, 400])).toBeCloseTo(1, 12);
    expect(spearman([1, 2, 3, 4], [4, 3, 2, 1])).toBeCloseTo(-1, 12);
    // ranks a = 1, 2.5, 2.5, 4; b = 1, 2, 3, 4: Pearson = 4.5 / sqrt(4.5 · 5)
    expect(spearman([1, 5, 5, 9], [1, 2, 3, 4])).toBeCloseTo(4.5 / Math.sqrt(4.5 * 5), 12);
    expect(spearman([1, 2], [1, 2])).toBeNaN();
    expect(spearman([1, 1, 1], [1, 2, 3])).toBeNaN();
  });
});
