/**
 * A sweep's cost before it runs (`transferlab sweep plan`): seconds per cell from measured
 * throughput, compute-hours, and the wall time at a concurrency limit by list scheduling over the
 * cells' dependencies, as the controller starts them (in plan order, each as soon as its
 * dependencies succeeded and a slot is free). Pure: the throughput comes in, measured elsewhere
 * (runner/calibrate.ts).
 *
 * What a cell costs, as the runner spends it:
 * - training: epochs x (training images x seconds per image at its frozen depth + a validation
 *   pass over the val images + a checkpoint);
 * - a fixed cost per cell: its steps load or build nets and write `initial`, `final` and the result;
 * - evaluation: one pass over the test images;
 * - a measure cell: three nets' forward passes over its examples.
 * A frozen cell (BnB, AnB, RnB at n) does no backward pass through its first n layers; its step
 * costs the forward pass plus the full step's backward share of the trainable layers' FLOPs
 * (docs/performance.md says why this rather than one calibration per depth).
 */
import type { Cell, Half } from './cells.ts';

export interface Throughput {
  /** A full training step (every layer trainable), data pipeline included: images per second. */
  trainImagesPerSecond: number;
  /** The net's forward pass alone at the training batch size: images per second. */
  forwardImagesPerSecond: number;
  /** The data pipeline alone (batching, augmentation): images per second; Infinity when free. */
  pipelineImagesPerSecond: number;
  /** The evaluation pass (batch 256, no gradients): images per second. */
  evalImagesPerSecond: number;
  /** Each learned layer's share of the net's multiply-adds, conv1..fc8; sums to 1. */
  layerFlopShare: readonly number[];
  /** Building or loading a net and storing it once: seconds. A cell's three steps do it about three times. */
  netSeconds: number;
  /** Writing one training checkpoint (weights and optimizer state): seconds. */
  checkpointSeconds: number;
}

/** Images of one half of a split. */
export interface HalfSizes {
  train: number;
  val: number;
  test: number;
}

export interface CostInputs {
  cells: readonly Cell[];
  /** The images of each split's halves, by split id. */
  sizes: ReadonlyMap<string, Readonly<Record<Half, HalfSizes>>>;
  throughput: Throughput;
  /** Ids of cells already finished in the store: the controller reuses them, at no cost. */
  reused?: ReadonlySet<string>;
  /** Cells that may run at once: the local worker count, or a cluster's maxTrainers. */
  concurrency: number;
  /** Preparing the splits that are not in the store yet: seconds, before any cell starts. */
  splitSeconds?: number;
  /** Images a measure cell reads (the spec's measures.examples). */
  measureExamples?: number;
}

export interface CellCost {
  cell: Cell;
  reused: boolean;
  /** Frozen layers the step does not backpropagate through. */
  frozen: number;
  trainSeconds: number;
  evalSeconds: number;
  fixedSeconds: number;
  /** All of the above; 0 for a reused cell. */
  seconds: number;
}

export interface SweepCost {
  cells: CellCost[];
  /** The cells' seconds summed (worker-seconds), the splits' preparation included. */
  computeSeconds: number;
  /** Splits, then the cells at the concurrency limit in dependency order. */
  wallSeconds: number;
  splitSeconds: number;
  concurrency: number;
}

const perImage = (imagesPerSecond: number): number =>
  Number.isFinite(imagesPerSecond) && imagesPerSecond > 0 ? 1 / imagesPerSecond : 0;

/** How many of the first layers a cell trains without gradients: n for a frozen copy or random filters. */
export function frozenLayers(cell: Pick<Cell, 'mode' | 'n'>): number {
  return cell.mode === 'frozen' && cell.n !== undefined ? cell.n : 0;
}

/**
 * Whether a cell can train from its frozen prefix's cached outputs, by the spec alone: a frozen
 * prefix, no random augmentation (none, or `views: fixed`), and more epochs than views (building
 * the cache runs the prefix once per view of every image; training from images runs it once per
 * epoch). The trainer (runner/cell-data.ts planPrefixCache) adds what only the net and the data
 * can tell: a cacheable cut and the memory budget.
 */
