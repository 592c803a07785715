import { EigenvalueDecomposition, Matrix } from 'ml-matrix';

/**
 * Training-free measures of how general a layer is: linear CKA (Kornblith et al., ICML 2019)
 * between two nets' representations of the same images, its minibatch form with unbiased HSIC
 * (Nguyen et al., ICLR 2021) for when the images do not fit in memory at once, and LogME
 * (You et al., ICML 2021), the log maximum evidence of a linear model on frozen features.
 * Pure numeric code: the runner extracts the activations with TensorFlow.js.
 */

/** The cheap measures of one learned layer, as a measure cell stores them. */
export interface LayerMeasure {
  /** 1 = conv1 … 7 = fc7 */
  n: number;
  layer: string;
  /** linear CKA between the source half's base net (baseA) and the target's (baseB) */
  ckaSourceTarget: number;
  /** linear CKA between baseB and baseB2 (another init on the same half): the ceiling */
  ckaTargetReplica: number;
  /** LogME of baseA's layer on the target's labels: the transfer estimate */
  logmeSource: number;
  /** LogME of baseB's own layer on its labels */
  logmeTarget: number;
  /** features per image after pooling */
  features: number;
  examples: number;
  ckaMethod: 'full' | 'minibatch';
}

/** Examples in rows, features in columns, row-major. */
export interface Features {
  rows: number;
  cols: number;
  data: Float64Array;
}

export function features(rows: number, cols: number, data: ArrayLike<number>): Features {
  if (data.length !== rows * cols) throw new Error(`features: ${data.length} values for ${rows}×${cols}`);
  return { rows, cols, data: Float64Array.from(data) };
}

/** The row-by-row inner products X Xᵀ (an n×n Gram matrix of a linear kernel), row-major. */
function gram(x: Features): Float64Array {
  const { rows: n, cols: d, data } = x;
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const rowI = i * d;
    for (let j = i; j < n; j++) {
      const rowJ = j * d;
      let sum = 0;
      for (let k = 0; k < d; k++) sum += data[rowI + k]! * data[rowJ + k]!;
      out[i * n + j] = sum;
      out[j * n + i] = sum;
    }
  }
  return out;
}

/** Each column minus its mean: the linear kernel of the result is H K H. */
function centerColumns(x: Features): Features {
  const { rows, cols, data } = x;
  const means = new Float64Array(cols);
  for (let i = 0; i < rows; i++) for (let k = 0; k < cols; k++) means[k]! += data[i * cols + k]!;
  for (let k = 0; k < cols; k++) means[k]! /= rows;
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let k = 0; k < cols; k++) out[i * cols + k] = data[i * cols + k]! - means[k]!;
  return { rows, cols, data: out };
}

function dot(a: Float64Array, b: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

function checkPair(x: Features, y: Features, what: string): void {
  if (x.rows !== y.rows) throw new Error(`${what}: ${x.rows} and ${y.rows} examples; both must see the same images`);
  if (x.rows < 2) throw new Error(`${what}: needs at least 2 examples, got ${x.rows}`);
}

/**
 * Linear CKA on one set of examples: ⟨HKH, HLH⟩ / (‖HKH‖ ‖HLH‖) with K = XXᵀ, L = YYᵀ.
 * Invariant to orthogonal transforms and isotropic scaling of either side. NaN when a side is
 * constant (no variance to compare).
 */
export function linearCka(x: Features, y: Features): number {
  checkPair(x, y, 'linearCka');
  const k = gram(centerColumns(x));
  const l = gram(centerColumns(y));
  return dot(k, l) / Math.sqrt(dot(k, k) * dot(l, l));
}

/**
 * The unbiased HSIC estimator (Song et al. 2012) of two n×n Gram matrices, n ≥ 4:
 * [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)), K̃ and L̃ with zero diagonals.
 */
export function unbiasedHsic(k: Float64Array, l: Float64Array, n: number): number {
  if (n < 4) throw new Error(`unbiasedHsic: needs at least 4 examples, got ${n}`);
  let trace = 0;
  let sumK = 0;
  let sumL = 0;
  let cross = 0;
  const rowK = new Float64Array(n);
  const rowL = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (i === j) continue;
      const kij = k[i * n + j]!;
      const lij = l[i * n + j]!;
      trace += kij * lij;
      rowK[i]! += kij;
      rowL[i]! += lij;
    }
    sumK += rowK[i]!;
    sumL += rowL[i]!;
  }
  // 1ᵀK̃L̃1 = Σ_j (K̃1)_j (L̃1)_j since both are symmetric.
  for (let i = 0; i < n; i++) cross += rowK[i]! * rowL[i]!;
  return (trace + (sumK * sumL) / ((n - 1) * (n - 2)) - (2 / (n - 2)) * cross) / (n * (n - 3));
}

