import * as tf from '@tensorflow/tfjs-core';
import {
  type Cell,
  type Features,
  type LayerMeasure,
  MinibatchCka,
  features,
  linearCka,
  logme,
} from '@transferlab/experiment';
import { LEARNED_LAYERS, type LayerActivations, layerActivations, loadModel, selectBackend } from '@transferlab/nn';
import type { ObjectStore } from '@transferlab/platform';
import { loadSubsets } from './cell-data.ts';
import { cellKeys, putJson } from './cell-store.ts';
import { type StoredResult, readResult } from './evaluate-cell.ts';

/** conv1..fc7: fc8 is each half's own classifier, with no counterpart in the other half. */
const MEASURED_LAYERS = LEARNED_LAYERS.slice(0, 7);

function asFeatures(activations: LayerActivations, from: number, to: number): Features {
  const { features: width, data } = activations;
  return features(to - from, width, data.subarray(from * width, to * width));
}

function cka(x: LayerActivations, y: LayerActivations, examples: number, batch: number): number {
  if (examples <= batch) return linearCka(asFeatures(x, 0, examples), asFeatures(y, 0, examples));
  const minibatch = new MinibatchCka();
  // A trailing batch of fewer than 4 images has no unbiased HSIC; it is left out.
  for (let from = 0; from + 4 <= examples; from += batch) {
    const to = Math.min(examples, from + batch);
    minibatch.add(asFeatures(x, from, to), asFeatures(y, from, to));
  }
  return minibatch.value();
}

/**
 * A measure cell's work: runs its three base nets (source, target, target replica) on the
 * first `examples` of the target half's test images, and for each of conv1..fc7 computes
 * linear CKA (source vs target, and target vs replica as the ceiling) and LogME of the source's
 * and the target's features on the target's labels. Writes the cell's result last.
 */
export async function measureCell(store: ObjectStore, cell: Cell): Promise<StoredResult> {
  const task = cell.measure;
  if (cell.kind !== 'measure' || !task) throw new Error(`cell ${cell.name} (${cell.id}) is not a measure cell`);
  const started = Date.now();
  const nets = { source: task.sourceCellId, target: task.targetCellId, replica: task.replicaCellId };
  for (const [role, id] of Object.entries(nets)) {
    if (!(await readResult(store, id)))
      throw new Error(
        `measure cell ${cell.name}: its ${role} base net ${id} has not finished (${store.describe(cellKeys.result(id))} is absent)`,
      );
  }
  const backend = await selectBackend();
  const [testSet] = await loadSubsets(store, cell, ['test']);
  const examples = Math.min(task.examples, testSet!.count);
  if (examples < 4) throw new Error(`measure cell ${cell.name}: ${examples} test images; the measures need at least 4`);
  const pixelsPerImage = testSet!.pixels.length / testSet!.count;
  const images = testSet!.pixels.subarray(0, examples * pixelsPerImage);
  const labels = testSet!.labels.subarray(0, examples);

  const activations = async (id: string): Promise<LayerActivations[]> => {
    const model = await loadModel(store, cellKeys.final(id));
    try {
      return layerActivations(
        model,
        { images, count: examples },
        { layers: MEASURED_LAYERS, maxFeatures: task.maxFeatures },
      );
    } finally {
      model.dispose();
      tf.disposeVariables();
    }
  };
  const source = await activations(nets.source);
  const target = await activations(nets.target);
  const replica = await activations(nets.replica);

  const measures: LayerMeasure[] = MEASURED_LAYERS.map((layer, i) => ({
    n: i + 1,
    layer,
    ckaSourceTarget: cka(source[i]!, target[i]!, examples, task.batch),
    ckaTargetReplica: cka(target[i]!, replica[i]!, examples, task.batch),
    logmeSource: logme(asFeatures(source[i]!, 0, examples), labels, testSet!.classes.length),
    logmeTarget: logme(asFeatures(target[i]!, 0, examples), labels, testSet!.classes.length),
    features: source[i]!.features,
    examples,
    ckaMethod: examples <= task.batch ? 'full' : 'minibatch',
  }));
  const result: StoredResult = {
    cellId: cell.id,
    name: cell.name,
    arm: cell.arm,
    kind: cell.kind,
    seed: cell.seed,
    target: cell.target,
    // Nothing is trained or tested: the cell's numbers are its measures.
    score: Number.NaN,
    valTop1History: [],
    epochs: 0,
    stoppedBy: 'max-epochs',
    stillImproving: false,
    seconds: (Date.now() - started) / 1000,
    backend: backend.name,
    measures,
  };
  await putJson(store, cellKeys.result(cell.id), result);
  return result;
}
