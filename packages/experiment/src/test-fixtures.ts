// Shared by the tests: a demo spec and deterministic synthetic results shaped like the paper's.
import type { CellResult } from './aggregate.ts';
import type { Cell, SweepPlan } from './cells.ts';

export const DEMO_YAML = `# the paper's main experiment, scaled down
name: demo-mnist
dataset:
  kind: mnist
split:
  kind: random
  valPerClass: 100
net: { kind: small, width: 0.25, dropout: 0.5 }
training:
  batchSize: 64
  learningRate: 0.01
  maxEpochs: 10
base: { maxEpochs: 30, patience: 3 }
layers: [1, 2, 3, 4, 5, 6, 7]
arms: [baseA, baseB, BnB, BnB+, AnB, AnB+]
repeats: 1
`;

/** The paper's shape: BnB dips in the middle, AnB falls with n, AnB+ sits above baseB. */
export function paperLikeScore(cell: Pick<Cell, 'arm' | 'n' | 'seed'>): number {
  const n = cell.n ?? 0;
  const jitter = ((cell.seed * 7 + n * 3) % 5) * 0.002;
  const base = 0.62 + jitter;
  switch (cell.arm) {
    case 'BnB':
    case 'AnA':
      return base - (n >= 3 && n <= 5 ? 0.03 : 0.005);
    case 'AnB':
    case 'BnA':
      return base - 0.01 * n - (n >= 3 && n <= 5 ? 0.02 : 0);
    case 'AnB+':
    case 'BnA+':
      return base + 0.015;
    case 'RnB':
    case 'RnA':
      return base - 0.06 * n;
    default:
      return base;
  }
}

export function syntheticResults(
  plan: SweepPlan,
  options: {
    score?: (cell: Cell) => number;
    skip?: (cell: Cell) => boolean;
    /** the validation history; empty by default, which keeps the arithmetic in tests exact */
    history?: (cell: Cell) => number[];
    epochs?: (cell: Cell) => number;
  } = {},
): CellResult[] {
  const score = options.score ?? paperLikeScore;
  return plan.cells
    .filter((cell) => !(options.skip?.(cell) ?? false))
    .map((cell) => {
      const value = score(cell);
      return {
        cellId: cell.id,
        name: cell.name,
        arm: cell.arm,
        kind: cell.kind,
        ...(cell.n !== undefined ? { n: cell.n } : {}),
        seed: cell.seed,
        target: cell.target,
        score: value,
        valScore: value + 0.01,
        valTop1History: options.history?.(cell) ?? [],
        testTop1: value,
        testTop5: Math.min(1, value + 0.2),
        epochs: options.epochs?.(cell) ?? cell.training.maxEpochs,
        stoppedBy: 'max-epochs',
        stillImproving: false,
        seconds: 60,
        imagesPerSecond: 96,
        backend: 'wasm',
      };
    });
}