/**
 * Minibatch linear CKA: the unbiased HSIC of each batch's Gram matrices, averaged over batches,
 * then normalised. Memory is one batch's Gram matrices, whatever the number of images; the
 * estimate does not shrink towards the batch size's bias as a biased per-batch CKA would.
 */
export class MinibatchCka {
  private xy = 0;
  private xx = 0;
  private yy = 0;
  private batches = 0;

  add(x: Features, y: Features): void {
    checkPair(x, y, 'MinibatchCka.add');
    const k = gram(x);
    const l = gram(y);
    this.xy += unbiasedHsic(k, l, x.rows);
    this.xx += unbiasedHsic(k, k, x.rows);
    this.yy += unbiasedHsic(l, l, x.rows);
    this.batches++;
  }

  get count(): number {
    return this.batches;
  }

  value(): number {
    if (this.batches === 0) return Number.NaN;
    return this.xy / Math.sqrt(this.xx * this.yy);
  }
}

/**
 * The spectrum of F that LogME needs: the nonzero eigenvalues s_i of FᵀF (= of FFᵀ) and, per
 * label column y, its coordinates z_i = u_i·y on the left singular vectors.
 */
interface Spectrum {
  s: number[];
  /** left singular vectors u_i as columns of an n×r matrix */
  u: Matrix;
}

function spectrum(f: Features): Spectrum {
  // Decompose the smaller of FᵀF and FFᵀ: the two share their nonzero eigenvalues.
  const wide = f.cols > f.rows;
  const size = wide ? f.rows : f.cols;
  const product = gram(wide ? f : transpose(f));
  const eig = new EigenvalueDecomposition(Matrix.from1DArray(size, size, product), { assumeSymmetric: true });
  const values = eig.realEigenvalues;
  const vectors = eig.eigenvectorMatrix;
  const largest = Math.max(0, ...values);
  const keep = values.map((value, index) => ({ value, index })).filter(({ value }) => value > largest * 1e-10);
  const u = new Matrix(f.rows, keep.length);
  keep.forEach(({ value, index }, column) => {
    if (wide) {
      for (let i = 0; i < f.rows; i++) u.set(i, column, vectors.get(i, index));
      return;
    }
    // u_i = F v_i / σ_i
    const sigma = Math.sqrt(value);
    for (let i = 0; i < f.rows; i++) {
      let sum = 0;
      for (let k = 0; k < f.cols; k++) sum += f.data[i * f.cols + k]! * vectors.get(k, index);
      u.set(i, column, sum / sigma);
    }
  });
  return { s: keep.map(({ value }) => value), u };
}

function transpose(f: Features): Features {
  const out = new Float64Array(f.data.length);
  for (let i = 0; i < f.rows; i++) for (let k = 0; k < f.cols; k++) out[k * f.rows + i] = f.data[i * f.cols + k]!;
  return { rows: f.cols, cols: f.rows, data: out };
}

/**
 * The log evidence per example of the Bayesian linear model y = Fm + ε, m ~ N(0, 1/α),
 * ε ~ N(0, 1/β), from F's spectrum: s (eigenvalues of FᵀF), z (y's coordinates on F's left
 * singular vectors), ‖y‖², n examples and d features.
 */
export function logEvidence(
  alpha: number,
  beta: number,
  parts: { s: readonly number[]; z: readonly number[]; yy: number; n: number; d: number },
): number {
  const { s, z, yy, n, d } = parts;
  let mm = 0;
  let residual = yy;
  let logDet = (d - s.length) * Math.log(alpha);
  for (let i = 0; i < s.length; i++) {
    const denominator = alpha + beta * s[i]!;
    mm += (beta * beta * s[i]! * z[i]! * z[i]!) / (denominator * denominator);
    residual += ((alpha * z[i]!) / denominator) ** 2 - z[i]! * z[i]!;
    logDet += Math.log(denominator);
  }
  const evidence =
    (n / 2) * Math.log(beta) +
    (d / 2) * Math.log(alpha) -
    (n / 2) * Math.log(2 * Math.PI) -
    (beta / 2) * residual -
    (alpha / 2) * mm -
    logDet / 2;
  return evidence / n;
}

