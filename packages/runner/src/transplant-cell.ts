import type { Cell } from '@transferlab/experiment';
import {
  type NamedWeights,
  buildNet,
  disposeNamedWeights,
  loadCheckpoint,
  namedWeightsFromCheckpoint,
  saveCheckpoint,
  selectBackend,
  transplant,
} from '@transferlab/nn';
import type { ObjectStore } from '@transferlab/platform';
import type * as tfl from '@tensorflow/tfjs-layers';
import { cellGeometry } from './cell-data.ts';
import { cellStreams } from './cell-seeds.ts';
import { cellKeys } from './cell-store.ts';

/** A fresh net for the cell, drawn from the cell's own init and dropout streams. */
export async function freshNet(store: ObjectStore, cell: Cell): Promise<tfl.LayersModel> {
  // Every entry point may be the process's first use of TensorFlow.js.
  await selectBackend();
  const { inputShape, classes } = await cellGeometry(store, cell);
  const streams = cellStreams(cell);
  return buildNet(
    {
      kind: cell.net.kind,
      width: cell.net.width,
      dropout: cell.net.dropout,
      ...(cell.net.lrn === undefined ? {} : { lrn: cell.net.lrn }),
      init: cell.net.init,
    },
    { inputShape, numClasses: classes.length, seed: streams.init, dropoutSeed: streams.dropout },
  );
}

/** Copies the first n layers of `source` into `model` and freezes them or not, as the cell says. */
export function applyTransplant(cell: Cell, source: NamedWeights | null, model: tfl.LayersModel): void {
  if (cell.kind === 'random') {
    transplant(null, model, { n: cell.n ?? 0, mode: 'random' });
    return;
  }
  if (cell.kind === 'control') {
    if (!source) throw new Error(`cell ${cell.name} (${cell.id}) is a control cell without its base net`);
    transplant(source, model, { n: 8, mode: 'fine-tuned', sameTask: true });
    return;
  }
  if (cell.kind !== 'transfer') return;
  if (!cell.sourceCellId || cell.n === undefined || !cell.mode) {
    throw new Error(`cell ${cell.name} (${cell.id}) is a transfer cell without a source cell, n or mode`);
  }
  transplant(source, model, { n: cell.n, mode: cell.mode });
}

async function namedWeightsAt(store: ObjectStore, prefix: string, what: string): Promise<NamedWeights> {
  const checkpoint = await loadCheckpoint(store, prefix);
  if (!checkpoint) throw new Error(`${what}: ${store.describe(prefix)} holds no checkpoint`);
  return namedWeightsFromCheckpoint(checkpoint);
}

/**
 * The transplanter's work: from the source cell's trained net, writes the initial net of a
 * transfer cell (first n layers copied, the rest freshly initialised from the cell's seed), or
 * of a random-filter cell. Idempotent: an existing initial net is left as it is.
 */
export async function transplantCell(store: ObjectStore, cell: Cell): Promise<{ key: string; written: boolean }> {
  const key = cellKeys.initial(cell.id);
  if (cell.kind === 'base')
    throw new Error(`cell ${cell.name} is a base cell: it starts from scratch, nothing to transplant`);
  if (await loadCheckpoint(store, key)) return { key, written: false };
  const model = await freshNet(store, cell);
  try {
    if (cell.kind === 'transfer' || cell.kind === 'control') {
      const source = await namedWeightsAt(
        store,
        cellKeys.final(cell.sourceCellId ?? ''),
        `cell ${cell.name} needs the trained net of its source cell ${cell.sourceCellId}`,
      );
      try {
        applyTransplant(cell, source, model);
      } finally {
        disposeNamedWeights(source);
      }
    } else {
      applyTransplant(cell, null, model);
    }
    await saveCheckpoint(store, key, { model });
    return { key, written: true };
  } finally {
    model.dispose();
  }
}

/** The net a cell's training starts from: fresh for a base cell, its transplanted initial net otherwise. */
export async function initialNet(store: ObjectStore, cell: Cell): Promise<tfl.LayersModel> {
  const model = await freshNet(store, cell);
  if (cell.kind === 'base') return model;
  try {
    // Re-applying the transplant from the initial net restores the frozen flags and checks every
    // tensor's name and shape again; the weights come out the same as the transplanter wrote.
    const initial = await namedWeightsAt(
      store,
      cellKeys.initial(cell.id),
      `cell ${cell.name} has no initial net: run the transplant step first`,
    );
    try {
      applyTransplant(cell, cell.kind === 'random' ? null : initial, model);
    } finally {
      disposeNamedWeights(initial);
    }
    return model;
  } catch (error) {
    model.dispose();
    throw error;
  }
}