export function prefixCacheRule(cell: Pick<Cell, 'training' | 'mode' | 'n'>): { views: number } | { reason: string } {
  if (frozenLayers(cell) === 0) return { reason: 'no frozen layers to cache' };
  const { augment } = cell.training;
  const identity = augment === false || (augment.crop === 0 && !augment.mirror);
  if (!identity && augment.views !== 'fixed')
    return { reason: 'random augmentation (augment.views: fixed would cache)' };
  // The fixed views: the padded image's 4 corners and centre (1 without a crop), each mirrored too when mirror is on.
  const views = identity ? 1 : (augment.crop > 0 ? 5 : 1) * (augment.mirror ? 2 : 1);
  if (views >= cell.training.maxEpochs)
    return {
      reason: `${views} prefix pass(es) per image to build the cache, ${cell.training.maxEpochs} epoch(s) to train`,
    };
  return { views };
}

/**
 * A training step per image, in parts: the input pipeline, the forward pass, the backward part
 * (the full step less those two), and the FLOP share of the first `frozen` layers.
 */
function stepParts(
  throughput: Throughput,
  frozen: number,
): { pipeline: number; forward: number; backward: number; frozenShare: number } {
  const full = perImage(throughput.trainImagesPerSecond);
  const pipeline = perImage(throughput.pipelineImagesPerSecond);
  const forward = perImage(throughput.forwardImagesPerSecond);
  const backward = Math.max(0, full - pipeline - forward);
  const frozenShare = throughput.layerFlopShare.slice(0, frozen).reduce((sum, share) => sum + share, 0);
  return { pipeline, forward, backward, frozenShare };
}

/**
 * Seconds per training image with the first `frozen` layers frozen: the pipeline, the forward
 * pass, and the full step's backward part scaled by the trainable layers' share of the FLOPs.
 */
export function trainSecondsPerImage(throughput: Throughput, frozen: number): number {
  const { pipeline, forward, backward, frozenShare } = stepParts(throughput, frozen);
  return pipeline + forward + backward * Math.max(0, 1 - frozenShare);
}

export function cellCost(
  cell: Cell,
  sizes: HalfSizes,
  throughput: Throughput,
  options: { measureExamples?: number } = {},
): Omit<CellCost, 'reused'> {
  const evalPerImage = perImage(throughput.evalImagesPerSecond);
  if (cell.kind === 'measure') {
    // Three nets (baseA, baseB, baseB2) over the examples; CKA and LogME are small next to it.
    const examples = Math.min(options.measureExamples ?? 500, sizes.test);
    const evalSeconds = 3 * examples * evalPerImage;
    const fixedSeconds = 3 * throughput.netSeconds;
    return { cell, frozen: 0, trainSeconds: 0, evalSeconds, fixedSeconds, seconds: evalSeconds + fixedSeconds };
  }
  const frozen = frozenLayers(cell);
  const epochs = cell.training.maxEpochs;
  const cache = prefixCacheRule(cell);
  let trainSeconds: number;
  let evalSeconds: number;
  if ('views' in cache) {
    // From the cache: the prefix runs once per view of every image (and once per val image);
    // then each epoch runs only the layers above it, forward and backward, and so does validation.
    const { forward, backward, frozenShare } = stepParts(throughput, frozen);
    const build = (cache.views * sizes.train + sizes.val) * forward * frozenShare;
    trainSeconds = build + epochs * sizes.train * (forward + backward) * (1 - frozenShare);
    evalSeconds = (epochs * sizes.val * (1 - frozenShare) + sizes.test) * evalPerImage;
  } else {
    trainSeconds = epochs * sizes.train * trainSecondsPerImage(throughput, frozen);
    // Validation after every epoch, the test pass at the end.
    evalSeconds = (epochs * sizes.val + sizes.test) * evalPerImage;
  }
  // transplant (or build), train (load, final net), evaluate (load): a net each; a checkpoint per epoch.
  const fixedSeconds = 3 * throughput.netSeconds + epochs * throughput.checkpointSeconds;
  return { cell, frozen, trainSeconds, evalSeconds, fixedSeconds, seconds: trainSeconds + evalSeconds + fixedSeconds };
}