/** LogME's fixed-point iteration (MacKay's updates of α and β) for one label column. */
function maximiseEvidence(parts: { s: number[]; z: number[]; yy: number; n: number; d: number }): number {
  const { s, z, yy, n } = parts;
  let alpha = 1;
  let beta = 1;
  for (let iteration = 0; iteration < 100; iteration++) {
    let gamma = 0;
    let mm = 0;
    let residual = yy;
    for (let i = 0; i < s.length; i++) {
      const denominator = alpha + beta * s[i]!;
      gamma += (beta * s[i]!) / denominator;
      mm += (beta * beta * s[i]! * z[i]! * z[i]!) / (denominator * denominator);
      residual += ((alpha * z[i]!) / denominator) ** 2 - z[i]! * z[i]!;
    }
    // Features with no variance (a dead ReLU layer) or no projection of y leave α free: the
    // evidence then does not depend on it, so it stays put instead of collapsing to 0/0.
    const nextAlpha = gamma > 0 && mm > 0 ? gamma / mm : alpha;
    const nextBeta = (n - gamma) / Math.max(residual, 1e-300);
    const change = Math.abs(nextAlpha - alpha) / alpha + Math.abs(nextBeta - beta) / beta;
    alpha = Math.min(nextAlpha, 1e300);
    beta = Math.min(nextBeta, 1e300);
    if (change < 1e-6) break;
  }
  return logEvidence(alpha, beta, parts);
}

/**
 * LogME: for each class, the maximum over α, β of the log evidence of a linear regression from
 * the features to that class's one-hot column, per example, averaged over classes. Higher means
 * the features carry the labels more linearly. Labels are 0-based class indices.
 */
export function logme(f: Features, labels: ArrayLike<number>, classes?: number): number {
  if (labels.length !== f.rows) throw new Error(`logme: ${labels.length} labels for ${f.rows} examples`);
  if (f.rows < 2) throw new Error(`logme: needs at least 2 examples, got ${f.rows}`);
  const classCount = classes ?? Math.max(...Array.from(labels)) + 1;
  const { s, u } = spectrum(f);
  let total = 0;
  for (let c = 0; c < classCount; c++) {
    const z = new Array<number>(s.length).fill(0);
    let yy = 0;
    for (let i = 0; i < f.rows; i++) {
      if (labels[i] !== c) continue;
      yy += 1;
      for (let j = 0; j < s.length; j++) z[j]! += u.get(i, j);
    }
    total += maximiseEvidence({ s, z, yy, n: f.rows, d: f.cols });
  }
  return total / classCount;
}

/** Ranks 1..n, ties sharing their mean rank. */
function ranks(values: readonly number[]): number[] {
  const order = values.map((value, index) => ({ value, index })).sort((a, b) => a.value - b.value);
  const out = new Array<number>(values.length);
  for (let start = 0; start < order.length;) {
    let end = start;
    while (end + 1 < order.length && order[end + 1]!.value === order[start]!.value) end++;
    const rank = (start + end) / 2 + 1;
    for (let i = start; i <= end; i++) out[order[i]!.index] = rank;
    start = end + 1;
  }
  return out;
}

/** Spearman's rank correlation (Pearson's on tie-averaged ranks); NaN below 3 pairs or with a constant side. */
export function spearman(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) throw new Error(`spearman: ${a.length} and ${b.length} values`);
  if (a.length < 3) return Number.NaN;
  const ra = ranks(a);
  const rb = ranks(b);
  const mean = (a.length + 1) / 2;
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < a.length; i++) {
    num += (ra[i]! - mean) * (rb[i]! - mean);
    da += (ra[i]! - mean) ** 2;
    db += (rb[i]! - mean) ** 2;
  }
  return da === 0 || db === 0 ? Number.NaN : num / Math.sqrt(da * db);
}