/** Costs every cell and schedules them: compute-hours and wall time at the concurrency limit. */
export function sweepCost(inputs: CostInputs): SweepCost {
  const splitSeconds = inputs.splitSeconds ?? 0;
  const cells = inputs.cells.map((cell): CellCost => {
    const half = inputs.sizes.get(cell.splitId)?.[cell.target];
    if (!half) throw new Error(`no image counts for split ${cell.splitId} (cell ${cell.name})`);
    const reused = inputs.reused?.has(cell.id) ?? false;
    const cost = cellCost(cell, half, inputs.throughput, { measureExamples: inputs.measureExamples });
    return reused
      ? { ...cost, reused, trainSeconds: 0, evalSeconds: 0, fixedSeconds: 0, seconds: 0 }
      : { ...cost, reused };
  });
  const computeSeconds = splitSeconds + cells.reduce((sum, cost) => sum + cost.seconds, 0);
  const wallSeconds = splitSeconds + scheduleWall(cells, inputs.concurrency);
  return { cells, computeSeconds, wallSeconds, splitSeconds, concurrency: inputs.concurrency };
}

/**
 * The makespan of the cells under `concurrency` slots: at each moment, every cell whose
 * dependencies have finished starts, in plan order, while a slot is free (what the controller
 * does); a reused cell finishes at once without a slot.
 */
export function scheduleWall(cells: readonly CellCost[], concurrency: number): number {
  if (!(concurrency >= 1)) throw new Error(`concurrency must be >= 1, got ${concurrency}`);
  const finishedAt = new Map<string, number>();
  const known = new Set(cells.map((cost) => cost.cell.id));
  const waiting = [...cells];
  const running: Array<{ id: string; end: number }> = [];
  let now = 0;
  while (waiting.length > 0 || running.length > 0) {
    let started = false;
    for (let i = 0; i < waiting.length; i++) {
      const cost = waiting[i]!;
      const depsDone = cost.cell.deps.every((dep) => !known.has(dep) || (finishedAt.get(dep) ?? Infinity) <= now);
      if (!depsDone) continue;
      if (cost.reused || cost.seconds === 0) {
        finishedAt.set(cost.cell.id, now);
      } else if (running.length < concurrency) {
        running.push({ id: cost.cell.id, end: now + cost.seconds });
      } else {
        continue;
      }
      waiting.splice(i, 1);
      i -= 1;
      started = true;
    }
    if (started) continue;
    if (running.length === 0) throw new Error('the cells have a dependency that no cell satisfies');
    running.sort((a, b) => a.end - b.end);
    const next = running.shift()!;
    now = next.end;
    finishedAt.set(next.id, now);
  }
  return now;
}

/**
 * Image counts of the datasets whose sizes are fixed (per class: training, test), for a plan
 * made before a split exists. An image folder or IDX files of one's own have no entry: their
 * plan needs the split in the store (one `transferlab run` prepares it first).
 */
export const KNOWN_DATASETS: Readonly<
  Record<string, { shape: [number, number, number]; classes: number; trainPerClass: number; testPerClass: number }>
> = {
  mnist: { shape: [28, 28, 1], classes: 10, trainPerClass: 6000, testPerClass: 1000 },
  'fashion-mnist': { shape: [28, 28, 1], classes: 10, trainPerClass: 6000, testPerClass: 1000 },
  cifar10: { shape: [32, 32, 3], classes: 10, trainPerClass: 5000, testPerClass: 1000 },
  'cifar10-jpg': { shape: [32, 32, 3], classes: 10, trainPerClass: 5000, testPerClass: 1000 },
  cifar100: { shape: [32, 32, 3], classes: 100, trainPerClass: 500, testPerClass: 100 },
  'cifar100-coarse': { shape: [32, 32, 3], classes: 20, trainPerClass: 2500, testPerClass: 500 },
};

/**
 * A half's image counts from a known dataset and the split's caps, as prepare-split carves
 * them: validation from the training images, per class; test capped per class. Halves get
 * floor(classes / 2) and the rest.
 */
export function halfSizesOf(
  dataset: { classes: number; trainPerClass: number; testPerClass: number },
  split: { trainPerClass?: number | undefined; valPerClass: number; testPerClass?: number | undefined },
): Record<Half, HalfSizes> {
  const val = Math.min(split.valPerClass, dataset.trainPerClass);
  const train = Math.min(split.trainPerClass ?? Infinity, dataset.trainPerClass - val);
  const test = Math.min(split.testPerClass ?? Infinity, dataset.testPerClass);
  const a = Math.floor(dataset.classes / 2);
  const sizes = (classes: number): HalfSizes => ({ train: classes * train, val: classes * val, test: classes * test });
  return { A: sizes(a), B: sizes(dataset.classes - a) };
}
